// A cell + readout + gradient estimator + optimizer, learning one sample per step.
//
// θ = [cell blocks..., readout block]. The readout's parameters do not influence the
// state, so their gradient is exact; the estimators track ∂s/∂θ for the cell part only.
//
// Estimators:
//  - UORO (Tallec & Ollivier 2017, Algorithm 1), rank r: r independent pairs (s̃, θ̃)
//    with E[s̃ ⊗ θ̃] = ∂s/∂θ, their gradient estimates averaged. The fused step
//    produces the gradient, the new θ̃ and the optimizer update in one pass over the
//    parameter blocks, column by column, from the outer-product factors.
//  - memory-T UORO (Section 3.4): UORO over the transition "T consecutive steps", exact
//    backpropagation inside each window of T steps, one update per window.
//  - RTRL: the exact Jacobian J = ∂s/∂θ (S × P_cell) carried forward. Cost S²·P per
//    step: a reference for small networks.
//  - truncated BPTT, two forms: `Tbptt` backpropagates the current loss through the last
//    T steps and updates at every step; `TbpttChunk` updates once every T steps with the
//    gradient of the window's summed loss (the state entering the window held fixed).
// The backpropagation through a window reads the activations stored at forward time
// and the current θ (θ only changes between steps, and not at all inside a window of the
// chunked forms, where the result is exact).
//
// Every step either commits completely or changes nothing: all values a step would write
// are checked to be finite (and bounded) before the first write, otherwise the step is
// refused (see DivergencePolicy), and the refusal says what exploded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>
#include <vector>

#include "uoro/cells.hpp"
#include "uoro/common.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/readout.hpp"

namespace uoro {

enum class Algorithm { Uoro, Rtrl, Tbptt, TbpttChunk };

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

template <class S, class Cell>
class Learner {
 public:
  explicit Learner(const LearnerConfig& config)
      : config_(validated(config)),
        cell_(config.input_size, config.hidden_size),
        cache_(cell_.make_cache()),
        readout_(config.hidden_size, config.output_size, config.loss, cell_.param_size()),
        optimizer_(config.optimizer, cell_.param_size() + readout_.block().size()),
        rng_(config.seed) {
    const Index n_state = cell_.state_size(), n_cell = cell_.param_size();
    const Index rank = config.rank;
    theta_ = Vec<S>::Zero(n_params());
    // PyTorch's default initialization for RNN cells and Linear(n, O): U(±1/√n).
    const double bound = 1.0 / std::sqrt(double(config.hidden_size));
    for (Index p = 0; p < theta_.size(); ++p) theta_(p) = S(bound * (2.0 * uniform() - 1.0));

    state_ = next_state_ = c_ = Vec<S>::Zero(n_state);
    h_ = dh_ = Vec<S>::Zero(config.hidden_size);
    // One cell column, or one chunk of readout columns (see uoro_pass).
    Index scratch = readout_chunk_columns() * readout_.block().rows;
    for (const Block& b : cell_.blocks()) scratch = std::max(scratch, b.rows);
    column_ = Vec<S>::Zero(scratch);
    for (Index k = 0; k < Cell::kBlocks; ++k) u_c_[k] = Vec<S>::Zero(cell_.blocks()[k].rows);
    // Plain UORO streams its gradient column by column and needs no θ-sized buffer.
    if (config.algorithm != Algorithm::Uoro || config.memory > 1) grad_ = Vec<S>::Zero(n_params());

    if (windowed()) {
      const Index window = window_length();
      window_.reserve(window);
      for (Index i = 0; i < window; ++i) window_.push_back(make_window_step());
      spare_ = make_window_step();
      delta_ = delta_next_ = Vec<S>::Zero(n_state);
    }
    if (config.algorithm == Algorithm::Uoro) {
      s_tilde_ = s_tilde_next_ = Mat<S>::Zero(n_state, rank);
      theta_tilde_ = Mat<S>::Zero(n_cell, rank);
      theta_tilde_norm2_ = coef_ = inv_rho0_ = inv_rho1_ = norm_acc_ = Vec<S>::Zero(rank);
      nu_ = Vec<S>::Zero(n_state);
      u_nu_.resize(rank);
      for (auto& u : u_nu_)
        for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = Vec<S>::Zero(cell_.blocks()[k].rows);
      if (config.memory > 1) {
        a_ = Vec<S>::Zero(n_cell);
        theta_tilde_next_ = Mat<S>::Zero(n_cell, rank);
      }
    } else if (config.algorithm == Algorithm::Rtrl) {
      jac_ = jac_next_ = Mat<S>::Zero(n_state, n_cell);
      dfds_ = Mat<S>::Zero(n_state, n_state);
      unit_ = Vec<S>::Zero(n_state);
      for (Index k = 0; k < Cell::kBlocks; ++k) u_unit_[k] = Mat<S>::Zero(cell_.blocks()[k].rows, n_state);
    }
  }

