// A learner over B concurrent streams that share one model (see streams.hpp): θ, the
// readout and the optimizer are shared; each stream has its own recurrent state, a
// column of the (S, B) state matrix, and the cell runs on all columns at once. At each
// tick every stream present gets one sample; the tick's loss is the mean of their losses
// and θ is updated once per tick with the gradient of that mean. A stream absent from a
// tick (mask) does not advance, adds no loss and no gradient.
//
// Estimators: UORO rank r as one system over all streams (estimators/uoro_streams.hpp),
// memory-T UORO with one window per stream (estimators/memory_uoro_streams.hpp), RTRL,
// SnAp-1, KF-RTRL/OK and truncated BPTT (every step or chunked) one per stream. The
// divergence guard works on the whole tick: a refused tick changes nothing for any stream.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "uoro/cells.hpp"
#include "uoro/config.hpp"
#include "uoro/estimators/kronecker.hpp"
#include "uoro/estimators/memory_uoro_streams.hpp"
#include "uoro/estimators/rtrl.hpp"
#include "uoro/estimators/snap1.hpp"
#include "uoro/estimators/snap1_streams.hpp"
#include "uoro/estimators/tbptt.hpp"
#include "uoro/estimators/uoro_streams.hpp"
#include "uoro/products.hpp"
#include "uoro/streams.hpp"
#include "uoro/user_cell.hpp"

namespace uoro {

template <class S, class Cell>
class StreamsLearner {
 public:
  StreamsLearner(const LearnerConfig& config, Index streams)
      : StreamsLearner(config, streams, Cell(config.input_size, config.hidden_size)) {}
  // With a cell built by the caller (a user cell, which needs its functions).
  StreamsLearner(const LearnerConfig& config, Index streams, Cell cell)
      : config_(validated(config, streams)),
        cell_(std::move(cell)),
        readout_(config.hidden_size, config.output_size, config.loss, cell_.param_size()),
        optimizer_(config.optimizer, cell_.param_size() + readout_.block().size()),
        rng_(config.seed),
        batch_(cell_.make_batch(streams)),
        estimator_(make_estimator(config_, cell_, readout_, streams)) {
    // The same initialization as a single-stream learner with the same seed.
    theta_ = Vec<S>::Zero(n_params());
    const double bound = 1.0 / std::sqrt(double(config.hidden_size));
    for (Index p = 0; p < theta_.size(); ++p) theta_(p) = S(bound * (2.0 * uniform() - 1.0));
    lanes_.reserve(streams);
    for (Index b = 0; b < streams; ++b) lanes_.emplace_back(cell_, readout_);
    present_.reserve(streams);
    absent_.reserve(streams);
    tokens_.assign(streams, -1);
    cell_.reserve_streams(streams);
    states_ = next_ = c_ = Mat<S>::Zero(cell_.state_size(), streams);
    dh_ = Mat<S>::Zero(cell_.hidden_size(), streams);
    readout_in_ = Mat<S>::Ones(cell_.hidden_size() + 1, streams);
    out_ = d_out_ = predictions_ = Mat<S>::Zero(config.output_size, streams);
    const Index padded = padded_rows(config.output_size, kernel_row_multiple<S>());
    readout_w_ = Mat<S>::Zero(padded, config.hidden_size + 1);
    readout_wt_ = Mat<S>::Zero(config.hidden_size, config.output_size);
    out_padded_ = Mat<S>::Zero(padded, streams);
    readout_.reserve_streams(streams);
  }
  StreamsLearner(const StreamsLearner&) = delete;
  StreamsLearner& operator=(const StreamsLearner&) = delete;

  const LearnerConfig& config() const { return config_; }
  const Cell& cell() const { return cell_; }
  Index streams() const { return Index(lanes_.size()); }
  Index n_params() const { return cell_.param_size() + readout_.block().size(); }
  Index n_cell_params() const { return cell_.param_size(); }
  Index state_size() const { return cell_.state_size(); }

