// What every gradient estimator sees, and the interface the learner drives.
//
// An estimator owns its memory of the past (UORO's s̃ and θ̃, RTRL's Jacobian, a window
// of activations) and, at each step, turns the learner's forward pass into a gradient
// and a parameter update. It implements:
//
//   Estimator(const LearnerConfig&, const Cell&, const Readout<S>&)   // sizes only
//   Refusal update(Model<S, Cell>&, S* grad_out, bool update)
//       From this step's forward pass (the Model), estimate ∂ℓ/∂θ, write it to grad_out
//       if given, and with `update` apply it through the optimizer; commit the new
//       memory. Or change nothing at all and return why (a Refusal).
//   void forget()                      // the memory of a fresh estimator
//   template <class Fn> void for_each_array(Fn&& fn)
//       fn(name, array) for each array of its memory, for checkpoints
//   void arrays_written(bool all)      // after a checkpoint wrote them (all: every one)
//   Window<S, Cell>* window()          // its window of past steps, or nullptr
//
// The learner never learns an estimator's name beyond constructing it.
#pragma once

#include <algorithm>
#include <type_traits>

#include "uoro/cells.hpp"
#include "uoro/config.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/readout.hpp"

namespace uoro {

// The learner's parts as one step sees them: this step's activations (cache), the
// readout (its block) with this step's gradient factors d_out ⊗ readout_v, the cotangent
// c = ∂ℓ/∂s' of this step's loss on the new state, and the parameters with their
// optimizer.
template <class S, class Cell>
struct Model {
  const LearnerConfig& config;
  Cell& cell;
  typename Cell::Cache& cache;
  const Readout<S>& readout;
  const Vec<S>& d_out;      // ∂ℓ/∂o
  const Vec<S>& readout_v;  // the readout's input factor [h; 1]
  const Vec<S>& c;
  Vec<S>& theta;
  Optimizer<S>& optimizer;
  Rng& rng;

  Index n_params() const { return theta.size(); }
  Index n_cell_params() const { return cell.param_size(); }
};

// Whether a cell is element-wise (kElementwise): ∂F/∂s is block-diagonal per unit and
// every parameter row drives its own unit only, so ∂s/∂θ never leaves the entries
// SnAp-1 keeps and SnAp-1's recursion is exact RTRL.
template <class Cell, class = void>
struct Elementwise : std::false_type {};
template <class Cell>
struct Elementwise<Cell, std::void_t<decltype(Cell::kElementwise)>> : std::bool_constant<Cell::kElementwise> {
};

// The estimator an algorithm runs as on a cell, from the structure the cell declares:
// the one place where a cell's structure picks an estimator, for one stream and many.
//  - RTRL on an element-wise cell keeps only the per-unit entries of ∂s/∂θ, the only
//    ones that are not zero: SnAp-1's estimator, O(|θ|) instead of O(S²·|θ|), exact.
//  - SnAp-1 on a cell whose parameters reach every unit in one step (kSnapSlots == 0)
//    keeps all of ∂s/∂θ: RTRL.
template <class Cell>
constexpr Algorithm estimator_for(Algorithm algorithm) {
  if (algorithm == Algorithm::Rtrl && Elementwise<Cell>::value) return Algorithm::Snap1;
  if (algorithm == Algorithm::Snap1 && Cell::kSnapSlots == 0) return Algorithm::Rtrl;
  return algorithm;
}

// Whether a cell gives both halves of a VJP from one call, vjp(θ, cache, c, c_s, &u), as
// a user cell does (one callback instead of two).
template <class Cell, class = void>
struct JointVjp : std::false_type {};
template <class Cell>
struct JointVjp<Cell, std::void_t<decltype(Cell::kJointVjp)>> : std::bool_constant<Cell::kJointVjp> {};

// Whether a one-stream cell takes its next recurrent products folded into an estimator's
// pass: W [h; 1] and W x̃ with W the columns of block kFoldedBlock from
// folded_first_column() on, x̃ = folded_tangent_input(h, s̃) (FoldedProducts `folded`).
template <class Cell, class = void>
struct FoldsProducts : std::false_type {};
template <class Cell>
struct FoldsProducts<Cell, std::void_t<decltype(Cell::kFoldedBlock)>> : std::true_type {};

// Calls fn(offset, rows, v_j, k) for column j of every cell block k.
template <class Cell, class Fn>
void for_each_cell_column(const Cell& cell, const typename Cell::Cache& cache, Fn&& fn) {
  for (Index k = 0; k < Cell::kBlocks; ++k) {
    const Block& b = cell.blocks()[k];
    for (Index j = 0; j < b.cols; ++j) fn(b.offset + j * b.rows, b.rows, cache.v[k](j), k);
  }
}

// Adds the readout's exact gradient d_out ⊗ v into grad (its block).
template <class S>
void add_readout_gradient(const Readout<S>& readout, const Vec<S>& d_out, const Vec<S>& v, S* grad) {
  const Block& b = readout.block();
  MatMap<S>(grad + b.offset, b.rows, b.cols).noalias() += d_out * v.transpose();
}

// θ ← optimizer(θ, grad), for estimators that materialize the whole gradient (the
// readout's part left out when it is not trained).
template <class S, class Cell>
void apply_gradient(Model<S, Cell>& m, const Vec<S>& grad) {
  const auto applied = grad.head(m.config.train_readout ? m.n_params() : m.n_cell_params());
  m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? double(applied.norm()) : 0.0);
  m.optimizer.apply(m.theta.data(), 0, applied);
  m.optimizer.end();
}