  // ---- sizes and configuration
  const LearnerConfig& config() const { return config_; }
  const Cell& cell() const { return cell_; }
  Index n_params() const { return cell_.param_size() + readout_.block().size(); }
  Index n_cell_params() const { return cell_.param_size(); }
  Index state_size() const { return cell_.state_size(); }

  // ---- learning

  // Learns from one sample: advances the state, estimates ∂ℓ/∂θ, updates θ.
  // With `grad_out` (n_params values) the gradient estimate is written there; with
  // update = false θ and the optimizer are left alone (the estimator still advances).
  S step(const Sample<S>& sample, S* grad_out = nullptr, bool update = true) {
    const FlushSubnormals flush;
    load_input(sample);
    for (int attempt = 0;; ++attempt) {
      S loss = 0;
      const Refusal refusal = try_step(sample.y, loss, grad_out, update);
      if (!refusal) {
        ++samples_;
        refused_in_a_row_ = 0;
        return loss;
      }
      if (config_.on_divergence != DivergencePolicy::Reset || attempt == 2) return refuse(loss, refusal);
      // Forgetting the estimator's memory cannot mend a failed forward pass; a second
      // failure zeroes the state too.
      const bool zero_state = refusal.kind == Refusal::Forward || attempt == 1;
      forget_memory();
      if (zero_state) {
        state_.setZero();
        ++state_resets_;
        attempt = 1;
      }
      ++resets_;
      last_reset_ = samples_;
    }
  }

  // The loss of a sample from the current state, without learning; the state advances
  // only when `advance` is set. The prediction is left in `prediction()`.
  S forward_only(const Sample<S>& sample, bool advance) {
    const FlushSubnormals flush;
    load_input(sample);
    cell_.forward(theta_.data(), state_, cache_, next_state_);
    cell_.hidden(next_state_, h_);
    const S loss = readout_.forward(theta_.data(), h_, sample.y);
    if (advance) std::swap(state_, next_state_);
    return loss;
  }

  // Zero recurrent state; the sensitivity ∂s/∂θ of a constant state is zero too.
  // A window in progress (chunked algorithms) is dropped with its samples.
  void reset_state() {
    state_.setZero();
    forget_memory();
  }

  // Forgets the estimator's memory of the past: UORO's s̃ and θ̃, RTRL's Jacobian, the
  // truncation windows (their steps are dropped). The estimator then goes on as a fresh
  // one would from the current state.
  void forget_memory() {
    window_head_ = window_count_ = window_pending_ = 0;
    if (config_.algorithm == Algorithm::Uoro) {
      s_tilde_.setZero();
      theta_tilde_.setZero();
      theta_tilde_norm2_.setZero();
    } else if (config_.algorithm == Algorithm::Rtrl) {
      jac_.setZero();
    }
  }

  // Class probabilities or predicted values of the last step.
  const Vec<S>& prediction() const { return readout_.output(); }
  // Counters: samples stepped through (learned from or dropped), dropped samples, resets
  // of the estimator's memory (policy Reset) and of the state with it, the sample index
  // of the last reset (-1: none), and dropped samples since the last committed step.
  struct Counters {
    std::int64_t samples = 0, skipped = 0, resets = 0, state_resets = 0, last_reset = -1,
                 refused_in_a_row = 0;
  };
  Counters counters() const {
    return {samples_, skipped_, resets_, state_resets_, last_reset_, refused_in_a_row_};
  }
  void set_counters(const Counters& c) {
    if (c.samples < 0 || c.skipped < 0 || c.resets < 0 || c.state_resets < 0 || c.last_reset < -1 ||
        c.refused_in_a_row < 0 || c.skipped > c.samples || c.state_resets > c.resets ||
        c.last_reset >= c.samples || c.refused_in_a_row > c.skipped)
      throw std::invalid_argument("inconsistent learner counters");
    samples_ = c.samples;
    skipped_ = c.skipped;
    resets_ = c.resets;
    state_resets_ = c.state_resets;
    last_reset_ = c.last_reset;
    refused_in_a_row_ = c.refused_in_a_row;
  }
  std::int64_t skipped_steps() const { return skipped_; }