  // One tick: samples[b] for each stream b with mask[b] set (all when mask is null).
  // losses[b] receives each present stream's loss, NaN for the others. With grad_out
  // (n_params values) the tick's gradient estimate is written there; with update = false
  // θ and the optimizer are left alone. A tick without any stream present changes nothing.
  void step(const Sample<S>* samples, const bool* mask, S* losses, S* grad_out = nullptr,
            bool update = true) {
    const FlushSubnormals flush;
    if (!select(mask, losses)) {
      if (grad_out) Eigen::Map<Vec<S>>(grad_out, n_params()).setZero();
      return;
    }
    load_inputs(samples);
    for (int attempt = 0;; ++attempt) {
      const Refusal refusal = try_tick(samples, losses, grad_out, update);
      if (!refusal) {
        ++counters_.samples;
        counters_.refused_in_a_row = 0;
        return;
      }
      if (config_.on_divergence != DivergencePolicy::Reset || attempt == 2) return refuse(losses, refusal);
      // As for one stream: forget the estimator's memory, and after a failed forward pass
      // or a second failure zero the states of the streams present too.
      const bool zero_state = refusal.kind == Refusal::Forward || attempt == 1;
      forget_memory();
      if (zero_state) {
        for (Index b : present_) states_.col(b).setZero();
        ++counters_.state_resets;
        attempt = 1;
      }
      ++counters_.resets;
      counters_.last_reset = counters_.samples;
    }
  }

  // Each present stream's loss from its current state, without learning; the states
  // advance only when `advance` is set. Predictions are left in prediction(b).
  void forward_only(const Sample<S>* samples, const bool* mask, bool advance, S* losses) {
    const FlushSubnormals flush;
    if (!select(mask, losses)) return;
    load_inputs(samples);
    cell_forward();
    readout_forward(samples, losses);
    if (advance) commit_states();
  }

  // Zero state for the streams with which[b] set (all when null), and their part of the
  // estimator's memory (the sensitivity of a constant state is zero; windows are dropped).
  void reset_state(const bool* which = nullptr) {
    for (Index b = 0; b < streams(); ++b)
      if (!which || which[b]) {
        states_.col(b).setZero();
        std::visit([b](auto& e) { e.forget_stream(b); }, estimator_);
      }
  }
  void forget_memory() {
    std::visit([](auto& e) { e.forget(); }, estimator_);
  }

  auto prediction(Index b) const { return predictions_.col(b); }

  using Counters = LearnerCounters;  // in ticks
  Counters counters() const { return counters_; }
  void set_counters(const Counters& c) {
    c.validate();
    counters_ = c;
  }

  // ---- state, for inspection and checkpoints
  Vec<S>& theta() { return theta_; }
  auto state(Index b) { return states_.col(b); }
  Optimizer<S>& optimizer() { return optimizer_; }
  Rng& rng() { return rng_; }

  template <class Fn>
  void for_each_estimator_array(Fn&& fn) {
    std::visit([&](auto& e) { e.for_each_array(fn); }, estimator_);
  }
  void estimator_arrays_written(bool all) {
    std::visit([&](auto& e) { e.arrays_written(all); }, estimator_);
  }
  // Stream b's truncation window (truncated BPTT), or nullptr.
  Window<S, Cell>* window(Index b) {
    return std::visit([b](auto& e) { return e.window(b); }, estimator_);
  }

 private:
  using Estimator = std::variant<UoroStreams<S, Cell>, MemoryUoroStreams<S, Cell>,
                                 PerStream<S, Cell, Rtrl<S, Cell>>, Snap1Streams<S, Cell>,
                                 PerStream<S, Cell, Tbptt<S, Cell>>, PerStream<S, Cell, Kronecker<S, Cell>>>;

  static LearnerConfig validated(const LearnerConfig& c, Index streams) {
    if (streams < 1) throw std::invalid_argument("streams must be >= 1, got " + std::to_string(streams));
    return validated_config(c);
  }

