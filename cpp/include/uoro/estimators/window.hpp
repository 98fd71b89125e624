// The window of the windowed estimators (truncated BPTT, memory-T UORO): a ring of the
// last T steps' activations, backpropagation through them, and the update that runs when
// a window's gradient is due.
//
// The backpropagation reads the activations stored at forward time and the current θ
// (θ only changes between steps, and not at all inside a window of the chunked forms,
// where the result is exact).
#pragma once

#include <algorithm>
#include <array>
#include <stdexcept>
#include <utility>
#include <vector>

#include "uoro/estimator.hpp"

namespace uoro {

template <class S, class Cell>
class Window {
 public:
  // One step of the history: activations, loss cotangent on the state, and the
  // readout's gradient factors d_out ⊗ [h; 1].
  struct Step {
    typename Cell::Cache cache;
    Vec<S> c, d_out, readout_v;
    template <class F>
    void for_each_field(F&& f) {
      for (Vec<S>* p : cache.fields()) f(*p);
      f(c);
      f(d_out);
      f(readout_v);
    }
  };

  Window(const Cell& cell, const Readout<S>& readout, Index length) {
    steps_.reserve(length);
    for (Index i = 0; i < length; ++i) steps_.push_back(make_step(cell, readout));
    spare_ = make_step(cell, readout);
    delta_ = delta_next_ = Vec<S>::Zero(cell.state_size());
    grad_ = Vec<S>::Zero(cell.param_size() + readout.block().size());
    for (Index k = 0; k < Cell::kBlocks; ++k) u_[k] = Vec<S>::Zero(cell.blocks()[k].rows);
  }

  Index length() const { return Index(steps_.size()); }
  // Step i of the window counted back from the newest (i = 0).
  Step& step(Index i) {
    const Index t = length();
    return steps_[(head_ - 1 - i + 2 * t) % t];
  }
  // The gradient being assembled, and the cotangent on the state entering the window
  // after a backpropagation.
  Vec<S>& grad() { return grad_; }
  Vec<S>& delta() { return delta_; }