  // ---- state, for inspection and checkpoints. Writers must keep shapes and finiteness
  // (the binding checks both).
  Vec<S>& theta() { return theta_; }
  Vec<S>& state() { return state_; }
  Mat<S>& s_tilde() { return s_tilde_; }
  Mat<S>& theta_tilde() { return theta_tilde_; }
  // ‖θ̃_r‖², carried from step to step (summed column by column: saved, not recomputed,
  // so a resumed run is bit-identical).
  Vec<S>& theta_tilde_norm2() { return theta_tilde_norm2_; }
  // After θ̃ is written from outside, without its carried norms.
  void refresh_theta_tilde_norms() {
    for (Index r = 0; r < theta_tilde_.cols(); ++r) theta_tilde_norm2_(r) = theta_tilde_.col(r).squaredNorm();
  }
  Mat<S>& jacobian() { return jac_; }
  Optimizer<S>& optimizer() { return optimizer_; }
  Rng& rng() { return rng_; }

  // The window of the windowed algorithms as one (T, width) matrix (row-major rows in a
  // column-major matrix: width × T), with its head, count and pending counters.
  Index window_width() {
    Index width = 0;
    if (!window_.empty()) window_[0].for_each_field([&](Vec<S>& f) { width += f.size(); });
    return width;
  }
  Index window_steps() const { return Index(window_.size()); }
  Mat<S> window_data() {
    Mat<S> out(window_width(), Index(window_.size()));
    for (Index t = 0; t < Index(window_.size()); ++t) {
      Index row = 0;
      window_[t].for_each_field([&](Vec<S>& f) {
        out.col(t).segment(row, f.size()) = f;
        row += f.size();
      });
    }
    return out;
  }
  void set_window_data(const Mat<S>& data) {
    if (data.rows() != window_width() || data.cols() != Index(window_.size()))
      throw std::invalid_argument("window data has the wrong shape");
    for (Index t = 0; t < Index(window_.size()); ++t) {
      Index row = 0;
      window_[t].for_each_field([&](Vec<S>& f) {
        f = data.col(t).segment(row, f.size());
        row += f.size();
      });
    }
  }
  std::array<Index, 3> window_counters() const { return {window_head_, window_count_, window_pending_}; }
  void set_window_counters(const std::array<Index, 3>& c) {
    const Index t = Index(window_.size());
    if (c[0] < 0 || c[1] < 0 || c[2] < 0 || (t == 0 && (c[0] || c[1] || c[2])) ||
        (t > 0 && (c[0] >= t || c[1] > t || c[2] > t)))
      throw std::invalid_argument("window counters out of range");
    window_head_ = c[0];
    window_count_ = c[1];
    window_pending_ = c[2];
  }

 private:
  // One step of a windowed algorithm's history: activations, loss cotangent on the
  // state, and the readout's gradient factors d_out ⊗ [h; 1].
  struct WindowStep {
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

  static LearnerConfig validated(const LearnerConfig& c) {
    auto require = [](bool ok, const std::string& what) {
      if (!ok) throw std::invalid_argument(what);
    };
    require(c.input_size >= 1, "input_size must be >= 1, got " + std::to_string(c.input_size));
    require(c.hidden_size >= 1, "hidden_size must be >= 1, got " + std::to_string(c.hidden_size));
    require(c.output_size >= 1, "output_size must be >= 1, got " + std::to_string(c.output_size));
    require(c.rank >= 1, "rank must be >= 1, got " + std::to_string(c.rank));
    require(c.memory >= 1, "memory must be >= 1, got " + std::to_string(c.memory));
    require(c.truncation >= 1, "truncation must be >= 1, got " + std::to_string(c.truncation));
    require(c.uoro_eps > 0, "uoro_eps must be > 0");
    require(c.optimizer.lr >= 0, "lr must be >= 0");
    require(c.optimizer.lr_decay >= 0, "lr_decay must be >= 0");
    require(c.optimizer.clip_norm >= 0, "clip_norm must be >= 0");
    return c;
  }

  double uniform() { return double(rng_.next() >> 11) * 0x1.0p-53; }

