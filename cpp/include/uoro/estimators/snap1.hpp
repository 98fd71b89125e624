// SnAp-1 (Menick et al., "Practical Real Time Recurrent Learning with a Sparse
// Approximation", ICLR 2021, n = 1): of the influence matrix J = ∂s/∂θ it keeps only the
// entries that a parameter reaches in one step. In the dense cells a parameter row
// drives one unit, so J is one value per parameter and state slot of that unit (h, and
// c for the LSTM): J ← D_u J + (immediate ∂s'/∂θ), with D_u the unit's own block of
// ∂F/∂s, then g = Σ_q c_q J_q from the updated J (as in the paper, whose gradient at t
// uses J_t). Biased (the units' cross-influences are dropped) but without variance, and
// exact when ∂F/∂s is block-diagonal per unit. The update, the gradient and the
// optimizer run fused in one pass over the parameter blocks, column by column.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>

#include "uoro/estimator.hpp"

namespace uoro {

template <class S, class Cell>
class Snap1 {
  static constexpr int kSlots = Cell::kSnapSlots;
  static constexpr int kStored = kSlots > 0 ? kSlots : 1;

 public:
  Snap1(const LearnerConfig&, const Cell& cell, const Readout<S>& readout) : n_(cell.hidden_size()) {
    influence_ = Mat<S>::Zero(cell.param_size(), kStored);
    diagonal_ = Mat<S>::Zero(n_, kStored * kStored);
    indicator_ = Vec<S>::Zero(cell.state_size());
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Index rows = cell.blocks()[k].rows;
      for (int q = 0; q < kStored; ++q) immediate_[q][k] = Vec<S>::Zero(rows);
      row_diagonal_[k] = Mat<S>::Zero(rows, kStored * kStored);
      row_cotangent_[k] = Mat<S>::Zero(rows, kStored);
    }
    readout_chunk_ = readout_chunk_columns(readout);
    Index scratch = readout_chunk_ * readout.block().rows;
    for (const Block& b : cell.blocks()) scratch = std::max(scratch, b.rows);
    column_ = Vec<S>::Zero(scratch);
    Index rows = 0;
    for (const Block& b : cell.blocks()) rows = std::max(rows, b.rows);
    scratch_[0] = scratch_[1] = Vec<S>::Zero(rows);
  }

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    if constexpr (kSlots == 0) {
      return {Refusal::Sensitivity, "SnAp-1 influence (not defined for this cell)", 0.0};
    } else {
      m.cell.state_diagonal(m.theta.data(), m.cache, diagonal_);
      // The immediate entries: the cotangent factors of each slot's indicator.
      for (int q = 0; q < kSlots; ++q) {
        indicator_.setZero();
        indicator_.segment(q * n_, n_).setOnes();
        m.cell.param_cotangents(m.cache, indicator_, immediate_[q]);
      }
      // Per row of each block, its unit's diagonal block and cotangent; and bounds on the
      // new |J| and |g| before anything is written.
      const S d_max = diagonal_.cwiseAbs().maxCoeff();
      S c_sum = 0;
      for (int q = 0; q < kSlots; ++q) c_sum += m.c.segment(q * n_, n_).cwiseAbs().maxCoeff();
      S influence_bound = 0;
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        const Index rows = m.cell.blocks()[k].rows;
        for (Index i = 0; i < rows; ++i) {
          const Index u = i % n_;
          row_diagonal_[k].row(i) = diagonal_.row(u);
          for (int q = 0; q < kSlots; ++q) row_cotangent_[k](i, q) = m.c(q * n_ + u);
        }
        const S v_max = m.cache.v[k].cwiseAbs().maxCoeff();
        for (int q = 0; q < kSlots; ++q)
          influence_bound = std::max(influence_bound, S(kSlots) * d_max * influence_max_ +
                                                          immediate_[q][k].cwiseAbs().maxCoeff() * v_max);
      }
      const S grad_bound = c_sum * influence_bound;
      const S update_bound = S(m.optimizer.learning_rate() * double(grad_bound));
      if (!bounded(influence_bound))
        return {Refusal::Sensitivity, "estimator's sensitivity ∂s/∂θ (SnAp-1's influence array)",
                double(influence_bound)};
      if (!bounded(grad_bound)) return {Refusal::Gradient, "gradient estimate", double(grad_bound)};
      if (!bounded(update_bound)) return {Refusal::Gradient, "parameter update", double(update_bound)};