// Readout columns per chunk of a fused pass: up to 16384 values (64 KiB in float32), so
// the scratch stays small and in cache however large the readout.
template <class S>
Index readout_chunk_columns(const Readout<S>& readout) {
  const Block& b = readout.block();
  return std::min(b.cols, std::max<Index>(1, 16384 / b.rows));
}

// The scratch readout_pass writes: a chunk of columns and one packet past it.
template <class S>
Index readout_scratch_size(const Readout<S>& readout) {
  return readout_chunk_columns(readout) * readout.block().rows + Eigen::internal::packet_traits<S>::size;
}

// The readout's exact gradient d_out ⊗ v for a fused pass, `chunk` whole columns at a
// time into the scratch g (readout_scratch_size): its columns are output_size rows, often
// short, and the optimizer runs in full vectors over a chunk where column by column it
// would leave a scalar tail on each. Columns no longer than a packet are written one
// packet each, its lanes past the column overwritten by the next column's (the last
// column's land in the scratch's padding).
template <bool kAdam, class S, class Cell>
void readout_pass(Model<S, Cell>& m, S* __restrict g, Index chunk, S* grad_out, bool update) {
  namespace pk = Eigen::internal;
  using Packet = typename pk::packet_traits<S>::type;
  constexpr Index kLanes = pk::packet_traits<S>::size;
  const Block& b = m.readout.block();
  const S* __restrict d_out = m.d_out.data();
  const bool short_columns = b.rows <= kLanes;
  alignas(64) S d_lanes[kLanes] = {};
  if (short_columns) std::copy(d_out, d_out + b.rows, d_lanes);
  const Packet d = pk::ploadu<Packet>(d_lanes);
  for (Index j0 = 0; j0 < b.cols; j0 += chunk) {
    const Index j1 = std::min(b.cols, j0 + chunk);
    if (short_columns) {
      for (Index j = j0; j < j1; ++j)
        pk::pstoreu(g + (j - j0) * b.rows, pk::pmul(d, pk::pset1<Packet>(m.readout_v(j))));
    } else {
      for (Index j = j0; j < j1; ++j) {
        const S vj = m.readout_v(j);
        for (Index i = 0; i < b.rows; ++i) g[(j - j0) * b.rows + i] = d_out[i] * vj;
      }
    }
    const Index off = b.offset + j0 * b.rows, len = (j1 - j0) * b.rows;
    if (grad_out) std::copy(g, g + len, grad_out + off);
    if (update && m.config.train_readout) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
  }
}

template <class S, class Cell>
class Window;

}  // namespace uoro