  // Values past √max would overflow when squared (Adam's second moment, norms): a
  // learner that reaches them has diverged.
  static constexpr S bound_value() { return std::numeric_limits<S>::max() > S(1e300) ? S(1e150) : S(1e18); }
  template <class Derived>
  static bool bounded(const Eigen::DenseBase<Derived>& x) {
    return x.derived().array().abs().maxCoeff() <= bound_value();  // false for NaN too
  }
  static bool bounded(S x) { return std::abs(x) <= bound_value(); }

  template <class Derived>
  static double max_abs(const Eigen::DenseBase<Derived>& x) {
    return x.size() ? double(x.derived().array().abs().maxCoeff()) : 0.0;
  }

  // A refused step: drops the sample, or throws with what exploded and a hint that fits.
  S refuse(S loss, const Refusal& refusal) {
    if (config_.on_divergence != DivergencePolicy::Raise) {
      ++skipped_;
      ++samples_;
      ++refused_in_a_row_;
      return loss;
    }
    const OptimizerConfig& opt = config_.optimizer;
    std::string hints =
        "on_divergence=\"reset\" (forget the estimator's memory and go on learning), a lower lr";
    if (opt.lr_decay == 0) hints += ", a nonzero lr_decay";
    if (opt.clip_norm == 0 && refusal.kind == Refusal::Gradient) hints += ", clip_norm";
    char magnitude[32];
    std::snprintf(magnitude, sizeof magnitude, "%.3g", refusal.magnitude);
    char loss_text[32];
    std::snprintf(loss_text, sizeof loss_text, "%.6g", double(loss));
    throw Divergence(std::string("non-finite or exploding ") + refusal.what + ": magnitude " + magnitude +
                     " at loss " + loss_text + "; the step was refused and the learner left as it was. Try " +
                     hints);
  }

  // Forward pass and estimator update; commits the step unless it returns a refusal.
  Refusal try_step(const Target<S>& y, S& loss, S* grad_out, bool update) {
    cell_.forward(theta_.data(), state_, cache_, next_state_);
    cell_.hidden(next_state_, h_);
    loss = readout_.loss_and_grad(theta_.data(), h_, y, dh_);
    cell_.hidden_vjp(h_, dh_, c_);
    if (!std::isfinite(loss)) return {Refusal::Forward, "loss", double(loss)};
    if (!bounded(next_state_)) return {Refusal::Forward, "recurrent state", max_abs(next_state_)};
    if (!bounded(c_)) return {Refusal::Forward, "loss gradient on the state", max_abs(c_)};
    Refusal refusal;
    switch (config_.algorithm) {
      case Algorithm::Uoro:
        refusal = config_.memory > 1 ? windowed_update(grad_out, update) : uoro_update(grad_out, update);
        break;
      case Algorithm::Rtrl:
        refusal = rtrl_update(grad_out, update);
        break;
      case Algorithm::Tbptt:
      case Algorithm::TbpttChunk:
        refusal = windowed_update(grad_out, update);
        break;
    }
    if (!refusal) std::swap(state_, next_state_);
    return refusal;
  }

  bool windowed() const {
    return (config_.algorithm == Algorithm::Uoro && config_.memory > 1) ||
           config_.algorithm == Algorithm::Tbptt || config_.algorithm == Algorithm::TbpttChunk;
  }
  Index window_length() const {
    return config_.algorithm == Algorithm::Uoro ? config_.memory : config_.truncation;
  }
  WindowStep make_window_step() const {
    return {cell_.make_cache(), Vec<S>::Zero(cell_.state_size()), Vec<S>::Zero(readout_.output_size()),
            Vec<S>::Zero(readout_.hidden_size() + 1)};
  }

  void load_input(const Sample<S>& sample) {
    auto x = Cell::input(cache_, config_.input_size);
    if (sample.x) {
      x = Eigen::Map<const Vec<S>>(sample.x, config_.input_size);
    } else {
      x.setZero();
      x(sample.x_token) = S(1);
    }
  }

  // Calls fn(offset, rows, v_j, k) for column j of every cell block k.
  template <class Fn>
  void for_each_cell_column(Fn&& fn) {
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Block& b = cell_.blocks()[k];
      for (Index j = 0; j < b.cols; ++j) fn(b.offset + j * b.rows, b.rows, cache_.v[k](j), k);
    }
  }

  // Adds the readout's exact gradient d_out ⊗ v into grad (its block).
  void add_readout_gradient(const Vec<S>& d_out, const Vec<S>& v, S* grad) {
    const Block& b = readout_.block();
    MatMap<S>(grad + b.offset, b.rows, b.cols).noalias() += d_out * v.transpose();
  }

