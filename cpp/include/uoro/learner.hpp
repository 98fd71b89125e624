// A cell + readout + gradient estimator + optimizer, learning one sample per step.
//
// θ = [cell blocks..., readout block]. The readout's parameters do not influence the
// state, so their gradient is exact; the estimators track ∂s/∂θ for the cell part only.
// The learner runs the forward pass and the divergence policy; the estimator (see
// estimator.hpp) turns each step into a gradient and an update:
//  - estimators/uoro.hpp: UORO, rank r, fused with the optimizer;
//  - estimators/memory_uoro.hpp: memory-T UORO;
//  - estimators/rtrl.hpp: exact RTRL;
//  - estimators/snap1.hpp: SnAp-1, the one-step sparse approximation of RTRL;
//  - estimators/kronecker.hpp: KF-RTRL and OK, unbiased Kronecker-factored influence;
//  - estimators/tbptt.hpp: truncated BPTT, every step or chunked.
//
// Every step either commits completely or changes nothing: all values a step would write
// are checked to be finite (and bounded) before the first write, otherwise the step is
// refused (see DivergencePolicy), and the refusal says what exploded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <variant>

#include "uoro/cells.hpp"
#include "uoro/common.hpp"
#include "uoro/config.hpp"
#include "uoro/estimator.hpp"
#include "uoro/estimators/kronecker.hpp"
#include "uoro/estimators/memory_uoro.hpp"
#include "uoro/estimators/rtrl.hpp"
#include "uoro/estimators/snap1.hpp"
#include "uoro/estimators/tbptt.hpp"
#include "uoro/estimators/uoro.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/readout.hpp"
#include "uoro/user_cell.hpp"

namespace uoro {

template <class S, class Cell>
class Learner {
 public:
  explicit Learner(const LearnerConfig& config)
      : Learner(config, Cell(config.input_size, config.hidden_size)) {}
  // With a cell built by the caller (a user cell, which needs its functions).
  Learner(const LearnerConfig& config, Cell cell)
      : config_(validated_config(config)),
        cell_(std::move(cell)),
        cache_(cell_.make_cache()),
        readout_(config.hidden_size, config.output_size, config.loss, cell_.param_size()),
        optimizer_(config.optimizer, cell_.param_size() + readout_.block().size()),
        rng_(config.seed),
        estimator_(make_estimator(config_, cell_, readout_)),
        model_{config_,      cell_, cache_, readout_,   readout_.d_out(),
               readout_.v(), c_,    theta_, optimizer_, rng_} {
    const Index n_state = cell_.state_size();
    theta_ = Vec<S>::Zero(n_params());
    // PyTorch's default initialization for RNN cells and Linear(n, O): U(±1/√n).
    const double bound = 1.0 / std::sqrt(double(config.hidden_size));
    for (Index p = 0; p < theta_.size(); ++p) theta_(p) = S(bound * (2.0 * uniform() - 1.0));
    state_ = next_state_ = c_ = Vec<S>::Zero(n_state);
    h_ = dh_ = Vec<S>::Zero(config.hidden_size);
  }
  // The model view holds references to the members.
  Learner(const Learner&) = delete;
  Learner& operator=(const Learner&) = delete;

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
      drop_folded_products();
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
    drop_folded_products();
    load_input(sample);
    cell_forward();
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
    drop_folded_products();
    std::visit([](auto& e) { e.forget(); }, estimator_);
  }

  // Class probabilities or predicted values of the last step.
  const Vec<S>& prediction() const { return readout_.output(); }

