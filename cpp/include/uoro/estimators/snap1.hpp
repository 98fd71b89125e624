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
#include <type_traits>
#include <vector>

#include "uoro/estimator.hpp"

namespace uoro {

// A cell that is a stack of layers (stack.hpp) tells SnAp-1 its units layer by layer and
// the total cotangent each layer's new state receives through the layers above it in the
// current step: SnAp-1 then runs within each layer, the layer-wise online rule.
template <class Cell, class = void>
struct LayeredUnits : std::false_type {};
template <class Cell>
struct LayeredUnits<Cell, std::void_t<decltype(std::declval<const Cell&>().snap_units())>> : std::true_type {
};

template <class S, class Cell>
class Snap1 {
  static constexpr int kSlots = Cell::kSnapSlots;
  static constexpr int kStored = kSlots > 0 ? kSlots : 1;

 public:
  Snap1(const LearnerConfig&, const Cell& cell, const Readout<S>& readout) : n_(cell.hidden_size()) {
    Index units = n_;
    if constexpr (LayeredUnits<Cell>::value) units = cell.snap_units();
    influence_ = Mat<S>::Zero(cell.param_size(), kStored);
    diagonal_ = Mat<S>::Zero(units, kStored * kStored);
    cotangent_ = Vec<S>::Zero(cell.state_size());
    // Slot q of unit u: state entry q·n + u, or where the stack puts it.
    for (int q = 0; q < kStored; ++q) {
      entry_[q].resize(units);
      for (Index u = 0; u < units; ++u) {
        if constexpr (LayeredUnits<Cell>::value)
          entry_[q][u] = cell.snap_entry(q, u);
        else
          entry_[q][u] = q * n_ + u;
      }
      indicator_[q] = Vec<S>::Zero(cell.state_size());
      for (Index u = 0; u < units; ++u) indicator_[q](entry_[q][u]) = S(1);
    }
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Index rows = cell.blocks()[k].rows;
      for (int q = 0; q < kStored; ++q) immediate_[q][k] = Vec<S>::Zero(rows);
      row_diagonal_[k] = Mat<S>::Zero(rows, kStored * kStored);
      row_cotangent_[k] = Mat<S>::Zero(rows, kStored);
      row_unit_[k].resize(rows);
      for (Index i = 0; i < rows; ++i) {
        if constexpr (LayeredUnits<Cell>::value)
          row_unit_[k][i] = cell.snap_unit(k, i);
        else
          row_unit_[k][i] = i % n_;
      }
    }
    readout_chunk_ = readout_chunk_columns(readout);
    Index scratch = readout_scratch_size(readout);
    for (const Block& b : cell.blocks()) scratch = std::max(scratch, b.rows);
    column_ = Vec<S>::Zero(scratch);
  }

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    if (const Refusal refusal = prepare(m)) return refusal;
    if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m) : 0.0);
    if (m.optimizer.is_adam())
      pass<true>(m, grad_out, update);
    else
      pass<false>(m, grad_out, update);
    if (update) m.optimizer.end();
    return {};
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

  // What Snap1Streams reads of one stream after prepare(): per block row, its unit's
  // diagonal block (rows, slots²: d_hh, d_hc, d_ch, d_cc) and cotangents (rows, slots),
  // each slot's immediate factors, J's slots, and max|J| (which it keeps up to date).
  const Mat<S>& row_diagonal(Index k) const { return row_diagonal_[k]; }
  const Mat<S>& row_cotangent(Index k) const { return row_cotangent_[k]; }
  const Vec<S>& immediate(int q, Index k) const { return immediate_[q][k]; }
  Mat<S>& influence() { return influence_; }
  S& influence_max() { return influence_max_; }

  // The unit diagonals and immediate entries of this step, and bounds on the new |J| and
  // |g| checked before anything is written.
  Refusal prepare(Model<S, Cell>& m) {
    if constexpr (kSlots == 0) {
      return {Refusal::Sensitivity, "SnAp-1 influence (not defined for this cell)", 0.0};
    } else {
      m.cell.state_diagonal(m.theta.data(), m.cache, diagonal_);
      // The immediate entries: the cotangent factors of each slot's indicator (a stack's
      // layers each take their own part, nothing passed between them); and the cotangent
      // on the new state (a stack's: each layer's total, with what the layers above send
      // it in this step).
      if constexpr (LayeredUnits<Cell>::value) {
        for (int q = 0; q < kSlots; ++q) m.cell.layer_param_cotangents(m.cache, indicator_[q], immediate_[q]);
        m.cell.total_cotangent(m.theta.data(), m.cache, m.c, cotangent_);
      } else {
        for (int q = 0; q < kSlots; ++q) m.cell.param_cotangents(m.cache, indicator_[q], immediate_[q]);
        cotangent_ = m.c;
      }
      // Per row of each block, its unit's diagonal block and cotangent; and bounds on the
      // new |J| and |g| before anything is written.
      const S d_max = diagonal_.cwiseAbs().maxCoeff();
      S c_sum = 0;
      for (int q = 0; q < kSlots; ++q) {
        S c_max = 0;
        for (Index e : entry_[q]) c_max = std::max(c_max, std::abs(cotangent_(e)));
        c_sum += c_max;
      }
      S influence_bound = 0;
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        const Index rows = m.cell.blocks()[k].rows;
        const Index* unit = row_unit_[k].data();
        for (Index s = 0; s < diagonal_.cols(); ++s) {  // column by column: plain gathers
          const S* from = diagonal_.col(s).data();
          S* to = row_diagonal_[k].col(s).data();
          for (Index i = 0; i < rows; ++i) to[i] = from[unit[i]];
        }
        for (int q = 0; q < kSlots; ++q) {
          const Index* entry = entry_[q].data();
          S* to = row_cotangent_[k].col(q).data();
          for (Index i = 0; i < rows; ++i) to[i] = cotangent_(entry[unit[i]]);
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
      return {};
    }
  }

 private:
  // The column's gradient g = Σ_q c_q J_q from its new influence entries, which are
  // written back when kWrite.
  template <bool kWrite>
  void column(Mat<S>& influence, Index k, Index off, Index rows, S vj, S* g) {
    const S* d = row_diagonal_[k].data();
    const S* c = row_cotangent_[k].data();
    if constexpr (kSlots == 1)
      one_slot<kWrite>(d, c, immediate_[0][k].data(), influence.col(0).data() + off, g, rows, vj);
    else
      two_slots<kWrite>(d, d + rows, d + 2 * rows, d + 3 * rows, c, c + rows, immediate_[0][k].data(),
                        immediate_[1][k].data(), influence.col(0).data() + off,
                        influence.col(kStored - 1).data() + off, g, rows, vj);
  }
  // (Plain loops over restrict-qualified parameters: the compiler vectorizes them.)
  template <bool kWrite>
  static void one_slot(const S* __restrict d, const S* __restrict c, const S* __restrict im, S* __restrict j,
                       S* __restrict g, Index rows, S vj) {
    for (Index i = 0; i < rows; ++i) {
      const S j_new = d[i] * j[i] + im[i] * vj;
      if constexpr (kWrite) j[i] = j_new;
      g[i] = c[i] * j_new;
    }
  }
  template <bool kWrite>
  static void two_slots(const S* __restrict d_hh, const S* __restrict d_hc, const S* __restrict d_ch,
                        const S* __restrict d_cc, const S* __restrict c_h, const S* __restrict c_c,
                        const S* __restrict im_h, const S* __restrict im_c, S* __restrict j_h,
                        S* __restrict j_c, S* __restrict g, Index rows, S vj) {
    for (Index i = 0; i < rows; ++i) {
      const S h = d_hh[i] * j_h[i] + d_hc[i] * j_c[i] + im_h[i] * vj;
      const S c = d_ch[i] * j_h[i] + d_cc[i] * j_c[i] + im_c[i] * vj;
      if constexpr (kWrite) {
        j_h[i] = h;
        j_c[i] = c;
      }
      g[i] = c_h[i] * h + c_c[i] * c;
    }
  }

  // ‖g‖ of the coming step, for clipping: one read-only pass before the fused one.
  double gradient_norm(Model<S, Cell>& m) {
    double total = 0;
    S* g = column_.data();
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      column<false>(influence_, k, off, rows, vj, g);
      total += double(Eigen::Map<const Vec<S>>(g, rows).squaredNorm());
    });
    if (m.config.train_readout) total += double(m.d_out.squaredNorm() * m.readout_v.squaredNorm());
    return std::sqrt(total);
  }

  template <bool kAdam>
  void pass(Model<S, Cell>& m, S* grad_out, bool update) {
    S* __restrict g = column_.data();
    S influence_max = 0;
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      column<true>(influence_, k, off, rows, vj, g);
      for (int q = 0; q < kSlots; ++q)  // contiguous segments: a vectorized reduction
        influence_max =
            std::max(influence_max,
                     Eigen::Map<const Vec<S>>(influence_.col(q).data() + off, rows).cwiseAbs().maxCoeff());
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
  Mat<S> diagonal_;                                // per unit, its block of ∂F/∂s: (units, slots²)
  Vec<S> cotangent_;                               // the cotangent on the new state the gradient uses (S)
  std::array<std::vector<Index>, kStored> entry_;  // per slot, each unit's state entry
  std::array<Vec<S>, kStored> indicator_;          // per slot, ones on its entries
  std::array<std::array<Vec<S>, Cell::kBlocks>, kStored> immediate_;
  std::array<Mat<S>, Cell::kBlocks> row_diagonal_, row_cotangent_;
  std::array<std::vector<Index>, Cell::kBlocks> row_unit_;  // each block row's unit
  Vec<S> column_;
};

}  // namespace uoro