  // ---- UORO

  static constexpr const char* kUoroSensitivity = "estimator's sensitivity ∂s/∂θ (UORO's s̃ ⊗ θ̃)";

  Refusal uoro_update(S* grad_out, bool update) {
    const Index rank = config_.rank;
    const S eps = S(config_.uoro_eps);
    const S nu_norm = std::sqrt(S(state_size()));  // ‖ν‖ for ±1 signs
    const auto rng_before = rng_.state();
    cell_.param_cotangents(cache_, c_, u_c_);
    S grad_bound = 0, tilde_bound = 0;  // bounds on |g| and |new θ̃| of the coming pass
    S memory_bound = 0;                 // the part of grad_bound that comes through θ̃
    S v_max[Cell::kBlocks];
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      v_max[k] = cache_.v[k].cwiseAbs().maxCoeff();
      grad_bound = std::max(grad_bound, u_c_[k].cwiseAbs().maxCoeff() * v_max[k]);
    }
    for (Index r = 0; r < rank; ++r) {
      // Tangent forward propagation; c · (∂F/∂s s̃) is the paper's δs · s̃.
      auto s_next = s_tilde_next_.col(r);
      cell_.jvp_state(theta_.data(), cache_, s_tilde_.col(r), s_next);
      coef_(r) = c_.dot(s_next) / S(rank);
      rng_.fill_signs(nu_);
      cell_.param_cotangents(cache_, nu_, u_nu_[r]);
      // ‖νᵀ ∂F/∂θ‖ from the outer-product factors: Σ_k ‖u_k‖² ‖v_k‖².
      S a_norm2 = 0, a_max = 0;
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        a_norm2 += u_nu_[r][k].squaredNorm() * cache_.v[k].squaredNorm();
        a_max = std::max(a_max, u_nu_[r][k].cwiseAbs().maxCoeff() * v_max[k]);
      }
      const S tt_norm = std::sqrt(theta_tilde_norm2_(r));
      const S rho0 = std::sqrt(tt_norm / (s_next.norm() + eps)) + eps;
      const S rho1 = std::sqrt(std::sqrt(a_norm2) / (nu_norm + eps)) + eps;
      s_next = rho0 * s_next + rho1 * nu_;  // the new s̃, committed below
      inv_rho0_(r) = S(1) / rho0;
      inv_rho1_(r) = S(1) / rho1;
      grad_bound += std::abs(coef_(r)) * tt_norm;
      memory_bound += std::abs(coef_(r)) * tt_norm;
      tilde_bound = std::max(tilde_bound, tt_norm * inv_rho0_(r) + a_max * inv_rho1_(r));
    }
    const S update_bound = S(optimizer_.learning_rate() * double(grad_bound));
    Refusal refusal;
    if (!bounded(s_tilde_next_) || !bounded(tilde_bound) || !bounded(memory_bound))
      refusal = {Refusal::Sensitivity, kUoroSensitivity,
                 std::max({max_abs(s_tilde_next_), double(tilde_bound), double(memory_bound)})};
    else if (!bounded(grad_bound))
      refusal = {Refusal::Gradient, "gradient estimate", double(grad_bound)};
    else if (!bounded(update_bound))
      refusal = {Refusal::Gradient, "parameter update", double(update_bound)};
    if (refusal) {
      rng_.set_state(rng_before);
      return refusal;
    }
    const bool adam = optimizer_.is_adam();
    if (update) optimizer_.begin(optimizer_.config().clip_norm > 0 ? uoro_gradient_norm() : 0.0);
    if (adam)
      uoro_pass<true>(grad_out, update);
    else
      uoro_pass<false>(grad_out, update);
    if (update) optimizer_.end();
    std::swap(s_tilde_, s_tilde_next_);
    return {};
  }

  // ‖g‖ of the coming step, for clipping: one read-only pass before the fused one.
  double uoro_gradient_norm() {
    double total = 0;
    for_each_cell_column([&](Index off, Index rows, S vj, Index k) {
      column_.head(rows) = u_c_[k] * vj;
      for (Index r = 0; r < config_.rank; ++r)
        column_.head(rows) += coef_(r) * theta_tilde_.col(r).segment(off, rows);
      total += double(column_.head(rows).squaredNorm());
    });
    if (config_.train_readout) total += double(readout_.d_out().squaredNorm() * readout_.v().squaredNorm());
    return std::sqrt(total);
  }

  // The fused pass: per column, g = u_c v_j + Σ_r coef_r θ̃_r (the gradient estimate,
  // computed from the old θ̃), θ̃_r ← θ̃_r / ρ0 + u_ν v_j / ρ1, θ ← optimizer(θ, g).
  template <bool kAdam>
  void uoro_pass(S* grad_out, bool update) {
    norm_acc_.setZero();
    S* __restrict g = column_.data();
    const bool fused = kAdam && update && !grad_out && config_.rank == 1;
    const auto adam = optimizer_.adam_step();
    for_each_cell_column([&](Index off, Index rows, S vj, Index k) {
      const S* __restrict uc = u_c_[k].data();
      if (fused) {  // the common case in one sweep: gradient, θ̃ and Adam per element
        fused_adam_column(uc, u_nu_[0][k].data(), theta_tilde_.data() + off, theta_.data() + off,
                          adam.m + off, adam.v + off, rows, vj, adam);
        norm_acc_(0) += Eigen::Map<const Vec<S>>(theta_tilde_.data() + off, rows).squaredNorm();
        return;
      }
      for (Index i = 0; i < rows; ++i) g[i] = uc[i] * vj;
      for (Index r = 0; r < config_.rank; ++r) {
        S* __restrict tt = theta_tilde_.col(r).data() + off;
        const S* __restrict un = u_nu_[r][k].data();
        const S coef = coef_(r), inv_rho0 = inv_rho0_(r), nu_scale = vj * inv_rho1_(r);
        for (Index i = 0; i < rows; ++i) {
          g[i] += coef * tt[i];
          tt[i] = tt[i] * inv_rho0 + un[i] * nu_scale;
        }
        norm_acc_(r) += Eigen::Map<const Vec<S>>(tt, rows).squaredNorm();
      }
      if (grad_out) std::copy(g, g + rows, grad_out + off);
      if (update) optimizer_.template apply<kAdam>(theta_.data(), off, g, rows);
    });
    theta_tilde_norm2_ = norm_acc_;
    // The readout's exact gradient d_out ⊗ v, a chunk of whole columns at a time: its
    // columns are output_size rows, often short, and the optimizer runs in full vectors
    // over a chunk where column by column it would leave a scalar tail on each.
    const Block& b = readout_.block();
    const S* __restrict d_out = readout_.d_out().data();
    const Index chunk = readout_chunk_columns();
    for (Index j0 = 0; j0 < b.cols; j0 += chunk) {
      const Index j1 = std::min(b.cols, j0 + chunk);
      for (Index j = j0; j < j1; ++j) {
        const S vj = readout_.v()(j);
        for (Index i = 0; i < b.rows; ++i) g[(j - j0) * b.rows + i] = d_out[i] * vj;
      }
      const Index off = b.offset + j0 * b.rows, len = (j1 - j0) * b.rows;
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update && config_.train_readout) optimizer_.template apply<kAdam>(theta_.data(), off, g, len);
    }
  }

  // Readout columns per chunk of the UORO pass: up to 16384 values (64 KiB in float32), so
  // the scratch stays small and in cache however large the readout.
  Index readout_chunk_columns() const {
    const Block& b = readout_.block();
    return std::min(b.cols, std::max<Index>(1, 16384 / b.rows));
  }

  template <class AdamStep>
  void fused_adam_column(const S* __restrict uc, const S* __restrict un, S* __restrict tt, S* __restrict th,
                         S* __restrict m, S* __restrict v, Index rows, S vj, const AdamStep& a) const {
    const S coef = coef_(0), inv_rho0 = inv_rho0_(0), nu_scale = vj * inv_rho1_(0);
    for (Index i = 0; i < rows; ++i) {
      const S g = a.scale * (uc[i] * vj + coef * tt[i]);
      tt[i] = tt[i] * inv_rho0 + un[i] * nu_scale;
      m[i] = a.b1 * m[i] + a.c1 * g;
      v[i] = a.b2 * v[i] + a.c2 * g * g;
      th[i] -= a.step * m[i] / (std::sqrt(v[i]) * a.bias2 + a.eps);
    }
  }

  // ---- windowed algorithms: memory-T UORO and truncated BPTT

  // Step i of the window counted back from the newest (i = 0).
  WindowStep& window_step(Index i) {
    const Index t = Index(window_.size());
    return window_[(window_head_ - 1 - i + 2 * t) % t];
  }

  // Backpropagates through the newest `len` window steps. delta_ holds the cotangent on
  // the newest state on entry and, on exit, the cotangent on the state entering the
  // oldest step. With `losses`, each step's own loss cotangent joins on the way.
  // Parameter gradients accumulate into grad (cell part).
  void backprop_window(Index len, bool losses, S* grad) {
    for (Index i = 0; i < len; ++i) {
      WindowStep& w = window_step(i);
      if (losses) delta_ += w.c;
      cell_.param_cotangents(w.cache, delta_, u_c_);
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        const Block& b = cell_.blocks()[k];
        MatMap<S>(grad + b.offset, b.rows, b.cols).noalias() += u_c_[k] * w.cache.v[k].transpose();
      }
      cell_.vjp_state(theta_.data(), w.cache, delta_, delta_next_);
      std::swap(delta_, delta_next_);
    }
  }

  Refusal windowed_update(S* grad_out, bool update) {
    // Store this step; the slot's previous content is kept in spare_ for a rollback.
    const auto counters = window_counters();
    std::swap(spare_, window_[window_head_]);
    WindowStep& slot = window_[window_head_];
    slot.cache = cache_;
    slot.c = c_;
    slot.d_out = readout_.d_out();
    slot.readout_v = readout_.v();
    const Index len = Index(window_.size());
    window_head_ = (window_head_ + 1) % len;
    window_count_ = std::min(window_count_ + 1, len);
    const bool every_step = config_.algorithm == Algorithm::Tbptt;
    window_pending_ = every_step ? 0 : window_pending_ + 1;

    if (!every_step && window_pending_ < len) {  // mid-window: nothing to apply yet
      if (grad_out) Eigen::Map<Vec<S>>(grad_out, n_params()).setZero();
      return {};
    }
    const auto rng_before = rng_.state();
    grad_.setZero();
    if (every_step) {
      add_readout_gradient(slot.d_out, slot.readout_v, grad_.data());
      delta_ = c_;
      backprop_window(window_count_, /*losses=*/false, grad_.data());
    } else {
      for (Index i = 0; i < len; ++i)
        add_readout_gradient(window_step(i).d_out, window_step(i).readout_v, grad_.data());
      delta_.setZero();
      backprop_window(len, /*losses=*/true, grad_.data());
    }
    const bool memory_uoro = config_.algorithm == Algorithm::Uoro;
    if (memory_uoro) uoro_window_candidates();
    Refusal refusal;
    if (memory_uoro && (!bounded(s_tilde_next_) || !bounded(theta_tilde_next_)))
      refusal = {Refusal::Sensitivity, kUoroSensitivity,
                 std::max(max_abs(s_tilde_next_), max_abs(theta_tilde_next_))};
    else if (!bounded(grad_))
      refusal = {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    if (refusal) {
      std::swap(spare_, window_[counters[0]]);
      set_window_counters(counters);
      rng_.set_state(rng_before);
      return refusal;
    }
    if (memory_uoro) {
      std::swap(s_tilde_, s_tilde_next_);
      std::swap(theta_tilde_, theta_tilde_next_);
      refresh_theta_tilde_norms();
    }
    window_pending_ = 0;
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, n_params()) = grad_;
    if (update) apply_gradient();
    return {};
  }

  // Memory-T UORO at the end of a window, with grad_ holding the window's exact
  // in-window gradient and delta_ the cotangent on the state entering the window: adds
  // the rank-one term to grad_ and writes the new (s̃, θ̃) to s_tilde_next_ and
  // theta_tilde_next_ (committed by the caller).
  void uoro_window_candidates() {
    const Index rank = config_.rank, len = Index(window_.size());
    const S eps = S(config_.uoro_eps);
    const S nu_norm = std::sqrt(S(state_size()));
    // Gradient first, from the old θ̃: g += Σ_r (δs · s̃_r / r) θ̃_r.
    for (Index r = 0; r < rank; ++r)
      grad_.head(n_cell_params()) += (delta_.dot(s_tilde_.col(r)) / S(rank)) * theta_tilde_.col(r);
    for (Index r = 0; r < rank; ++r) {
      // Tangent forward propagation through the window, oldest step first.
      delta_ = s_tilde_.col(r);
      for (Index i = len - 1; i >= 0; --i) {
        cell_.jvp_state(theta_.data(), window_step(i).cache, delta_, delta_next_);
        std::swap(delta_, delta_next_);
      }
      // a = νᵀ ∂F^T/∂θ: backpropagate the signs from the window's last state.
      rng_.fill_signs(nu_);
      a_.setZero();
      const S tangent_norm = delta_.norm();
      s_tilde_next_.col(r) = delta_;
      delta_ = nu_;
      backprop_window(len, /*losses=*/false, a_.data());
      const S rho0 = std::sqrt(std::sqrt(theta_tilde_norm2_(r)) / (tangent_norm + eps)) + eps;
      const S rho1 = std::sqrt(a_.norm() / (nu_norm + eps)) + eps;
      s_tilde_next_.col(r) = rho0 * s_tilde_next_.col(r) + rho1 * nu_;
      theta_tilde_next_.col(r) = theta_tilde_.col(r) / rho0 + a_ / rho1;
    }
  }

  void apply_gradient() {
    const auto applied = grad_.head(config_.train_readout ? n_params() : n_cell_params());
    optimizer_.begin(optimizer_.config().clip_norm > 0 ? double(applied.norm()) : 0.0);
    optimizer_.apply(theta_.data(), 0, applied);
    optimizer_.end();
  }

  // ---- RTRL

  // J ← (∂F/∂s) J + ∂F/∂θ, then g = cᵀ J (+ the readout's exact gradient).
  Refusal rtrl_update(S* grad_out, bool update) {
    const Index n_state = state_size();
    for (Index i = 0; i < n_state; ++i) {
      unit_.setZero();
      unit_(i) = S(1);
      cell_.jvp_state(theta_.data(), cache_, unit_, dfds_.col(i));
      cell_.param_cotangents(cache_, unit_, u_c_);
      for (Index k = 0; k < Cell::kBlocks; ++k) u_unit_[k].col(i) = u_c_[k];
    }
    jac_next_.noalias() = dfds_ * jac_;
    // Row i of ∂F/∂θ, block k, column j is u_k(e_i) v_k[j]: add U_kᵀ v_k[j] per column.
    for_each_cell_column([&](Index off, Index rows, S vj, Index k) {
      jac_next_.middleCols(off, rows).noalias() += vj * u_unit_[k].transpose();
    });
    grad_.setZero();
    grad_.head(n_cell_params()).noalias() = jac_next_.transpose() * c_;
    add_readout_gradient(readout_.d_out(), readout_.v(), grad_.data());
    if (!bounded(jac_next_))
      return {Refusal::Sensitivity, "estimator's sensitivity ∂s/∂θ (RTRL's Jacobian)", max_abs(jac_next_)};
    if (!bounded(grad_)) return {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    std::swap(jac_, jac_next_);
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, n_params()) = grad_;
    if (update) apply_gradient();
    return {};
  }

  LearnerConfig config_;
  Cell cell_;
  typename Cell::Cache cache_;
  Readout<S> readout_;
  Optimizer<S> optimizer_;
  Rng rng_;
  std::int64_t samples_ = 0, skipped_ = 0, resets_ = 0, state_resets_ = 0, last_reset_ = -1,
               refused_in_a_row_ = 0;

  Vec<S> theta_, state_, next_state_;
  Vec<S> h_, dh_, c_;  // hidden output, ∂ℓ/∂h, ∂ℓ/∂s'
  Vec<S> column_;      // gradient scratch: one cell column, or a chunk of readout columns
  Vec<S> grad_;        // the full gradient, where an estimator materializes it
  std::array<Vec<S>, Cell::kBlocks> u_c_;

  // UORO, one column per rank
  Mat<S> s_tilde_, s_tilde_next_, theta_tilde_, theta_tilde_next_;
  Vec<S> theta_tilde_norm2_, coef_, inv_rho0_, inv_rho1_, norm_acc_, nu_;
  std::vector<std::array<Vec<S>, Cell::kBlocks>> u_nu_;

  // Windowed algorithms: a ring of the last T steps.
  std::vector<WindowStep> window_;
  WindowStep spare_;
  Index window_head_ = 0;     // next slot to write
  Index window_count_ = 0;    // valid steps in the ring
  Index window_pending_ = 0;  // steps since the last update (chunked forms)
  Vec<S> delta_, delta_next_, a_;

  // RTRL
  Mat<S> jac_, jac_next_, dfds_;
  Vec<S> unit_;
  std::array<Mat<S>, Cell::kBlocks> u_unit_;
};

}  // namespace uoro