      if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m) : 0.0);
      if (m.optimizer.is_adam())
        pass<true>(m, grad_out, update);
      else
        pass<false>(m, grad_out, update);
      if (update) m.optimizer.end();
      return {};
    }
  }

  void forget() {
    influence_.setZero();
    influence_max_ = 0;
  }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("snap_influence", influence_);
  }
  void arrays_written(bool) { influence_max_ = influence_.size() ? influence_.cwiseAbs().maxCoeff() : S(0); }
  Window<S, Cell>* window() { return nullptr; }

 private:
  // The new influence entries of one column (written to j_new, slot by slot: may be the
  // old ones, each element is read before it is written) and the column's gradient
  // g = Σ_q c_q J_q.
  void column(Index k, Index off, Index rows, S vj, S* j_new0, S* j_new1, S* __restrict g) const {
    const S* __restrict d = row_diagonal_[k].data();
    const S* __restrict c = row_cotangent_[k].data();
    const S* j0 = influence_.col(0).data() + off;
    const S* __restrict im0 = immediate_[0][k].data();
    if constexpr (kSlots == 1) {
      for (Index i = 0; i < rows; ++i) {
        j_new0[i] = d[i] * j0[i] + im0[i] * vj;
        g[i] = c[i] * j_new0[i];
      }
    } else {
      const S* j1 = influence_.col(1).data() + off;
      const S* __restrict im1 = immediate_[1][k].data();
      const S *d_hh = d, *d_hc = d + rows, *d_ch = d + 2 * rows, *d_cc = d + 3 * rows;
      const S *c_h = c, *c_c = c + rows;
      for (Index i = 0; i < rows; ++i) {
        const S h = d_hh[i] * j0[i] + d_hc[i] * j1[i] + im0[i] * vj;
        const S cc = d_ch[i] * j0[i] + d_cc[i] * j1[i] + im1[i] * vj;
        j_new0[i] = h;
        j_new1[i] = cc;
        g[i] = c_h[i] * h + c_c[i] * cc;
      }
    }
  }

  // ‖g‖ of the coming step, for clipping: one read-only pass before the fused one.
  double gradient_norm(Model<S, Cell>& m) {
    double total = 0;
    S* g = column_.data();
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      column(k, off, rows, vj, scratch_[0].data(), scratch_[1].data(), g);
      total += double(Eigen::Map<const Vec<S>>(g, rows).squaredNorm());
    });
    if (m.config.train_readout)
      total += double(m.readout.d_out().squaredNorm() * m.readout.v().squaredNorm());
    return std::sqrt(total);
  }

  template <bool kAdam>
  void pass(Model<S, Cell>& m, S* grad_out, bool update) {
    S* __restrict g = column_.data();
    S influence_max = 0;
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      S* j1 = kSlots > 1 ? influence_.col(kStored - 1).data() + off : nullptr;
      column(k, off, rows, vj, influence_.col(0).data() + off, j1, g);  // in place: row by row
      influence_max = std::max(influence_max, influence_.middleRows(off, rows).cwiseAbs().maxCoeff());
      if (grad_out) std::copy(g, g + rows, grad_out + off);
      if (update) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, rows);
    });
    influence_max_ = influence_max;
    readout_pass<kAdam>(m, g, readout_chunk_, grad_out, update);
  }

  Index n_;
  Index readout_chunk_;
  Mat<S> influence_;  // J: (P_cell, slots)
  S influence_max_ = 0;
  Mat<S> diagonal_;   // per unit, its block of ∂F/∂s: (n, slots²)
  Vec<S> indicator_;  // ones on one slot's entries
  std::array<std::array<Vec<S>, Cell::kBlocks>, kStored> immediate_;
  std::array<Mat<S>, Cell::kBlocks> row_diagonal_, row_cotangent_;
  Vec<S> column_;
  std::array<Vec<S>, 2> scratch_;  // new influence entries of a column, for the norm pass
};

}  // namespace uoro