  static Estimator make_estimator(const LearnerConfig& c, const Cell& cell, const Readout<S>& readout,
                                  Index streams) {
    switch (estimator_for<Cell>(c.algorithm)) {
      case Algorithm::Uoro:
        if (c.memory > 1)
          return Estimator(std::in_place_type<MemoryUoroStreams<S, Cell>>, c, cell, readout, streams);
        return Estimator(std::in_place_type<UoroStreams<S, Cell>>, c, cell, readout, streams);
      case Algorithm::Snap1:
        return Estimator(std::in_place_type<Snap1Streams<S, Cell>>, c, cell, readout, streams);
      case Algorithm::Rtrl:
        return Estimator(std::in_place_type<PerStream<S, Cell, Rtrl<S, Cell>>>, c, cell, readout, streams);
      case Algorithm::KfRtrl:
      case Algorithm::Ok:
        return Estimator(std::in_place_type<PerStream<S, Cell, Kronecker<S, Cell>>>, c, cell, readout,
                         streams);
      default:
        return Estimator(std::in_place_type<PerStream<S, Cell, Tbptt<S, Cell>>>, c, cell, readout, streams);
    }
  }

  double uniform() { return double(rng_.next() >> 11) * 0x1.0p-53; }

  // Lists the streams present and absent; false if none is present. Absent streams'
  // losses are NaN.
  bool select(const bool* mask, S* losses) {
    present_.clear();
    absent_.clear();
    for (Index b = 0; b < streams(); ++b) {
      losses[b] = std::numeric_limits<S>::quiet_NaN();
      (!mask || mask[b] ? present_ : absent_).push_back(b);
    }
    return !present_.empty();
  }

  // Absent streams get a zero input: their columns are computed with the others' and
  // then left uncommitted. Notes the symbols when every present input is one-hot.
  void load_inputs(const Sample<S>* samples) {
    auto x = Cell::input(batch_, config_.input_size);
    x.setZero();
    std::fill(tokens_.begin(), tokens_.end(), Index(-1));
    one_hot_ = true;
    for (Index b : present_) {
      if (samples[b].x) {
        x.col(b) = Eigen::Map<const Vec<S>>(samples[b].x, config_.input_size);
        one_hot_ = false;
      } else {
        x(samples[b].x_token, b) = S(1);
        tokens_[b] = Index(samples[b].x_token);
      }
    }
  }

  // The cell on every stream, the input's columns gathered when the inputs are one-hot.
  // With `factors`, the cell's shared factors too (a cell that has them).
  void cell_forward(Mat<S>* factors = nullptr) {
    const Index* tokens = one_hot_ ? tokens_.data() : nullptr;
    if constexpr (HasSharedFactors<S, Cell>::value)
      cell_.forward(theta_.data(), states_, batch_, next_, tokens, factors);
    else if constexpr (Cell::kInputInFactor)
      cell_.forward(theta_.data(), states_, batch_, next_, tokens);
    else
      cell_.forward(theta_.data(), states_, batch_, next_);
  }

  // Where a learning tick's forward pass leaves the cell's shared factors: the UORO
  // estimator's, on a cell that has them (see UoroStreams::factors); else null.
  Mat<S>* estimator_factors() {
    if constexpr (HasSharedFactors<S, Cell>::value)
      if (auto* e = std::get_if<UoroStreams<S, Cell>>(&estimator_)) return &e->factors();
    return nullptr;
  }

  // The new states of the streams present become their states.
  void commit_states() {
    if (absent_.empty())
      states_.swap(next_);
    else
      for (Index b : present_) states_.col(b) = next_.col(b);
  }

  void refuse(const S* losses, const Refusal& refusal) {
    if (config_.on_divergence != DivergencePolicy::Raise) {
      ++counters_.skipped;
      ++counters_.samples;
      ++counters_.refused_in_a_row;
      return;
    }
    double mean = 0;
    for (Index b : present_) mean += double(losses[b]);
    throw_divergence(config_, mean / double(present_.size()), refusal);
  }

