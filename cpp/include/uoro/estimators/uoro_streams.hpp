// UORO over B streams, as the authors' code trains on a batch: the streams are one
// system whose state is the concatenation of theirs. Per rank, s̃ spans every stream's
// state (B·S) and θ̃ is one vector over the cell's parameters; the signs ν are drawn for
// every stream present. The parameter-side products of all streams, Σ_b u_b ⊗ v_b, are
// rank-B products (U Vᵀ, a matrix–matrix product) summed into one pass over θ per tick:
// the gradient of the tick's mean loss, the new θ̃ and the optimizer update.
//
// A stream absent from a tick keeps its state, so its part of the system's transition is
// the identity: its rows of s̃ are only rescaled by ρ0 (their product with θ̃ is kept in
// expectation) and it draws no signs.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "uoro/estimators/uoro.hpp"
#include "uoro/streams.hpp"

namespace uoro {

template <class S, class Cell>
class UoroStreams {
 public:
  UoroStreams(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams)
      : rank_(config.rank), eps_(S(config.uoro_eps)), n_state_(cell.state_size()) {
    s_tilde_ = s_tilde_next_ = Mat<S>::Zero(n_state_ * streams, rank_);
    theta_tilde_ = Mat<S>::Zero(cell.param_size(), rank_);
    theta_tilde_norm2_ = coef_ = inv_rho0_ = inv_rho1_ = norm_acc_ = Vec<S>::Zero(rank_);
    nu_ = Vec<S>::Zero(n_state_ * streams);
    Index scratch = 0;
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Block& b = cell.blocks()[k];
      u_one_[k] = Vec<S>::Zero(b.rows);
      u_c_[k] = Mat<S>::Zero(b.rows, streams);
      v_[k] = Mat<S>::Zero(b.cols, streams);
      chunk_[k] = chunk_columns(b);
      scratch = std::max(scratch, b.rows * chunk_[k]);
    }
    v_max_ = Mat<S>::Zero(Cell::kBlocks, streams);
    u_nu_.resize(rank_);
    for (auto& u : u_nu_)
      for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = Mat<S>::Zero(cell.blocks()[k].rows, streams);
    d_out_ = Mat<S>::Zero(readout.output_size(), streams);
    readout_v_ = Mat<S>::Zero(readout.hidden_size() + 1, streams);
    readout_chunk_ = chunk_columns(readout.block());
    scratch = std::max(scratch, readout.block().rows * readout_chunk_);
    g_ = g_nu_ = Vec<S>::Zero(scratch);
  }