  using Counters = LearnerCounters;
  Counters counters() const {
    return {samples_, skipped_, resets_, state_resets_, last_reset_, refused_in_a_row_};
  }
  void set_counters(const Counters& c) {
    c.validate();
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
  Vec<S>& theta() {
    drop_folded_products();
    return theta_;
  }
  Vec<S>& state() {
    drop_folded_products();
    return state_;
  }
  Optimizer<S>& optimizer() { return optimizer_; }
  Rng& rng() { return rng_; }

  // fn(name, array) for each array of the estimator's memory (Mat or Vec).
  template <class Fn>
  void for_each_estimator_array(Fn&& fn) {
    drop_folded_products();
    std::visit([&](auto& e) { e.for_each_array(fn); }, estimator_);
  }
  // After a checkpoint wrote estimator arrays (`all`: every one of them).
  void estimator_arrays_written(bool all) {
    drop_folded_products();
    std::visit([&](auto& e) { e.arrays_written(all); }, estimator_);
  }

  // The window of the windowed algorithms as one (T, width) matrix (row-major rows in a
  // column-major matrix: width × T), with its head, count and pending counters; empty
  // and zero for the others.
  Index window_width() { return window() ? window()->width() : 0; }
  Index window_steps() { return window() ? window()->length() : 0; }
  Mat<S> window_data() { return window() ? window()->data() : Mat<S>(0, 0); }
  void set_window_data(const Mat<S>& data) {
    if (window())
      window()->set_data(data);
    else if (data.size())
      throw std::invalid_argument("window data has the wrong shape");
  }
  std::array<Index, 3> window_counters() {
    return window() ? window()->counters() : std::array<Index, 3>{0, 0, 0};
  }
  void set_window_counters(const std::array<Index, 3>& c) {
    if (window())
      window()->set_counters(c);
    else if (c[0] || c[1] || c[2])
      throw std::invalid_argument("window counters out of range");
  }

 private:
  using Estimator = std::variant<Uoro<S, Cell>, MemoryUoro<S, Cell>, Rtrl<S, Cell>, Tbptt<S, Cell>,
                                 Snap1<S, Cell>, Kronecker<S, Cell>>;

  static Estimator make_estimator(const LearnerConfig& c, const Cell& cell, const Readout<S>& readout) {
    switch (estimator_for<Cell>(c.algorithm)) {
      case Algorithm::Uoro:
        if (c.memory > 1) return Estimator(std::in_place_type<MemoryUoro<S, Cell>>, c, cell, readout);
        return Estimator(std::in_place_type<Uoro<S, Cell>>, c, cell, readout);
      case Algorithm::Rtrl:
        return Estimator(std::in_place_type<Rtrl<S, Cell>>, c, cell, readout);
      case Algorithm::Snap1:
        return Estimator(std::in_place_type<Snap1<S, Cell>>, c, cell, readout);
      case Algorithm::KfRtrl:
      case Algorithm::Ok:
        return Estimator(std::in_place_type<Kronecker<S, Cell>>, c, cell, readout);
      default:
        return Estimator(std::in_place_type<Tbptt<S, Cell>>, c, cell, readout);
    }
  }

  Window<S, Cell>* window() {
    return std::visit([](auto& e) { return e.window(); }, estimator_);
  }

  double uniform() { return double(rng_.next() >> 11) * 0x1.0p-53; }

  // The recurrent products a pass folded in for the next step (FoldedProducts) are valid
  // only for the θ, state and s̃ it left; anything else that may write them drops them
  // (the cell then computes them itself: the same bits, see column_product).
  void drop_folded_products() {
    if constexpr (FoldsProducts<Cell>::value) cell_.folded.drop();
  }

  // A refused step: drops the sample, or throws with what exploded and a hint that fits.
  S refuse(S loss, const Refusal& refusal) {
    if (config_.on_divergence != DivergencePolicy::Raise) {
      ++skipped_;
      ++samples_;
      ++refused_in_a_row_;
      return loss;
    }
    throw_divergence(config_, double(loss), refusal);
  }

  // Forward pass and estimator update; commits the step unless it returns a refusal.
  Refusal try_step(const Target<S>& y, S& loss, S* grad_out, bool update) {
    cell_forward();
    cell_.hidden(next_state_, h_);
    loss = readout_.loss_and_grad(theta_.data(), h_, y, dh_);
    cell_.hidden_vjp(h_, dh_, c_);
    if (!std::isfinite(loss)) return {Refusal::Forward, "loss", double(loss)};
    if (!bounded(next_state_)) return {Refusal::Forward, "recurrent state", max_abs(next_state_)};
    if (!bounded(c_)) return {Refusal::Forward, "loss gradient on the state", max_abs(c_)};
    const auto rng_before = rng_.state();
    Refusal refusal;
    try {  // a user cell's functions may throw; the estimators commit nothing before them
      refusal = std::visit([&](auto& e) { return e.update(model_, grad_out, update); }, estimator_);
    } catch (...) {
      rng_.set_state(rng_before);
      throw;
    }
    if (!refusal) std::swap(state_, next_state_);
    return refusal;
  }

  void load_input(const Sample<S>& sample) {
    auto x = Cell::input(cache_, config_.input_size);
    token_ = sample.x ? -1 : Index(sample.x_token);
    if (sample.x) {
      x = Eigen::Map<const Vec<S>>(sample.x, config_.input_size);
    } else {
      x.setZero();
      x(sample.x_token) = S(1);
    }
  }

  // The cell's forward pass, the input's column gathered when it is one-hot (a cell whose
  // input is a factor column can; the same values as the product, one column read).
  void cell_forward() {
    if constexpr (Cell::kInputInFactor)
      cell_.forward(theta_.data(), state_, cache_, next_state_, token_ >= 0 ? &token_ : nullptr);
    else
      cell_.forward(theta_.data(), state_, cache_, next_state_);
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
  Index token_ = -1;   // this sample's input symbol, or −1 for a dense input
  Estimator estimator_;
  Model<S, Cell> model_;
};

}  // namespace uoro