  // Stores this step and, when a gradient is due (every step, or at the end of each
  // window), computes it and calls extra.propose(m, *this), which may add to the
  // gradient and propose new memory of its own (memory-T UORO); commits everything, or
  // rolls the window back and changes nothing.
  template <class Extra>
  Refusal update(Model<S, Cell>& m, S* grad_out, bool update, bool every_step, Extra& extra) {
    bool due = false;
    const Refusal refusal = propose(m, every_step, extra, due);
    if (refusal) return refusal;
    commit(extra);
    if (!due) {  // mid-window: nothing to apply yet
      if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()).setZero();
      return {};
    }
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()) = grad_;
    if (update) apply_gradient(m, grad_);
    return {};
  }

  // The first half of `update`: stores this step and, when a gradient is `due`, leaves it
  // in grad(). Until commit() or rollback(), the window can still be restored; on a
  // refusal it already is.
  template <class Extra>
  Refusal propose(Model<S, Cell>& m, bool every_step, Extra& extra, bool& due) {
    store(m, every_step);
    Step& slot = step(0);
    const Index len = length();
    due = due_ = every_step || pending_ >= len;
    if (!due) return {};
    const auto rng_before = m.rng.state();
    Refusal refusal;
    try {  // a user cell's functions may throw: then too the window is restored
      grad_.setZero();
      if (every_step) {
        add_readout_gradient(m.readout, slot.d_out, slot.readout_v, grad_.data());
        delta_ = m.c;
        backprop(m, count_, /*losses=*/false, grad_.data());
      } else {
        for (Index i = 0; i < len; ++i)
          add_readout_gradient(m.readout, step(i).d_out, step(i).readout_v, grad_.data());
        delta_.setZero();
        backprop(m, len, /*losses=*/true, grad_.data());
      }
      refusal = extra.propose(m, *this);
    } catch (...) {
      rollback();
      m.rng.set_state(rng_before);
      throw;
    }
    if (!refusal && !bounded(grad_)) refusal = {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    if (refusal) {
      rollback();
      m.rng.set_state(rng_before);
    }
    return refusal;
  }
  // Stores this step as the newest, keeping the slot's previous content (in spare_) and
  // the counters for a rollback().
  void store(Model<S, Cell>& m, bool every_step) {
    before_ = counters();
    std::swap(spare_, steps_[head_]);
    Step& slot = steps_[head_];
    slot.cache = m.cache;
    slot.c = m.c;
    slot.d_out = m.d_out;
    slot.readout_v = m.readout_v;
    head_ = (head_ + 1) % length();
    count_ = std::min(count_ + 1, length());
    pending_ = every_step ? 0 : pending_ + 1;
  }

  // Keeps the proposed step (and the extra's proposal).
  template <class Extra>
  void commit(Extra& extra) {
    if (!due_) return;  // mid-window
    extra.commit();
    pending_ = 0;
  }
  // Restores the window as it was before the last propose().
  void rollback() {
    std::swap(spare_, steps_[before_[0]]);
    set_counters(before_);
  }

  // Backpropagates through the newest `len` steps. delta() holds the cotangent on the
  // newest state on entry and, on exit, the cotangent on the state entering the oldest
  // step. With `losses`, each step's own loss cotangent joins on the way. Parameter
  // gradients accumulate into grad (cell part).
  void backprop(Model<S, Cell>& m, Index len, bool losses, S* grad) {
    for (Index i = 0; i < len; ++i) {
      Step& w = step(i);
      if (losses) delta_ += w.c;
      if constexpr (JointVjp<Cell>::value)
        m.cell.vjp(m.theta.data(), w.cache, delta_, delta_next_, &u_);
      else
        m.cell.param_cotangents(w.cache, delta_, u_);
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        const Block& b = m.cell.blocks()[k];
        MatMap<S>(grad + b.offset, b.rows, b.cols).noalias() += u_[k] * w.cache.v[k].transpose();
      }
      if constexpr (!JointVjp<Cell>::value) m.cell.vjp_state(m.theta.data(), w.cache, delta_, delta_next_);
      std::swap(delta_, delta_next_);
    }
  }

  // Drops the steps held (a fresh window).
  void forget() { head_ = count_ = pending_ = 0; }

  // ---- checkpoints: the steps as one (width, T) matrix, and the counters.
  Index width() {
    Index width = 0;
    steps_[0].for_each_field([&](Vec<S>& f) { width += f.size(); });
    return width;
  }
  Mat<S> data() {
    Mat<S> out(width(), length());
    for (Index t = 0; t < length(); ++t) {
      Index row = 0;
      steps_[t].for_each_field([&](Vec<S>& f) {
        out.col(t).segment(row, f.size()) = f;
        row += f.size();
      });
    }
    return out;
  }
  void set_data(const Mat<S>& data) {
    if (data.rows() != width() || data.cols() != length())
      throw std::invalid_argument("window data has the wrong shape");
    for (Index t = 0; t < length(); ++t) {
      Index row = 0;
      steps_[t].for_each_field([&](Vec<S>& f) {
        f = data.col(t).segment(row, f.size());
        row += f.size();
      });
    }
  }
  // head (next slot to write), count (valid steps), pending (steps since the last update,
  // chunked forms).
  std::array<Index, 3> counters() const { return {head_, count_, pending_}; }
  void set_counters(const std::array<Index, 3>& c) {
    const Index t = length();
    if (c[0] < 0 || c[1] < 0 || c[2] < 0 || c[0] >= t || c[1] > t || c[2] > t)
      throw std::invalid_argument("window counters out of range");
    head_ = c[0];
    count_ = c[1];
    pending_ = c[2];
  }

 private:
  static Step make_step(const Cell& cell, const Readout<S>& readout) {
    return {cell.make_cache(), Vec<S>::Zero(cell.state_size()), Vec<S>::Zero(readout.output_size()),
            Vec<S>::Zero(readout.hidden_size() + 1)};
  }

  std::vector<Step> steps_;
  Step spare_;
  Index head_ = 0, count_ = 0, pending_ = 0;
  std::array<Index, 3> before_{};  // counters before the last propose()
  bool due_ = false;               // whether the last propose() produced a gradient
  Vec<S> delta_, delta_next_, grad_;
  std::array<Vec<S>, Cell::kBlocks> u_;
};

}  // namespace uoro
