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
  template <bool kAdam, class G>
  void apply(S* theta, Index offset, const Eigen::MatrixBase<G>& grad) {
    const Index len = grad.size();
    auto th = Eigen::Map<Vec<S>>(theta + offset, len).array();
    if constexpr (kAdam) {
      const S b1 = S(config_.beta1), b2 = S(config_.beta2), eps = S(config_.eps);
      auto m = m_.segment(offset, len).array();
      auto v = v_.segment(offset, len).array();
      const auto g = grad_scale_ * grad.array();
      m = b1 * m + (S(1) - b1) * g;
      v = b2 * v + (S(1) - b2) * g.square();
      th -= step_ * m / (v.sqrt() * inv_sqrt_bias2_ + eps);
    } else {
      th -= (step_ * grad_scale_) * grad.array();
    }
  }

  template <class G>
  void apply(S* theta, Index offset, const Eigen::MatrixBase<G>& grad) {
    if (is_adam())
      apply<true>(theta, offset, grad);
    else
      apply<false>(theta, offset, grad);
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