  // The readout on all streams at once: outputs W [h; 1] for every column, the losses and
  // predictions of the streams present.
  void readout_forward(const Sample<S>* samples, S* losses) {
    const Index n = cell_.hidden_size();
    auto h = readout_in_.topRows(n);
    cell_.hidden(next_, h);
    copy_rows(block_matrix(theta_.data(), readout_.block()), readout_w_, out_.rows());
    multiply_into(readout_w_, readout_in_, out_padded_);
    copy_rows(out_padded_, out_, out_.rows());
    readout_.output_losses(
        out_, present_, [samples](Index b) -> const Target<S>& { return samples[b].y; }, losses);
    for (Index b : present_) predictions_.col(b) = out_.col(b);
  }

  // Every present stream's forward pass, then the estimator; commits the tick unless it
  // returns a refusal.
  Refusal try_tick(const Sample<S>* samples, S* losses, S* grad_out, bool update) {
    cell_forward(estimator_factors());
    readout_forward(samples, losses);
    d_out_.setZero();  // absent streams: no loss, so c = 0 and no gradient
    for (Index b : present_) readout_.output_grad(out_.col(b), samples[b].y, d_out_.col(b));
    readout_wt_ = readout_w_.topLeftCorner(out_.rows(), cell_.hidden_size()).transpose();
    multiply_into(readout_wt_, d_out_, dh_);
    cell_.hidden_vjp(readout_in_.topRows(cell_.hidden_size()), dh_, c_);
    // All streams at once first (one reduction each); stream by stream to name the first
    // failure, or when some are absent (their columns are not checked).
    bool losses_finite = true;
    for (Index b : present_) losses_finite = losses_finite && std::isfinite(losses[b]);
    if (!(losses_finite && absent_.empty() && bounded(next_) && bounded(c_)))
      for (Index b : present_) {
        if (!std::isfinite(losses[b])) return {Refusal::Forward, "loss", double(losses[b])};
        if (!bounded(next_.col(b))) return {Refusal::Forward, "recurrent state", max_abs(next_.col(b))};
        if (!bounded(c_.col(b))) return {Refusal::Forward, "loss gradient on the state", max_abs(c_.col(b))};
      }
    const Index* tokens = one_hot_ ? tokens_.data() : nullptr;
    Streams<S, Cell> view{config_, cell_,    readout_, batch_, c_,     readout_in_, out_, d_out_,
                          lanes_,  present_, absent_,  tokens, theta_, optimizer_,  rng_};
    const auto rng_before = rng_.state();
    Refusal refusal;
    try {  // a user cell's functions may throw; the estimators commit nothing before them
      refusal = std::visit([&](auto& e) { return e.update(view, grad_out, update); }, estimator_);
    } catch (...) {
      rng_.set_state(rng_before);
      throw;
    }
    if (!refusal) commit_states();
    return refusal;
  }

  LearnerConfig config_;
  Cell cell_;
  Readout<S> readout_;  // the shared block, run on all streams at once
  Optimizer<S> optimizer_;
  Rng rng_;
  Counters counters_;
  Vec<S> theta_;
  typename Cell::Batch batch_;  // this tick's activations, one column per stream
  Mat<S> states_, next_, c_;    // (S, B)
  Mat<S> dh_;                   // ∂ℓ/∂h (n, B)
  Mat<S> readout_in_;           // [h; 1] (n + 1, B)
  Mat<S> out_, d_out_;          // readout outputs and ∂ℓ/∂o (O, B)
  Mat<S> predictions_;          // each stream's last prediction (O, B)
  // The readout's W with zero rows up to the kernel's row multiple, its Wᵀ (without the
  // bias), and the padded outputs: a 13-row readout runs as whole bands of the kernel.
  Mat<S> readout_w_, readout_wt_, out_padded_;
  std::vector<Lane<S, Cell>> lanes_;
  std::vector<Index> present_, absent_;
  std::vector<Index> tokens_;  // this tick's input symbols (see Streams::tokens)
  bool one_hot_ = false;
  Estimator estimator_;
};

}  // namespace uoro
