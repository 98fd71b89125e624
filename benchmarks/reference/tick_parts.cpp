// Where the time of a many-streams tick goes: the parts of one UORO + Adam tick of a GRU
// over B streams (13-symbol one-hot input, float32), each timed alone on this machine,
// beside the whole tick timed in the same program.
//
//   tick_parts <hidden> <streams>...   prints one JSON object per B
//
// Parts, each the best of many repeats with its data in cache:
//   - fma_peak_gmacs: independent vector multiply-adds (12 chains), the core's ceiling;
//   - products: the cell's and the readout's products with the library's kernel (forward
//     and tangent, W_hh times B columns; the readout's output, cotangent and gradient);
//   - sums: the estimator's two rank-B parameter-side sums over the recurrent block with
//     θ̃'s update (uoro_pass_sums, in the estimator's chunks);
//   - adam: the optimizer's update of all parameters (bound by its square root and
//     division).
// The rest of the tick (gates, softmax, factors, checks, copies, the one-hot input's
// columns) is the tick less these parts.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "best_us.hpp"
#include "uoro/optimizer.hpp"
#include "uoro/products.hpp"
#include "uoro/streams_learner.hpp"

using namespace uoro;
using S = float;
constexpr Index kSymbols = 13;
constexpr int kRounds = 15;

// Keeps a result alive without costing anything.
inline void keep(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

double fma_peak_gmacs() {
  using namespace Eigen::internal;
  using P = packet_traits<S>::type;
  constexpr int kChains = 12, kLanes = int(sizeof(P) / sizeof(S));
  P acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = pset1<P>(S(i) * S(1e-3));
  const P a = pset1<P>(S(0.999999)), b = pset1<P>(S(1e-7));
  const long iterations = 2'000'000;
  const double us = best_us(
      [&] {
        for (long k = 0; k < iterations; ++k)
          for (int i = 0; i < kChains; ++i) acc[i] = pmadd(acc[i], a, b);
      },
      1, 5);
  S sum = 0;
  for (int i = 0; i < kChains; ++i) sum += predux(acc[i]);
  keep(&sum);
  return double(iterations) * kChains * kLanes / us * 1e-3;
}

struct Parts {
  double products_us, products_macs, sums_us, sums_macs, adam_us;
};

Parts time_parts(Index n, Index streams) {
  const Index rows = 3 * n, cols = n + 1, readout_rows = padded_rows(kSymbols, kernel_row_multiple<S>());
  const Index params = rows * (kSymbols + 1) + rows * cols + kSymbols * cols;
  Rng rng(5);
  const auto random = [&](Index r, Index c) {
    Mat<S> m(r, c);
    for (Index i = 0; i < m.size(); ++i) m(i) = S(double(rng.next() >> 11) * 0x1.0p-53 - 0.5);
    return m;
  };
  const Mat<S> w_hh = random(rows, cols), readout_w = random(readout_rows, cols);
  const Mat<S> h = random(cols, streams), s_tilde = random(n, streams), d_out = random(readout_rows, streams);
  const Mat<S> readout_wt = readout_w.topLeftCorner(kSymbols, n).transpose();
  Mat<S> a_h(rows, streams), a_tangent(rows, streams), out(readout_rows, streams), dh(n, streams);
  Mat<S> readout_g(readout_rows, cols);
  const auto products = [&] {
    multiply_into(w_hh, h, a_h);                             // forward
    multiply_into(w_hh.leftCols(n), s_tilde, a_tangent);     // tangent
    multiply_into(readout_w, h, out);                        // readout
    multiply_into(readout_wt, d_out.topRows(kSymbols), dh);  // the loss's cotangent on h
    multiply_into(d_out, h.transpose(), readout_g);          // readout gradient
    keep(a_h.data()), keep(a_tangent.data()), keep(out.data()), keep(dh.data()), keep(readout_g.data());
  };
  const double products_macs = double(streams) * (double(rows) * cols + double(rows) * n +
                                                  2.0 * readout_rows * cols + double(n) * kSymbols);

  // The estimator's sums over the recurrent block, in its chunks of up to 16384 values.
  const Mat<S> u_c = random(rows, streams), u_nu = random(rows, streams);
  Mat<S> theta_tilde = random(rows, cols) * S(1e-3);
  Vec<S> g(rows * cols);
  const Index chunk = pass_chunk_columns(rows, cols);
  const auto sums = [&] {
    S norm2 = 0;
    for (Index j0 = 0; j0 < cols; j0 += chunk)
      norm2 += uoro_pass_sums(u_c, u_nu, h.data() + j0, h.outerStride(), std::min(chunk, cols - j0), S(0.5),
                              S(1), S(1e-3), g.data(), theta_tilde.data() + j0 * rows);
    keep(&norm2), keep(g.data()), keep(theta_tilde.data());
  };
  const double sums_macs = 2.0 * double(streams) * rows * cols;

  OptimizerConfig adam_config;
  Optimizer<S> optimizer(adam_config, params);
  optimizer.begin();
  Vec<S> theta = random(params, 1), grad = random(params, 1) * S(1e-3);
  const auto adam = [&] {
    optimizer.apply<true>(theta.data(), 0, grad.data(), params);
    keep(theta.data());
  };
  const auto calls = [](double work) { return std::max(1, int(2e7 / work)); };
  return {best_us(products, calls(products_macs), kRounds), products_macs,
          best_us(sums, calls(sums_macs), kRounds), sums_macs, best_us(adam, calls(10.0 * params), kRounds)};
}

// µs per tick of the library's UORO + Adam learner over `streams` streams.
double tick_us(Index n, Index streams) {
  LearnerConfig config;
  config.input_size = config.output_size = kSymbols;
  config.hidden_size = n;
  config.optimizer.lr = 1e-3;
  config.on_divergence = DivergencePolicy::Skip;  // random tokens: refused ticks are counted
  StreamsLearner<S, GruCell<S>> learner(config, streams);
  const int ticks = 64;  // samples cycled through: few enough not to crowd the tick out of cache
  std::vector<Sample<S>> samples(std::size_t(ticks) * streams);
  Rng rng(3);
  for (auto& s : samples) {
    s.x_token = Index(rng.next() % kSymbols);
    s.y.token = Index(rng.next() % kSymbols);
  }
  std::vector<S> losses(streams);
  int t = 0;
  const auto one_tick = [&] {
    learner.step(samples.data() + std::size_t(t) * streams, nullptr, losses.data());
    t = (t + 1) % ticks;
  };
  for (int i = 0; i < ticks; ++i) one_tick();  // warm up
  return best_us(one_tick, std::max(ticks, int(20000 / streams)), 7);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tick_parts <hidden> <streams>...\n");
    return 2;
  }
  const Index n = std::atol(argv[1]);
  const double peak = fma_peak_gmacs();
  for (int i = 2; i < argc; ++i) {
    const Index streams = std::atol(argv[i]);
    const Parts parts = time_parts(n, streams);
    std::printf(
        "{\"hidden\": %ld, \"streams\": %ld, \"tick_us\": %.4f, \"fma_peak_gmacs\": %.2f, "
        "\"products_us\": %.4f, \"products_macs\": %.0f, \"sums_us\": %.4f, \"sums_macs\": %.0f, "
        "\"adam_us\": %.4f}\n",
        long(n), long(streams), tick_us(n, streams), peak, parts.products_us, parts.products_macs,
        parts.sums_us, parts.sums_macs, parts.adam_us);
  }
}
