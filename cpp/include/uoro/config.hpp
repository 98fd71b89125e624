// What a learner is configured with, what one sample is, and the divergence guard's
// vocabulary: the bounds a committed value must keep and the refusal of a step that
// would break them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "uoro/common.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/readout.hpp"

namespace uoro {

enum class Algorithm { Uoro, Rtrl, Tbptt, TbpttChunk, Snap1, KfRtrl, Ok };

// What a step that would write a non-finite value does:
//  - Raise: throw Divergence; the learner is left as it was.
//  - Skip: drop the sample (counted in skipped_steps()); the learner is left as it was.
//  - Reset: forget the estimator's memory of the past (it is what explodes when the
//    learned dynamics turn expansive) and redo the step, whose gradient is then the
//    sample's own; if the forward pass itself fails, or the redone step still does, zero
//    the recurrent state as well and redo it once more; only if that fails is the sample
//    dropped (counted in skipped_steps()). Every reset is counted.
enum class DivergencePolicy { Raise, Skip, Reset };

// Consecutive dropped samples after which the binding warns that the learner may be
// stuck (once per run of refusals).
inline constexpr std::int64_t kRefusalsBeforeWarning = 100;

struct Divergence : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct LearnerConfig {
  Index input_size = 1;
  Index hidden_size = 1;
  Index output_size = 1;
  Loss loss = Loss::CrossEntropy;
  Algorithm algorithm = Algorithm::Uoro;
  Index rank = 1;             // UORO: number of (s̃, θ̃) pairs; OK: Kronecker terms per block
  Index stream_groups = 1;    // UORO over many streams: independent estimates, one per group
  Index memory = 1;           // UORO: steps of exact backpropagation per update (memory-T)
  Index truncation = 1;       // truncated BPTT: the window T
  double uoro_eps = 1e-7;     // ε of the normalizers ρ0, ρ1
  bool train_readout = true;  // false: the readout's parameters stay as set
  DivergencePolicy on_divergence = DivergencePolicy::Raise;
  OptimizerConfig optimizer;
  std::uint64_t seed = 0;
};

// One sample: input x (dense `input_size` values, or a token index when x is null)
// and target y (see Target).
template <class S>
struct Sample {
  const S* x = nullptr;
  std::int64_t x_token = -1;
  Target<S> y;
};

// Why a step was refused: what exploded, and how large it was (inf or NaN included).
struct Refusal {
  enum Kind { None, Forward, Sensitivity, Gradient };
  Kind kind = None;
  const char* what = "";
  double magnitude = 0;
  explicit operator bool() const { return kind != None; }
};

// Values past √max would overflow when squared (Adam's second moment, norms): a
// learner that reaches them has diverged.
template <class S>
constexpr S bound_value() {
  return std::numeric_limits<S>::max() > S(1e300) ? S(1e150) : S(1e18);
}
template <class Derived>
bool bounded(const Eigen::DenseBase<Derived>& x) {
  using S = typename Derived::Scalar;
  return x.derived().array().abs().maxCoeff() <= bound_value<S>();  // false for NaN too
}
template <class S, class = std::enable_if_t<std::is_floating_point_v<S>>>
bool bounded(S x) {
  return std::abs(x) <= bound_value<S>();
}
template <class Derived>
double max_abs(const Eigen::DenseBase<Derived>& x) {
  return x.size() ? double(x.derived().array().abs().maxCoeff()) : 0.0;
}

// A configuration's sizes and rates checked; invalid_argument naming the first bad one.
inline LearnerConfig validated_config(const LearnerConfig& c) {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  require(c.input_size >= 1, "input_size must be >= 1, got " + std::to_string(c.input_size));
  require(c.hidden_size >= 1, "hidden_size must be >= 1, got " + std::to_string(c.hidden_size));
  require(c.output_size >= 1, "output_size must be >= 1, got " + std::to_string(c.output_size));
  require(c.rank >= 1, "rank must be >= 1, got " + std::to_string(c.rank));
  require(c.stream_groups >= 1, "stream_groups must be >= 1, got " + std::to_string(c.stream_groups));
  require(c.memory >= 1, "memory must be >= 1, got " + std::to_string(c.memory));
  require(c.truncation >= 1, "truncation must be >= 1, got " + std::to_string(c.truncation));
  require(c.uoro_eps > 0, "uoro_eps must be > 0");
  require(c.optimizer.lr >= 0, "lr must be >= 0");
  require(c.optimizer.lr_decay >= 0, "lr_decay must be >= 0");
  require(c.optimizer.clip_norm >= 0, "clip_norm must be >= 0");
  return c;
}

// Counters: steps taken (learned from or dropped), dropped steps, resets of the
// estimator's memory (policy Reset) and of the state with it, the step index of the
// last reset (-1: none), and dropped steps since the last committed one. A step is one
// sample, or one tick of all streams.
struct LearnerCounters {
  std::int64_t samples = 0, skipped = 0, resets = 0, state_resets = 0, last_reset = -1, refused_in_a_row = 0;
  void validate() const {
    if (samples < 0 || skipped < 0 || resets < 0 || state_resets < 0 || last_reset < -1 ||
        refused_in_a_row < 0 || skipped > samples || state_resets > resets || last_reset >= samples ||
        refused_in_a_row > skipped)
      throw std::invalid_argument("inconsistent learner counters");
  }
};

// Throws Divergence for a refused step under policy Raise: what exploded, and a hint
// that fits the configuration.
[[noreturn]] inline void throw_divergence(const LearnerConfig& config, double loss, const Refusal& refusal) {
  const OptimizerConfig& opt = config.optimizer;
  std::string hints =
      "on_divergence=\"reset\" (forget the estimator's memory and go on learning), a lower lr";
  if (opt.lr_decay == 0) hints += ", a nonzero lr_decay";
  if (opt.clip_norm == 0 && refusal.kind == Refusal::Gradient) hints += ", clip_norm";
  char magnitude[32];
  std::snprintf(magnitude, sizeof magnitude, "%.3g", refusal.magnitude);
  char loss_text[32];
  std::snprintf(loss_text, sizeof loss_text, "%.6g", loss);
  throw Divergence(std::string("non-finite or exploding ") + refusal.what + ": magnitude " + magnitude +
                   " at loss " + loss_text + "; the step was refused and the learner left as it was. Try " +
                   hints);
}

}  // namespace uoro
