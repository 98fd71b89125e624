// What a learner is configured with, what one sample is, and the divergence guard's
// vocabulary: the bounds a committed value must keep and the refusal of a step that
// would break them.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "uoro/common.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/readout.hpp"

namespace uoro {

enum class Algorithm { Uoro, Rtrl, Tbptt, TbpttChunk, Snap1 };

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
  Index rank = 1;             // UORO: number of (s̃, θ̃) pairs
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

}  // namespace uoro
