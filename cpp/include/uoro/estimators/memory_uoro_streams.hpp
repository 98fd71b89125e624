// Memory-T UORO over B streams: one window of steps per stream, exact backpropagation
// inside the windows, and across windows the streams as one system, as in
// uoro_streams.hpp: s̃ spans every stream's state (S, B) per rank, θ̃ is one vector over
// the cell's parameters per rank, and the parameter-side term is the sum of the streams'
// backpropagated signs.
//
// A window closes when a stream has T steps in it: every T ticks when all streams are
// present; with a mask, streams that missed ticks close it with fewer steps (a stream
// without any step in it keeps its state: the identity, no signs drawn). Each stored
// step carries its tick's weight 1/n (n streams present), so the window's gradient is
// that of the sum over its ticks of the tick's mean loss.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "uoro/estimators/uoro.hpp"
#include "uoro/estimators/window.hpp"
#include "uoro/streams.hpp"

namespace uoro {

template <class S, class Cell>
class MemoryUoroStreams {
 public:
  MemoryUoroStreams(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams)
      : rank_(config.rank), eps_(S(config.uoro_eps)), streams_(streams) {
    windows_.reserve(streams);
    for (Index b = 0; b < streams; ++b) windows_.emplace_back(cell, readout, config.memory);
    const Index n_state = cell.state_size(), n_cell = cell.param_size();
    s_tilde_ = s_tilde_next_ = Mat<S>::Zero(n_state, rank_ * streams);
    theta_tilde_ = theta_tilde_next_ = Mat<S>::Zero(n_cell, rank_);
    theta_tilde_norm2_ = Vec<S>::Zero(rank_);
    nu_ = Mat<S>::Zero(n_state, streams);
    tangent_ = tangent_next_ = Vec<S>::Zero(n_state);
    a_ = Vec<S>::Zero(n_cell);
    grad_ = Vec<S>::Zero(n_cell + readout.block().size());
  }

