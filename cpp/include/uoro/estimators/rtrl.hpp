// Real-time recurrent learning: the exact Jacobian J = ∂s/∂θ (S × P_cell) carried
// forward, J ← (∂F/∂s) J + ∂F/∂θ, and the gradient g = cᵀ J (+ the readout's exact
// gradient). Cost S²·P per step: a reference for small networks.
#pragma once

#include <utility>

#include "uoro/estimator.hpp"

namespace uoro {

template <class S, class Cell>
class Rtrl {
 public:
  Rtrl(const LearnerConfig&, const Cell& cell, const Readout<S>& readout) {
    const Index n_state = cell.state_size(), n_cell = cell.param_size();
    jac_ = jac_next_ = Mat<S>::Zero(n_state, n_cell);
    dfds_ = Mat<S>::Zero(n_state, n_state);
    unit_ = Vec<S>::Zero(n_state);
    grad_ = Vec<S>::Zero(n_cell + readout.block().size());
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      u_c_[k] = Vec<S>::Zero(cell.blocks()[k].rows);
      u_unit_[k] = Mat<S>::Zero(cell.blocks()[k].rows, n_state);
    }
  }

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    bool due;
    if (const Refusal refusal = propose(m, due)) return refusal;
    commit();
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()) = grad_;
    if (update) apply_gradient(m, grad_);
    return {};
  }

  // The first half of `update`: the new Jacobian and the gradient (left in gradient()),
  // committed by commit(); a refusal changes nothing.
  Refusal propose(Model<S, Cell>& m, bool& due) {
    due = true;
    const Index n_state = m.cell.state_size();
    for (Index i = 0; i < n_state; ++i) {
      unit_.setZero();
      unit_(i) = S(1);
      m.cell.jvp_state(m.theta.data(), m.cache, unit_, dfds_.col(i));
      m.cell.param_cotangents(m.cache, unit_, u_c_);
      for (Index k = 0; k < Cell::kBlocks; ++k) u_unit_[k].col(i) = u_c_[k];
    }
    jac_next_.noalias() = dfds_ * jac_;
    // Row i of ∂F/∂θ, block k, column j is u_k(e_i) v_k[j]: add U_kᵀ v_k[j] per column.
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      jac_next_.middleCols(off, rows).noalias() += vj * u_unit_[k].transpose();
    });
    grad_.setZero();
    grad_.head(m.n_cell_params()).noalias() = jac_next_.transpose() * m.c;
    add_readout_gradient(m.readout, m.d_out, m.readout_v, grad_.data());
    if (!bounded(jac_next_))
      return {Refusal::Sensitivity, "estimator's sensitivity ∂s/∂θ (RTRL's Jacobian)", max_abs(jac_next_)};
    if (!bounded(grad_)) return {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    return {};
  }
  void commit() { std::swap(jac_, jac_next_); }
  void enable_proposals() {}
  void rollback() {}
  const Vec<S>& gradient() const { return grad_; }

  void forget() { jac_.setZero(); }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("jacobian", jac_);
  }
  void arrays_written(bool) {}
  Window<S, Cell>* window() { return nullptr; }

 private:
  Mat<S> jac_, jac_next_, dfds_;
  Vec<S> unit_, grad_;
  std::array<Vec<S>, Cell::kBlocks> u_c_;
  std::array<Mat<S>, Cell::kBlocks> u_unit_;
};

}  // namespace uoro
