// Memory-T UORO (Section 3.4): UORO over the transition "T consecutive steps": exact
// backpropagation inside each window of T steps, one update per window, and the past
// before the window through the rank-r pairs (s̃, θ̃) of UORO.
#pragma once

#include <cmath>
#include <utility>

#include "uoro/estimators/uoro.hpp"
#include "uoro/estimators/window.hpp"

namespace uoro {

template <class S, class Cell>
class MemoryUoro {
 public:
  MemoryUoro(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout)
      : window_(cell, readout, config.memory), beyond_(config, cell) {}

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    return window_.update(m, grad_out, update, /*every_step=*/false, beyond_);
  }
  void forget() {
    window_.forget();
    beyond_.forget();
  }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("s_tilde", beyond_.s_tilde);
    fn("theta_tilde", beyond_.theta_tilde);
    fn("theta_tilde_norm2", beyond_.theta_tilde_norm2);
  }
  void arrays_written(bool all) {
    if (!all) beyond_.refresh_norms();
  }
  Window<S, Cell>* window() { return &window_; }

 private:
  // The rank-r UORO pairs across windows.
  struct Beyond {
    Index rank;
    S eps;
    Mat<S> s_tilde, s_tilde_next, theta_tilde, theta_tilde_next;
    Vec<S> theta_tilde_norm2, nu, a, tangent, tangent_next;

    Beyond(const LearnerConfig& config, const Cell& cell) : rank(config.rank), eps(S(config.uoro_eps)) {
      const Index n_state = cell.state_size(), n_cell = cell.param_size();
      s_tilde = s_tilde_next = Mat<S>::Zero(n_state, rank);
      theta_tilde = theta_tilde_next = Mat<S>::Zero(n_cell, rank);
      theta_tilde_norm2 = Vec<S>::Zero(rank);
      nu = tangent = tangent_next = Vec<S>::Zero(n_state);
      a = Vec<S>::Zero(n_cell);
    }

    // At the end of a window, with w.grad() holding the window's exact in-window
    // gradient and w.delta() the cotangent on the state entering the window: adds the
    // rank-one term to the gradient and proposes the new (s̃, θ̃).
    Refusal propose(Model<S, Cell>& m, Window<S, Cell>& w) {
      const Index len = w.length();
      const S nu_norm = std::sqrt(S(m.cell.state_size()));
      Vec<S>& grad = w.grad();
      // Gradient first, from the old θ̃: g += Σ_r (δs · s̃_r / r) θ̃_r.
      for (Index r = 0; r < rank; ++r)
        grad.head(m.n_cell_params()) += (w.delta().dot(s_tilde.col(r)) / S(rank)) * theta_tilde.col(r);
      for (Index r = 0; r < rank; ++r) {
        // Tangent forward propagation through the window, oldest step first.
        tangent = s_tilde.col(r);
        for (Index i = len - 1; i >= 0; --i) {
          m.cell.jvp_state(m.theta.data(), w.step(i).cache, tangent, tangent_next);
          std::swap(tangent, tangent_next);
        }
        // a = νᵀ ∂F^T/∂θ: backpropagate the signs from the window's last state.
        m.rng.fill_signs(nu);
        a.setZero();
        const S tangent_norm = tangent.norm();
        w.delta() = nu;
        w.backprop(m, len, /*losses=*/false, a.data());
        const S rho0 = std::sqrt(std::sqrt(theta_tilde_norm2(r)) / (tangent_norm + eps)) + eps;
        const S rho1 = std::sqrt(a.norm() / (nu_norm + eps)) + eps;
        s_tilde_next.col(r) = rho0 * tangent + rho1 * nu;
        theta_tilde_next.col(r) = theta_tilde.col(r) / rho0 + a / rho1;
      }
      if (!bounded(s_tilde_next) || !bounded(theta_tilde_next))
        return {Refusal::Sensitivity, kUoroSensitivity,
                std::max(max_abs(s_tilde_next), max_abs(theta_tilde_next))};
      return {};
    }
    void commit() {
      std::swap(s_tilde, s_tilde_next);
      std::swap(theta_tilde, theta_tilde_next);
      refresh_norms();
    }
    void forget() {
      s_tilde.setZero();
      theta_tilde.setZero();
      theta_tilde_norm2.setZero();
    }
    void refresh_norms() {
      for (Index r = 0; r < rank; ++r) theta_tilde_norm2(r) = theta_tilde.col(r).squaredNorm();
    }
  };

  Window<S, Cell> window_;
  Beyond beyond_;
};

}  // namespace uoro
