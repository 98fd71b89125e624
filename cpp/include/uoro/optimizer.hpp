// SGD and Adam with the paper's schedule η_t = η / (1 + α √t), applied segment by
// segment so an estimator can stream its gradient into the update without
// materializing it.
#pragma once

#include <cmath>

#include "uoro/common.hpp"

namespace uoro {

enum class OptimizerKind { Sgd, Adam };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::Adam;
  double lr = 1e-3;
  double lr_decay = 0.0;  // α in η_t = η / (1 + α √t)
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip_norm = 0.0;  // 0: no clipping
};

// An IEEE square root of one Eigen packet, for Adam's per-element loops written with
// packets (Eigen's own psqrt for float may be an approximation): the instruction where
// there is one, else lane by lane.
template <class P>
P exact_sqrt(const P& x) {
  using T = typename Eigen::internal::unpacket_traits<P>::type;
  constexpr int kLanes = Eigen::internal::unpacket_traits<P>::size;
  alignas(64) T lanes[kLanes];
  Eigen::internal::pstoreu(lanes, x);
  for (T& lane : lanes) lane = std::sqrt(lane);
  return Eigen::internal::ploadu<P>(lanes);
}
#if defined(__AVX512F__)
inline Eigen::internal::Packet16f exact_sqrt(const Eigen::internal::Packet16f& x) {
  return _mm512_sqrt_ps(x);
}
inline Eigen::internal::Packet8d exact_sqrt(const Eigen::internal::Packet8d& x) { return _mm512_sqrt_pd(x); }
#endif
#if defined(__AVX__)
inline Eigen::internal::Packet8f exact_sqrt(const Eigen::internal::Packet8f& x) { return _mm256_sqrt_ps(x); }
inline Eigen::internal::Packet4d exact_sqrt(const Eigen::internal::Packet4d& x) { return _mm256_sqrt_pd(x); }
#endif
#if defined(__SSE2__)
inline Eigen::internal::Packet4f exact_sqrt(const Eigen::internal::Packet4f& x) { return _mm_sqrt_ps(x); }
inline Eigen::internal::Packet2d exact_sqrt(const Eigen::internal::Packet2d& x) { return _mm_sqrt_pd(x); }
#endif

template <class S>
class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, Index n_params) : config_(config) {
    if (config.kind == OptimizerKind::Adam) {
      m_ = Vec<S>::Zero(n_params);
      v_ = Vec<S>::Zero(n_params);
    }
  }

  const OptimizerConfig& config() const { return config_; }
  bool is_adam() const { return config_.kind == OptimizerKind::Adam; }

  // Updates done so far; the t of the schedule and of Adam's bias correction.
  std::int64_t steps() const { return steps_; }
  double learning_rate() const { return config_.lr / (1.0 + config_.lr_decay * std::sqrt(double(steps_))); }

  // Before the segments of one update: `grad_norm` is used only when clipping.
  void begin(double grad_norm = 0.0) {
    double scale = 1.0;
    if (config_.clip_norm > 0.0 && grad_norm > config_.clip_norm) scale = config_.clip_norm / grad_norm;
    const double lr = learning_rate();
    grad_scale_ = S(scale);
    if (is_adam()) {
      const double t = double(steps_ + 1);
      step_ = S(lr / (1.0 - std::pow(config_.beta1, t)));
      inv_sqrt_bias2_ = S(1.0 / std::sqrt(1.0 - std::pow(config_.beta2, t)));
    } else {
      step_ = S(lr);
    }
  }

  // θ[offset : offset + len] -= update(grad), grad an Eigen vector of length len.
  // θ[offset : offset + len] -= update(grad). One plain loop the compiler vectorizes:
  // each element is read and written once (Adam is bound by its sqrt and division).
  template <bool kAdam>
  void apply(S* __restrict theta, Index offset, const S* __restrict grad, Index len) {
    S* __restrict th = theta + offset;
    if constexpr (kAdam) {
      const S b1 = S(config_.beta1), b2 = S(config_.beta2), eps = S(config_.eps);
      const S c1 = S(1) - b1, c2 = S(1) - b2, scale = grad_scale_, step = step_, bias2 = inv_sqrt_bias2_;
      S* __restrict m = m_.data() + offset;
      S* __restrict v = v_.data() + offset;
      for (Index i = 0; i < len; ++i) {
        const S g = scale * grad[i];
        m[i] = b1 * m[i] + c1 * g;
        v[i] = b2 * v[i] + c2 * g * g;
        th[i] -= step * m[i] / (std::sqrt(v[i]) * bias2 + eps);
      }
    } else {
      const S step = step_ * grad_scale_;
      for (Index i = 0; i < len; ++i) th[i] -= step * grad[i];
    }
  }

  // Adam's constants for the current update, for estimators that fuse Adam into their
  // own per-element loop (see Learner::uoro_pass); same arithmetic as apply<true>.
  struct AdamStep {
    S b1, b2, c1, c2, scale, step, bias2, eps;
    S* m;
    S* v;
  };
  AdamStep adam_step() {
    const S b1 = S(config_.beta1), b2 = S(config_.beta2);
    return {b1,        b2,       S(1) - b1, S(1) - b2, grad_scale_, step_, inv_sqrt_bias2_, S(config_.eps),
            m_.data(), v_.data()};
  }

  // The same for a gradient held in an Eigen vector (contiguous).
  template <class G>
  void apply(S* theta, Index offset, const Eigen::DenseBase<G>& grad) {
    if (is_adam())
      apply<true>(theta, offset, grad.derived().data(), grad.size());
    else
      apply<false>(theta, offset, grad.derived().data(), grad.size());
  }

  void end() { ++steps_; }

  // Checkpoint access.
  Vec<S>& first_moment() { return m_; }
  Vec<S>& second_moment() { return v_; }
  void set_steps(std::int64_t t) {
    if (t < 0) throw std::invalid_argument("optimizer step count must be >= 0");
    steps_ = t;
  }

 private:
  OptimizerConfig config_;
  Vec<S> m_, v_;
  std::int64_t steps_ = 0;
  S grad_scale_ = S(1), step_ = S(0), inv_sqrt_bias2_ = S(1);
};

}  // namespace uoro
