// Where the time of the library's one-stream step goes: a GRU learning with UORO + Adam
// from a 13-symbol one-hot stream (float32), its step timed whole and its parts timed
// alone with the library's own code, to set beside the fused reference's `phases`.
//
//   step_parts <hidden>   prints one line per part: name, µs per step
//
// Parts, each the best of many rounds with its data in cache:
//   - step: uoro::Learner::step, everything a step does (no Python, no binding);
//   - forward: the forward pass, the loss and its gradient on the state (the cell's
//     forward and hidden output, the readout's softmax and cotangent, hidden_vjp);
//   - estimator: UORO's update alone (the estimator's whole share of a step);
//   - tangent: the tangent's propagation through the cell (a W_hh product and gates);
//   - cotangents: one parameter-side cotangent of the cell (UORO takes two per step);
//   - signs: drawing the state-sized random signs;
//   - adam: the optimizer alone over all parameters (no gradient computed, no θ̃).
// What the step spends outside `forward` and `estimator` is the learner's own (the
// input's one-hot load, the forward checks, swaps); the estimator less its tangent, two
// cotangents and the signs is its pass over the parameters with its checks.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "best_us.hpp"
#include "uoro/learner.hpp"

using namespace uoro;
using S = float;
using Cell = GruCell<S>;
constexpr Index kSymbols = 13;
constexpr int kRounds = 7;

LearnerConfig config_for(Index hidden, double lr) {
  LearnerConfig c;
  c.input_size = c.output_size = kSymbols;
  c.hidden_size = hidden;
  c.optimizer.lr = lr;
  c.on_divergence = DivergencePolicy::Skip;
  return c;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <hidden>\n", argv[0]);
    return 2;
  }
  const Index hidden = std::atol(argv[1]);
  // About 0.1 s per round at any size: rounds long enough that a step's caches stay warm.
  const int calls = int(std::clamp<long>(50'000'000 / (hidden * hidden), 200, 50'000));
  const FlushSubnormals flush;
  Rng draw(1);
  std::vector<std::int64_t> tokens(size_t(calls) + 1);
  for (auto& t : tokens) t = std::int64_t(draw.next() % kSymbols);

  // The whole step, as `fit` runs it.
  Learner<S, Cell> learner(config_for(hidden, 1e-3));
  Index at = 0;
  auto sample = [&] {
    Sample<S> s;
    s.x_token = tokens[size_t(at)];
    s.y.token = tokens[size_t(at) + 1];
    at = (at + 1) % calls;
    return s;
  };
  for (int i = 0; i < 64; ++i) learner.step(sample());
  double sink = 0;
  const double step = best_us([&] { sink += learner.step(sample()); }, calls, kRounds);

  // The parts, on a model of the same shape after a few steps of learning. A tiny
  // learning rate keeps the repeated updates of one sample from drifting far.
  const LearnerConfig config = config_for(hidden, 1e-9);
  Cell cell(kSymbols, hidden);
  auto cache = cell.make_cache();
  Readout<S> readout(hidden, kSymbols, config.loss, cell.param_size());
  Optimizer<S> optimizer(config.optimizer, cell.param_size() + readout.block().size());
  Rng rng(config.seed);
  Vec<S> theta = learner.theta();
  Vec<S> state = learner.state(), next = Vec<S>::Zero(hidden), h = Vec<S>::Zero(hidden);
  Vec<S> dh = Vec<S>::Zero(hidden), c = Vec<S>::Zero(hidden);
  const Target<S> y{nullptr, 3};
  auto forward = [&] {
    auto x = Cell::input(cache, kSymbols);
    x.setZero();
    x(5) = S(1);
    cell.forward(theta.data(), state, cache, next);
    cell.hidden(next, h);
    sink += readout.loss_and_grad(theta.data(), h, y, dh);
    cell.hidden_vjp(h, dh, c);
  };
  const double forward_us = best_us(forward, calls, kRounds);

  Model<S, Cell> model{config, cell, cache, readout, readout.d_out(), readout.v(), c, theta, optimizer, rng};
  Uoro<S, Cell> uoro(config, cell, readout);
  long refused = 0;
  for (int i = 0; i < 8; ++i) refused += bool(uoro.update(model, nullptr, true));
  const double estimator =
      best_us([&] { refused += bool(uoro.update(model, nullptr, true)); }, calls, kRounds);

  Vec<S> tangent_in = Vec<S>::Constant(hidden, S(0.1)), tangent_out = Vec<S>::Zero(hidden);
  const double tangent = best_us(
      [&] {
        cell.jvp_state(theta.data(), cache, tangent_in, tangent_out);
        sink += tangent_out(0);
      },
      calls, kRounds);
  std::array<Vec<S>, Cell::kBlocks> u;
  for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = Vec<S>::Zero(cell.blocks()[k].rows);
  const double cotangents = best_us(
      [&] {
        cell.param_cotangents(cache, c, u);
        sink += u[0](0);
      },
      calls, kRounds);
  Vec<S> signs = Vec<S>::Zero(hidden);
  const double signs_us = best_us(
      [&] {
        rng.fill_signs(signs);
        sink += signs(0);
      },
      calls, kRounds);
  const Vec<S> gradient = Vec<S>::Constant(theta.size(), S(1e-3));
  const double adam = best_us(
      [&] {
        optimizer.begin();
        optimizer.apply<true>(theta.data(), 0, gradient.data(), theta.size());
        optimizer.end();
      },
      calls, kRounds);

  std::printf(
      "step %.4f\nforward %.4f\nestimator %.4f\ntangent %.4f\ncotangents %.4f\nsigns %.4f\nadam %.4f\n", step,
      forward_us, estimator, tangent, cotangents, signs_us, adam);
  std::printf("refused %ld\n", refused);
  return std::isfinite(sink) ? 0 : 1;
}
