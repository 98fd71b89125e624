// Truncated backpropagation through time, two forms: every step (`Tbptt`: the current
// loss backpropagated through the last T steps, θ updated at every step) or chunked
// (`TbpttChunk`: once every T steps, the gradient of the window's summed loss, the state
// entering the window held fixed). No memory beyond the window.
#pragma once

#include "uoro/estimators/window.hpp"

namespace uoro {

template <class S, class Cell>
class Tbptt {
 public:
  Tbptt(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout)
      : every_step_(config.algorithm == Algorithm::Tbptt), window_(cell, readout, config.truncation) {}

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    NothingBeyond nothing;
    return window_.update(m, grad_out, update, every_step_, nothing);
  }
  // The two halves of `update`, for a learner that steps several streams before it
  // decides to keep the tick: `due` says whether gradient() holds a gradient.
  Refusal propose(Model<S, Cell>& m, bool& due) {
    NothingBeyond nothing;
    return window_.propose(m, every_step_, nothing, due);
  }
  void commit() {
    NothingBeyond nothing;
    window_.commit(nothing);
  }
  void rollback() { window_.rollback(); }
  void enable_proposals() {}
  const Vec<S>& gradient() { return window_.grad(); }

  void forget() { window_.forget(); }
  template <class Fn>
  void for_each_array(Fn&&) {}
  void arrays_written(bool) {}
  Window<S, Cell>* window() { return &window_; }

 private:
  struct NothingBeyond {  // the past before the window is cut off
    Refusal propose(Model<S, Cell>&, Window<S, Cell>&) { return {}; }
    void commit() {}
  };

  bool every_step_;
  Window<S, Cell> window_;
};

}  // namespace uoro
