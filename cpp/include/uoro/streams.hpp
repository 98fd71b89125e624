// Many streams, one model: what the estimators of a many-streams learner see.
//
// B streams share θ, the readout and the optimizer; each has its own recurrent state and
// its own activations (a Lane). At each tick the streams present step at once, the
// tick's loss is the mean of their losses, and θ is updated once with the gradient of
// that mean. An estimator over streams implements the interface of estimator.hpp on a
// Streams view instead of a Model, plus forget_stream(b) and window(b).
//
// Exact estimators run one instance per stream (PerStream): each proposes its stream's
// gradient and new memory, the learner keeps all of them or none.
#pragma once

#include <string>
#include <vector>

#include "uoro/estimator.hpp"
#include "uoro/products.hpp"

namespace uoro {

// For the estimators that run one instance per stream: one stream's copy of this tick's
// activations (the cell's, and the readout's gradient factors) as a single-stream
// estimator reads them.
template <class S, class Cell>
struct Lane {
  typename Cell::Cache cache;
  Vec<S> c;          // ∂ℓ/∂s'
  Vec<S> d_out;      // ∂ℓ/∂o
  Vec<S> readout_v;  // [h; 1]

  Lane(const Cell& cell, const Readout<S>& readout)
      : cache(cell.make_cache()),
        c(Vec<S>::Zero(cell.state_size())),
        d_out(Vec<S>::Zero(readout.output_size())),
        readout_v(Vec<S>::Zero(readout.hidden_size() + 1)) {}
};

// The learner's parts as one tick sees them: the activations of all streams at once (one
// column per stream; the cotangents c of absent streams are zero), which streams step
// (`present`, increasing, never empty; `absent` the others), the lanes, and the shared
// parameters with their optimizer.
template <class S, class Cell>
struct Streams {
  const LearnerConfig& config;
  Cell& cell;
  const Readout<S>& readout;  // the shared block
  typename Cell::Batch& batch;
  const Mat<S>& c;           // ∂ℓ/∂s' (S, B)
  const Mat<S>& readout_in;  // the readout's input factors [h; 1] (n + 1, B)
  const Mat<S>& out;         // its outputs (O, B)
  const Mat<S>& d_out;       // ∂ℓ/∂o (O, B), zero for absent streams
  std::vector<Lane<S, Cell>>& lanes;
  const std::vector<Index>& present;
  const std::vector<Index>& absent;
  // Each stream's input symbol when every present stream's input is one-hot (−1 for the
  // absent ones, whose input is zero), else null.
  const Index* tokens;
  Vec<S>& theta;
  Optimizer<S>& optimizer;
  Rng& rng;

  Index n_params() const { return theta.size(); }
  // Stream b as a single-stream estimator sees it (its activations copied to its lane).
  Model<S, Cell> model(Index b) {
    Lane<S, Cell>& l = lanes[b];
    auto to = l.cache.fields();
    auto from = batch.fields();
    for (std::size_t i = 0; i < to.size(); ++i) *to[i] = from[i]->col(b);
    l.c = c.col(b);
    l.d_out = d_out.col(b);
    l.readout_v = readout_in.col(b);
    return {config, cell, l.cache, readout, l.d_out, l.readout_v, l.c, theta, optimizer, rng};
  }
};

// The readout's part of a fused pass over streams: its exact gradient, the mean over the
// streams present of d_out_b ⊗ [h_b; 1] (absent streams' d_out is zero), a chunk of
// columns at a time from d_out scaled and padded to whole bands of the product kernel,
// through a padded scratch.
template <class S>
class StreamsReadout {
 public:
  StreamsReadout(const Readout<S>& readout, Index streams)
      : rows_(readout.block().rows),
        chunk_(pass_chunk_columns(readout.block().rows, readout.block().cols)),
        d_out_(Mat<S>::Zero(padded_rows(readout.output_size(), kernel_row_multiple<S>()), streams)),
        padded_(Mat<S>::Zero(d_out_.rows(), chunk_)) {}

  // The scratch g that norm2 and pass write: one chunk.
  Index scratch_size() const { return rows_ * chunk_; }
  // Each stream's share of the tick's mean loss: this tick's d_out / n.
  void load(const Mat<S>& d_out, S inv_n) { d_out_.topRows(d_out.rows()) = inv_n * d_out; }