  Refusal update(Streams<S, Cell>& m, S* grad_out, bool update) {
    const S inv_n = S(1) / S(m.present.size());
    bool closes = false;
    for (Index b : m.present) {
      auto model = m.model(b);
      Window<S, Cell>& w = windows_[b];
      w.store(model, /*every_step=*/false);
      w.step(0).c *= inv_n;  // this tick's share of the mean loss
      w.step(0).d_out *= inv_n;
      closes = closes || w.counters()[2] >= w.length();
    }
    if (!closes) {
      if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()).setZero();
      return {};
    }
    const auto rng_before = m.rng.state();
    Refusal refusal;
    try {  // a user cell's functions may throw: the windows are restored then too
      refusal = close(m);
    } catch (...) {
      for (Index b : m.present) windows_[b].rollback();
      m.rng.set_state(rng_before);
      throw;
    }
    if (refusal) {
      for (Index b : m.present) windows_[b].rollback();
      m.rng.set_state(rng_before);
      return refusal;
    }
    std::swap(s_tilde_, s_tilde_next_);
    std::swap(theta_tilde_, theta_tilde_next_);
    refresh_norms();
    for (auto& w : windows_) w.forget();
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()) = grad_;
    if (update) {
      auto model = m.model(m.present[0]);
      apply_gradient(model, grad_);
    }
    return {};
  }

  void forget() {
    for (auto& w : windows_) w.forget();
    s_tilde_.setZero();
    theta_tilde_.setZero();
    theta_tilde_norm2_.setZero();
  }
  // Stream b's state is constant now: its columns of s̃ are zero, its window is dropped.
  void forget_stream(Index b) {
    windows_[b].forget();
    for (Index r = 0; r < rank_; ++r) s_tilde_.col(r * streams_ + b).setZero();
  }

  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("s_tilde", s_tilde_);
    fn("theta_tilde", theta_tilde_);
    fn("theta_tilde_norm2", theta_tilde_norm2_);
  }
  void arrays_written(bool all) {
    if (!all) refresh_norms();
  }
  Window<S, Cell>* window(Index b) { return &windows_[b]; }

 private:
  Index steps_in(Index b) const { return windows_[b].counters()[1]; }

  // At a window's close: the in-window gradients of every stream, the rank-one term from
  // the old (s̃, θ̃), and the proposed new pair (in the *_next_ arrays).
  Refusal close(Streams<S, Cell>& m) {
    const Index n_state = m.c.rows(), n_cell = theta_tilde_.rows();
    grad_.setZero();
    Index with_steps = 0;
    auto model = m.model(m.present[0]);  // the cell and θ; the activations come from the windows
    for (Index b = 0; b < streams_; ++b) {
      const Index len = steps_in(b);
      if (!len) continue;
      ++with_steps;
      Window<S, Cell>& w = windows_[b];
      for (Index i = 0; i < len; ++i)
        add_readout_gradient(m.readout, w.step(i).d_out, w.step(i).readout_v, grad_.data());
      w.delta().setZero();
      w.backprop(model, len, /*losses=*/true, grad_.data());  // w.delta(): on the entering state
    }
    // Gradient first, from the old θ̃: g += Σ_r (Σ_b δ_b · s̃_{b,r} / r) θ̃_r.
    for (Index r = 0; r < rank_; ++r) {
      S coef = 0;
      for (Index b = 0; b < streams_; ++b)
        if (steps_in(b)) coef += windows_[b].delta().dot(s_tilde_.col(r * streams_ + b));
      grad_.head(n_cell) += (coef / S(rank_)) * theta_tilde_.col(r);
    }
    const S nu_norm = std::sqrt(S(with_steps * n_state));
    for (Index r = 0; r < rank_; ++r) {
      a_.setZero();
      S tangent_norm2 = 0;
      for (Index b = 0; b < streams_; ++b) {
        const Index len = steps_in(b), column = r * streams_ + b;
        Window<S, Cell>& w = windows_[b];
        // Tangent forward propagation through the stream's window, oldest step first.
        tangent_ = s_tilde_.col(column);
        for (Index i = len - 1; i >= 0; --i) {
          m.cell.jvp_state(m.theta.data(), w.step(i).cache, tangent_, tangent_next_);
          std::swap(tangent_, tangent_next_);
        }
        tangent_norm2 += tangent_.squaredNorm();
        s_tilde_next_.col(column) = tangent_;
        if (!len) continue;
        // a += ν_bᵀ ∂(window)/∂θ: the signs backpropagated from the window's last state.
        auto nu = nu_.col(b);
        m.rng.fill_signs(nu);
        w.delta() = nu;
        w.backprop(model, len, /*losses=*/false, a_.data());
      }
      const S rho0 = std::sqrt(std::sqrt(theta_tilde_norm2_(r)) / (std::sqrt(tangent_norm2) + eps_)) + eps_;
      const S rho1 = std::sqrt(a_.norm() / (nu_norm + eps_)) + eps_;
      for (Index b = 0; b < streams_; ++b) {
        auto column = s_tilde_next_.col(r * streams_ + b);
        column *= rho0;
        if (steps_in(b)) column += rho1 * nu_.col(b);
      }
      theta_tilde_next_.col(r) = theta_tilde_.col(r) / rho0 + a_ / rho1;
    }
    if (!bounded(s_tilde_next_) || !bounded(theta_tilde_next_))
      return {Refusal::Sensitivity, kUoroSensitivity,
              std::max(max_abs(s_tilde_next_), max_abs(theta_tilde_next_))};
    if (!bounded(grad_)) return {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    return {};
  }

  void refresh_norms() {
    for (Index r = 0; r < rank_; ++r) theta_tilde_norm2_(r) = theta_tilde_.col(r).squaredNorm();
  }

  Index rank_;
  S eps_;
  Index streams_;
  std::vector<Window<S, Cell>> windows_;
  Mat<S> s_tilde_, s_tilde_next_;          // (S, rank·B)
  Mat<S> theta_tilde_, theta_tilde_next_;  // (P_cell, rank)
  Mat<S> nu_;                              // (S, B)
  Vec<S> theta_tilde_norm2_, tangent_, tangent_next_, a_, grad_;
};

}  // namespace uoro