  Refusal update(Streams<S, Cell>& m, S* grad_out, bool update) {
    const Index n = Index(m.present.size());
    const S inv_n = S(1) / S(n);  // the tick's loss is the mean over the streams present
    const auto rng_before = m.rng.state();
    // The factors of every present stream, in columns 0..n-1: the loss cotangent's (its
    // share of the mean), the input factors, the readout's.
    for (Index p = 0; p < n; ++p) {
      Lane<S, Cell>& lane = m.lanes[m.present[p]];
      m.cell.param_cotangents(lane.cache, lane.c, u_one_);
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        u_c_[k].col(p) = inv_n * u_one_[k];
        v_[k].col(p) = lane.cache.v[k];
        v_max_(k, p) = lane.cache.v[k].cwiseAbs().maxCoeff();
      }
      d_out_.col(p) = inv_n * lane.readout.d_out();
      readout_v_.col(p) = lane.readout.v();
    }
    // Bounds on |g| and |new θ̃| of the coming pass (|Σ_p u_p v_pᵀ| <= Σ_p max|u_p| max|v_p|).
    S grad_bound = 0, tilde_bound = 0, memory_bound = 0;
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      S bound = 0;
      for (Index p = 0; p < n; ++p) bound += u_c_[k].col(p).cwiseAbs().maxCoeff() * v_max_(k, p);
      grad_bound = std::max(grad_bound, bound);
    }
    const S nu_norm = std::sqrt(S(n * n_state_));  // ‖ν‖ for ±1 signs on the present streams
    for (Index r = 0; r < rank_; ++r) {
      auto s_next = s_tilde_next_.col(r);
      s_next = s_tilde_.col(r);  // absent streams: the identity
      nu_.setZero();
      S dot = 0, a_norm2 = 0, a_max = 0;
      std::array<S, Cell::kBlocks> a_block{};
      for (Index p = 0; p < n; ++p) {
        const Index b = m.present[p];
        Lane<S, Cell>& lane = m.lanes[b];
        auto tangent = s_next.segment(b * n_state_, n_state_);
        m.cell.jvp_state(m.theta.data(), lane.cache, s_tilde_.col(r).segment(b * n_state_, n_state_),
                         tangent);
        dot += lane.c.dot(tangent);
        auto nu = nu_.segment(b * n_state_, n_state_);
        m.rng.fill_signs(nu);
        m.cell.param_cotangents(lane.cache, nu, u_one_);
        for (Index k = 0; k < Cell::kBlocks; ++k) {
          u_nu_[r][k].col(p) = u_one_[k];
          // ‖νᵀ ∂F/∂θ‖² taken as Σ_b ‖u_b‖² ‖v_b‖²: its expectation (the streams' signs are
          // independent), exact for one stream, and even in ν as ρ1 must be.
          a_norm2 += u_one_[k].squaredNorm() * v_[k].col(p).squaredNorm();
          a_block[k] += u_one_[k].cwiseAbs().maxCoeff() * v_max_(k, p);
        }
      }
      for (Index k = 0; k < Cell::kBlocks; ++k) a_max = std::max(a_max, a_block[k]);
      coef_(r) = dot * inv_n / S(rank_);
      const S tt_norm = std::sqrt(theta_tilde_norm2_(r));
      const S rho0 = std::sqrt(tt_norm / (s_next.norm() + eps_)) + eps_;
      const S rho1 = std::sqrt(std::sqrt(a_norm2) / (nu_norm + eps_)) + eps_;
      s_next = rho0 * s_next + rho1 * nu_;
      inv_rho0_(r) = S(1) / rho0;
      inv_rho1_(r) = S(1) / rho1;
      grad_bound += std::abs(coef_(r)) * tt_norm;
      memory_bound += std::abs(coef_(r)) * tt_norm;
      tilde_bound = std::max(tilde_bound, tt_norm * inv_rho0_(r) + a_max * inv_rho1_(r));
    }
    const S update_bound = S(m.optimizer.learning_rate() * double(grad_bound));
    Refusal refusal;
    if (!bounded(s_tilde_next_) || !bounded(tilde_bound) || !bounded(memory_bound))
      refusal = {Refusal::Sensitivity, kUoroSensitivity,
                 std::max({max_abs(s_tilde_next_), double(tilde_bound), double(memory_bound)})};
    else if (!bounded(grad_bound))
      refusal = {Refusal::Gradient, "gradient estimate", double(grad_bound)};
    else if (!bounded(update_bound))
      refusal = {Refusal::Gradient, "parameter update", double(update_bound)};
    if (refusal) {
      m.rng.set_state(rng_before);
      return refusal;
    }
    if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m, n) : 0.0);
    if (m.optimizer.is_adam())
      pass<true>(m, n, grad_out, update);
    else
      pass<false>(m, n, grad_out, update);
    if (update) m.optimizer.end();
    std::swap(s_tilde_, s_tilde_next_);
    return {};
  }

  void forget() {
    s_tilde_.setZero();
    theta_tilde_.setZero();
    theta_tilde_norm2_.setZero();
  }
  // The sensitivity of a constant state is zero: stream b's rows of s̃.
  void forget_stream(Index b) { s_tilde_.middleRows(b * n_state_, n_state_).setZero(); }

  // s̃ holds stream b's rows at b·S of each rank's column.
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("s_tilde", s_tilde_);
    fn("theta_tilde", theta_tilde_);
    fn("theta_tilde_norm2", theta_tilde_norm2_);
  }
  void arrays_written(bool all) {
    if (!all)
      for (Index r = 0; r < rank_; ++r) theta_tilde_norm2_(r) = theta_tilde_.col(r).squaredNorm();
  }
  Window<S, Cell>* window(Index) { return nullptr; }

 private:
  // Columns per chunk of the pass: up to 16384 values, so the scratch stays in cache.
  static Index chunk_columns(const Block& b) { return std::min(b.cols, std::max<Index>(1, 16384 / b.rows)); }

  // g_ (rows × cols, column-major) = Σ_p u_p ⊗ v_p[j0 : j0 + cols] over the n present
  // streams: one matrix–matrix product.
  static void outer_sum(const Mat<S>& u, const Mat<S>& v, Index n, Index j0, Index cols, S* out) {
    MatMap<S>(out, u.rows(), cols).noalias() = u.leftCols(n) * v.block(j0, 0, cols, n).transpose();
  }

  template <class Fn>
  void for_each_chunk(Fn&& fn) {
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Index cols = v_[k].rows(), rows = u_c_[k].rows();
      for (Index j0 = 0; j0 < cols; j0 += chunk_[k]) fn(k, j0, std::min(chunk_[k], cols - j0), rows);
    }
  }

  // ‖g‖ of the coming step, for clipping: one read-only pass before the one that writes.
  double gradient_norm(Streams<S, Cell>& m, Index n) {
    double total = 0;
    for_each_chunk([&](Index k, Index j0, Index cols, Index rows) {
      const Index off = m.cell.blocks()[k].offset + j0 * rows, len = rows * cols;
      outer_sum(u_c_[k], v_[k], n, j0, cols, g_.data());
      for (Index r = 0; r < rank_; ++r) g_.head(len) += coef_(r) * theta_tilde_.col(r).segment(off, len);
      total += double(g_.head(len).squaredNorm());
    });
    if (m.config.train_readout)
      for (Index j0 = 0; j0 < readout_v_.rows(); j0 += readout_chunk_) {
        const Index cols = std::min(readout_chunk_, readout_v_.rows() - j0);
        outer_sum(d_out_, readout_v_, n, j0, cols, g_.data());
        total += double(g_.head(d_out_.rows() * cols).squaredNorm());
      }
    return std::sqrt(total);
  }

  // Per chunk of columns: g = Σ_p u_c,p ⊗ v_p + Σ_r coef_r θ̃_r (from the old θ̃),
  // θ̃_r ← θ̃_r / ρ0 + (Σ_p u_ν,p ⊗ v_p) / ρ1, θ ← optimizer(θ, g); then the readout.
  template <bool kAdam>
  void pass(Streams<S, Cell>& m, Index n, S* grad_out, bool update) {
    norm_acc_.setZero();
    S* __restrict g = g_.data();
    const S* __restrict g_nu = g_nu_.data();
    for_each_chunk([&](Index k, Index j0, Index cols, Index rows) {
      const Index off = m.cell.blocks()[k].offset + j0 * rows, len = rows * cols;
      outer_sum(u_c_[k], v_[k], n, j0, cols, g);
      for (Index r = 0; r < rank_; ++r) {
        outer_sum(u_nu_[r][k], v_[k], n, j0, cols, g_nu_.data());
        S* __restrict tt = theta_tilde_.col(r).data() + off;
        const S coef = coef_(r), inv_rho0 = inv_rho0_(r), inv_rho1 = inv_rho1_(r);
        for (Index i = 0; i < len; ++i) {
          g[i] += coef * tt[i];
          tt[i] = tt[i] * inv_rho0 + g_nu[i] * inv_rho1;
        }
        norm_acc_(r) += Eigen::Map<const Vec<S>>(tt, len).squaredNorm();
      }
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
    });
    theta_tilde_norm2_ = norm_acc_;
    const Index out_rows = d_out_.rows(), readout_offset = m.theta.size() - out_rows * readout_v_.rows();
    for (Index j0 = 0; j0 < readout_v_.rows(); j0 += readout_chunk_) {
      const Index cols = std::min(readout_chunk_, readout_v_.rows() - j0);
      const Index off = readout_offset + j0 * out_rows, len = out_rows * cols;
      outer_sum(d_out_, readout_v_, n, j0, cols, g);
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update && m.config.train_readout) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
    }
  }

  Index rank_;
  S eps_;
  Index n_state_;
  Mat<S> s_tilde_, s_tilde_next_;  // (B·S, rank)
  Mat<S> theta_tilde_;             // (P_cell, rank)
  Vec<S> theta_tilde_norm2_, coef_, inv_rho0_, inv_rho1_, norm_acc_, nu_;
  std::array<Vec<S>, Cell::kBlocks> u_one_;    // one stream's cotangent factors
  std::array<Mat<S>, Cell::kBlocks> u_c_, v_;  // per block: (rows, B), (cols, B)
  std::vector<std::array<Mat<S>, Cell::kBlocks>> u_nu_;
  std::array<Index, Cell::kBlocks> chunk_{};
  Mat<S> v_max_;              // (blocks, B)
  Mat<S> d_out_, readout_v_;  // (O, B), (n + 1, B)
  Index readout_chunk_;
  Vec<S> g_, g_nu_;  // one chunk of the pass
};

}  // namespace uoro