  // ‖g‖² of the readout's gradient (0 when the readout is not trained), for clipping.
  template <class Cell>
  double norm2(const Streams<S, Cell>& m, S* g) {
    double total = 0;
    if (m.config.train_readout)
      for (Index j0 = 0; j0 < m.readout_in.rows(); j0 += chunk_) {
        const Index cols = std::min(chunk_, m.readout_in.rows() - j0);
        gradient(m, j0, cols, g);
        total += double(Eigen::Map<const Vec<S>>(g, rows_ * cols).squaredNorm());
      }
    return total;
  }
  // The gradient into grad_out (if given) and the optimizer (when the readout is trained).
  template <bool kAdam, class Cell>
  void pass(Streams<S, Cell>& m, S* g, S* grad_out, bool update) {
    const Index readout_offset = m.theta.size() - rows_ * m.readout_in.rows();
    for (Index j0 = 0; j0 < m.readout_in.rows(); j0 += chunk_) {
      const Index cols = std::min(chunk_, m.readout_in.rows() - j0);
      const Index off = readout_offset + j0 * rows_, len = rows_ * cols;
      gradient(m, j0, cols, g);
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update && m.config.train_readout) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
    }
  }

 private:
  // g (O × cols) for the readout's columns [j0, j0 + cols).
  template <class Cell>
  void gradient(const Streams<S, Cell>& m, Index j0, Index cols, S* g) {
    auto padded = padded_.leftCols(cols);
    multiply_into(d_out_, m.readout_in.middleRows(j0, cols).transpose(), padded);
    copy_rows(padded, MatMap<S>(g, rows_, cols), rows_);
  }

  Index rows_, chunk_;
  Mat<S> d_out_;   // (O padded, B)
  Mat<S> padded_;  // one chunk's padded gradient
};

// One single-stream estimator E per stream, and their memory under names with the
// stream's index ("jacobian_3"): what PerStream and Snap1Streams share.
template <class E>
class StreamEstimators {
 public:
  template <class S, class Cell>
  StreamEstimators(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams) {
    each_.reserve(streams);
    for (Index b = 0; b < streams; ++b) each_.emplace_back(config, cell, readout);
    for (Index b = 0; b < streams; ++b)
      each_[b].for_each_array(
          [&](const char* name, auto&) { names_.push_back(std::string(name) + "_" + std::to_string(b)); });
  }

  E& operator[](Index b) { return each_[b]; }
  void forget() {
    for (E& e : each_) e.forget();
  }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    std::size_t i = 0;
    for (E& e : each_) e.for_each_array([&](const char*, auto& a) { fn(names_[i++].c_str(), a); });
  }
  void arrays_written(bool all) {
    for (E& e : each_) e.arrays_written(all);
  }

 private:
  std::vector<E> each_;
  std::vector<std::string> names_;
};

// One estimator E per stream (RTRL's Jacobian, a truncation window, KF-RTRL's factors;
// SnAp-1 has its own sweep over the streams, snap1_streams.hpp).
// E provides enable_proposals() (called once), propose(Model&, bool& due) -> Refusal
// (its gradient in gradient() when due), commit(), rollback() (undoes a successful
// propose), and the single-stream interface otherwise.
template <class S, class Cell, class E>
class PerStream {
 public:
  PerStream(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams)
      : estimators_(config, cell, readout, streams) {
    for (Index b = 0; b < streams; ++b) estimators_[b].enable_proposals();
    grad_ = Vec<S>::Zero(cell.param_size() + readout.block().size());
  }

  // The mean of the present streams' gradients (those due this tick; none due: no update).
  Refusal update(Streams<S, Cell>& m, S* grad_out, bool update) {
    grad_.setZero();
    bool any_due = false;
    Refusal refusal;
    const auto rng_before = m.rng.state();  // a random estimator's draws are undone with it
    std::size_t proposed = 0;
    try {  // a user cell's functions may throw: undo the streams already proposed
      for (; proposed < m.present.size(); ++proposed) {
        auto model = m.model(m.present[proposed]);
        bool due = false;
        E& e = estimators_[m.present[proposed]];
        if ((refusal = e.propose(model, due))) break;
        if (due) grad_ += e.gradient();
        any_due = any_due || due;
      }
    } catch (...) {
      for (std::size_t i = 0; i < proposed; ++i) estimators_[m.present[i]].rollback();
      throw;
    }
    if (!refusal) {
      grad_ *= S(1) / S(m.present.size());
      if (!bounded(grad_)) refusal = {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    }
    if (refusal) {
      for (std::size_t i = 0; i < proposed; ++i) estimators_[m.present[i]].rollback();
      m.rng.set_state(rng_before);
      return refusal;
    }
    for (Index b : m.present) estimators_[b].commit();
    if (!any_due) {  // every present stream is mid-window
      if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()).setZero();
      return {};
    }
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()) = grad_;
    if (update) {
      auto model = m.model(m.present[0]);
      apply_gradient(model, grad_);
    }
    return {};
  }

  void forget() { estimators_.forget(); }
  void forget_stream(Index b) { estimators_[b].forget(); }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    estimators_.for_each_array(fn);
  }
  void arrays_written(bool all) { estimators_.arrays_written(all); }
  Window<S, Cell>* window(Index b) { return estimators_[b].window(); }

 private:
  StreamEstimators<E> estimators_;
  Vec<S> grad_;
};

}  // namespace uoro
