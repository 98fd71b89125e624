// Checks of the C++ core on its own, without Python: every cell's kernels against
// central finite differences, the many-streams form of each kernel against its
// one-stream form column by column, and no heap allocation inside a learning step (or
// a tick of several streams) for any cell and algorithm. Built and run by run_core_checks.py (also under
// AddressSanitizer and UndefinedBehaviorSanitizer with --sanitize, where allocation counting is off).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "uoro/elementwise_cells.hpp"
#include "uoro/learner.hpp"
#include "uoro/stack.hpp"
#include "uoro/streams_learner.hpp"

#ifndef UORO_SANITIZE
static std::atomic<long> g_allocations{0};
void* operator new(std::size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

using namespace uoro;
static int g_failures = 0;

static void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

template <class Cell>
void kernels_match_finite_differences(const char* name) {
  using V = Vec<double>;
  const Index in = 3, hidden = 4;
  Cell cell(name == std::string("influence") ? hidden : in, hidden);
  auto cache = cell.make_cache();
  Rng rng(7);
  auto normal = [&](Index n) {
    V v(n);
    for (Index i = 0; i < n; ++i) v(i) = double(rng.next() >> 11) * 0x1.0p-53 * 1.6 - 0.8;
    return v;
  };
  const Index S = cell.state_size(), P = cell.param_size();
  V theta = normal(P), s = normal(S), x = normal(cell.input_size()), t = normal(S), c = normal(S);
  auto forward = [&](const V& th, const V& st) {
    V out(S);
    Cell::input(cache, cell.input_size()) = x;
    cell.forward(th.data(), st, cache, out);
    return out;
  };
  const double h = 1e-6;
  auto rel = [](const V& a, const V& b) { return (a - b).norm() / std::max(b.norm(), 1e-300); };

  V jvp(S), vjp_s(S), fd_jvp = (forward(theta, s + h * t) - forward(theta, s - h * t)) / (2 * h);
  forward(theta, s);
  cell.jvp_state(theta.data(), cache, t, jvp);
  cell.vjp_state(theta.data(), cache, c, vjp_s);
  std::array<V, Cell::kBlocks> u;
  for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = V::Zero(cell.blocks()[k].rows);
  cell.param_cotangents(cache, c, u);
  V vjp_p(P);
  for (Index k = 0; k < Cell::kBlocks; ++k) {
    const Block& b = cell.blocks()[k];
    MatMap<double>(vjp_p.data() + b.offset, b.rows, b.cols) = u[k] * cache.v[k].transpose();
  }
  V fd_vjp_s(S), fd_vjp_p(P);
  for (Index i = 0; i < S; ++i) {
    V e = V::Zero(S);
    e(i) = h;
    fd_vjp_s(i) = c.dot(forward(theta, s + e) - forward(theta, s - e)) / (2 * h);
  }
  for (Index p = 0; p < P; ++p) {
    V e = V::Zero(P);
    e(p) = h;
    fd_vjp_p(p) = c.dot(forward(theta + e, s) - forward(theta - e, s)) / (2 * h);
  }
  check(rel(jvp, fd_jvp) < 1e-6, std::string(name) + " jvp_state vs finite differences");
  check(rel(vjp_s, fd_vjp_s) < 1e-6, std::string(name) + " vjp_state vs finite differences");
  check(rel(vjp_p, fd_vjp_p) < 1e-6, std::string(name) + " vjp_params vs finite differences");
  if constexpr (Cell::kSnapSlots > 0 && !LayeredUnits<Cell>::value) {
    // Each unit's own block of ∂F/∂s (SnAp-1) against columns of the FD Jacobian.
    const Index n = cell.hidden_size(), q = Cell::kSnapSlots;
    Mat<double> d(n, q * q), fd_d(n, q * q);
    forward(theta, s);
    cell.state_diagonal(theta.data(), cache, d);
    for (Index from = 0; from < q; ++from)
      for (Index u = 0; u < n; ++u) {
        V e = V::Zero(S);
        e(from * n + u) = h;
        const V column = (forward(theta, s + e) - forward(theta, s - e)) / (2 * h);
        for (Index to = 0; to < q; ++to) fd_d(u, to * q + from) = column(to * n + u);
      }
    check((d - fd_d).norm() < 1e-6 * std::max(fd_d.norm(), 1.0),
          std::string(name) + " state_diagonal vs finite differences");
  }
}

// The kernels on a Batch (one column per stream) equal the one-stream kernels on each
// column: the many-streams learner runs the same arithmetic, W times B columns.
template <class Cell>
void batched_kernels_match_one_stream(const char* name) {
  using V = Vec<double>;
  using M = Mat<double>;
  const Index hidden = 4, in = name == std::string("influence") ? hidden : 3, streams = 3;
  Cell cell(in, hidden);
  cell.reserve_streams(streams);
  auto batch = cell.make_batch(streams);
  auto one = cell.make_cache();
  Rng rng(11);
  auto normal = [&](Index rows, Index cols) {
    M m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m(i) = double(rng.next() >> 11) * 0x1.0p-53 * 1.6 - 0.8;
    return m;
  };
  const Index S = cell.state_size(), n = cell.hidden_size();
  const V theta = normal(cell.param_size(), 1);
  const M s = normal(S, streams), x = normal(in, streams), t = normal(S, streams), c = normal(S, streams);
  const M dh = normal(n, streams);
  M next(S, streams), jvp(S, streams), h(n, streams), back(S, streams);
  std::array<M, Cell::kBlocks> u;
  for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = M::Zero(cell.blocks()[k].rows, streams);
  Cell::input(batch, in) = x;
  cell.forward(theta.data(), s, batch, next);
  cell.jvp_state(theta.data(), batch, t, jvp);
  cell.param_cotangents(batch, c, u);
  cell.hidden(next, h);
  cell.hidden_vjp(h, dh, back);
  double error = 0;
  for (Index b = 0; b < streams; ++b) {
    V next1(S), jvp1(S), h1(n), back1(S);
    std::array<V, Cell::kBlocks> u1;
    for (Index k = 0; k < Cell::kBlocks; ++k) u1[k] = V::Zero(cell.blocks()[k].rows);
    Cell::input(one, in) = x.col(b);
    cell.forward(theta.data(), V(s.col(b)), one, next1);
    cell.jvp_state(theta.data(), one, V(t.col(b)), jvp1);
    cell.param_cotangents(one, V(c.col(b)), u1);
    cell.hidden(next1, h1);
    cell.hidden_vjp(h1, V(dh.col(b)), back1);
    error = std::max({error, (next.col(b) - next1).norm(), (jvp.col(b) - jvp1).norm(), (h.col(b) - h1).norm(),
                      (back.col(b) - back1).norm()});
    for (Index k = 0; k < Cell::kBlocks; ++k) error = std::max(error, (u[k].col(b) - u1[k]).norm());
  }
  check(error < 1e-12, std::string(name) + " kernels on 3 streams equal the one-stream kernels per column");
  if constexpr (std::is_same_v<Cell, GruCell<double>>) {
    // The tick's shared factors give the same tangent and cotangent factors.
    M f(cell.shared_factor_rows(), streams), jvp_shared(S, streams);
    std::array<M, Cell::kBlocks> u_shared = u;
    cell.shared_factors(batch, f);
    cell.jvp_state_shared(theta.data(), batch, f, t, jvp_shared);
    cell.param_cotangents_shared(f, c, u_shared);
    double shared_error = (jvp_shared - jvp).norm();
    for (Index k = 0; k < Cell::kBlocks; ++k)
      shared_error = std::max(shared_error, (u_shared[k] - u[k]).norm());
    check(shared_error < 1e-12,
          std::string(name) + " kernels with the shared factors equal the plain kernels");
  }
  if constexpr (Cell::kInputInFactor) {
    // (Last: it changes the batch.) With one-hot inputs the forward gathers W's input columns (tokens; −1:
    // zero input) instead of multiplying by x: the same states.
    const Index tokens[streams] = {2, -1, 0};
    M one_hot = M::Zero(in, streams), gathered(S, streams), multiplied(S, streams);
    for (Index b = 0; b < streams; ++b)
      if (tokens[b] >= 0) one_hot(tokens[b], b) = 1;
    Cell::input(batch, in) = one_hot;
    cell.forward(theta.data(), s, batch, multiplied);
    cell.forward(theta.data(), s, batch, gathered, tokens);
    check((gathered - multiplied).norm() < 1e-14 && (gathered - next).norm() > 1e-3,
          std::string(name) + " forward with the tokens gathered equals the one-hot product");
  }
}

[[maybe_unused]] static const char* algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::Uoro:
      return "uoro";
    case Algorithm::Rtrl:
      return "rtrl";
    case Algorithm::Tbptt:
      return "tbptt";
    case Algorithm::Snap1:
      return "snap1";
    case Algorithm::KfRtrl:
      return "kf_rtrl";
    case Algorithm::Ok:
      return "ok";
    default:
      return "tbptt_chunk";
  }
}

template <class Cell>
void steps_do_not_allocate(const char* name, LearnerConfig config, Index hidden) {
  const bool influence = name == std::string("influence");
  config.input_size = influence ? hidden : 5;
  config.hidden_size = hidden;
  config.output_size = influence ? 1 : 5;
  config.loss = influence ? Loss::SquaredError : Loss::CrossEntropy;
  config.optimizer.clip_norm = 10.0;
  Learner<float, Cell> learner(config);
  std::vector<float> x(hidden);
  for (Index i = 0; i < hidden; ++i) x[i] = i % 3 ? 1.0f : -1.0f;
  float y[1] = {1};
  auto run = [&](int n) {
    for (int t = 0; t < n; ++t) {
      Sample<float> s;
      if (influence) {
        s.x = x.data();
        s.y.values = y;
      } else {
        s.x_token = t % 5;
        s.y.token = (t * 3 + 1) % 5;
      }
      learner.step(s);
    }
  };
  run(40);  // past every window's first fill
#ifndef UORO_SANITIZE
  const long before = g_allocations.load();
  run(200);
  const long allocations = g_allocations.load() - before;
  check(allocations == 0, std::string(name) + "-" + std::to_string(hidden) + " " +
                              algorithm_name(config.algorithm) + " rank " + std::to_string(config.rank) +
                              " memory " + std::to_string(config.memory) + " truncation " +
                              std::to_string(config.truncation) +
                              (config.optimizer.kind == OptimizerKind::Adam ? " adam" : " sgd") + ": " +
                              std::to_string(allocations) + " allocations in 200 steps");
#else
  run(200);
  check(learner.theta().allFinite(), std::string(name) + " steps run clean");
#endif
}

template <class Cell>
void all_algorithms(const char* name) {
  for (Index hidden : {6, 48}) {
    LearnerConfig c;
    for (OptimizerKind k : {OptimizerKind::Sgd, OptimizerKind::Adam}) {
      c.optimizer.kind = k;
      for (Index rank : {1, 3}) {
        c.algorithm = Algorithm::Uoro;
        c.rank = rank;
        steps_do_not_allocate<Cell>(name, c, hidden);
      }
      c.rank = 1;
      c.memory = 4;
      steps_do_not_allocate<Cell>(name, c, hidden);
      c.memory = 1;
      for (Algorithm a : {Algorithm::Rtrl, Algorithm::Tbptt, Algorithm::TbpttChunk, Algorithm::Snap1}) {
        if (a == Algorithm::Rtrl && hidden > 16 && !Elementwise<Cell>::value) continue;  // S²·P: small nets
        if (a == Algorithm::Snap1 && Cell::kSnapSlots == 0) continue;
        c.algorithm = a;
        c.truncation = 4;
        steps_do_not_allocate<Cell>(name, c, hidden);
      }
      if (hidden > 16 && !Elementwise<Cell>::value) continue;  // S²·Σ rows: small nets
      for (Index rank : {1, 3}) {
        c.algorithm = rank == 1 ? Algorithm::KfRtrl : Algorithm::Ok;
        c.rank = rank;
        steps_do_not_allocate<Cell>(name, c, hidden);
      }
      c.rank = 1;
    }
  }
}

// A tick of several streams allocates nothing either, with and without a mask.
template <class Cell>
void ticks_do_not_allocate(const char* name, LearnerConfig config, Index hidden, Index streams) {
  const bool influence = name == std::string("influence");
  config.input_size = influence ? hidden : 5;
  config.hidden_size = hidden;
  config.output_size = influence ? 1 : 5;
  config.loss = influence ? Loss::SquaredError : Loss::CrossEntropy;
  config.optimizer.clip_norm = 10.0;
  StreamsLearner<float, Cell> learner(config, streams);
  std::vector<float> x(hidden), losses(streams);
  for (Index i = 0; i < hidden; ++i) x[i] = i % 3 ? 1.0f : -1.0f;
  float y[1] = {1};
  std::vector<Sample<float>> samples(streams);
  bool mask[64];
  auto run = [&](int n) {
    for (int t = 0; t < n; ++t) {
      for (Index b = 0; b < streams; ++b) {
        mask[b] = (t + b) % 4 != 0;
        if (influence) {
          samples[b].x = x.data();
          samples[b].y.values = y;
        } else {
          samples[b].x_token = (t + b) % 5;
          samples[b].y.token = (t * 3 + b + 1) % 5;
        }
      }
      learner.step(samples.data(), t % 2 ? mask : nullptr, losses.data());
    }
  };
  run(40);
#ifndef UORO_SANITIZE
  const long before = g_allocations.load();
  run(200);
  const long allocations = g_allocations.load() - before;
  check(allocations == 0,
        std::string(name) + "-" + std::to_string(hidden) + " " + algorithm_name(config.algorithm) + " rank " +
            std::to_string(config.rank) + " memory " + std::to_string(config.memory) + " streams " +
            std::to_string(streams) + (config.optimizer.kind == OptimizerKind::Adam ? " adam" : " sgd") +
            ": " + std::to_string(allocations) + " allocations in 200 ticks");
#else
  run(200);
  check(learner.theta().allFinite(), std::string(name) + " ticks run clean");
#endif
}

template <class Cell>
void all_algorithms_on_streams(const char* name) {
  for (Index streams : {3, 64}) {
    LearnerConfig c;
    for (OptimizerKind k : {OptimizerKind::Sgd, OptimizerKind::Adam}) {
      c.optimizer.kind = k;
      for (Index rank : {1, 2}) {
        c.algorithm = Algorithm::Uoro;
        c.rank = rank;
        ticks_do_not_allocate<Cell>(name, c, streams > 8 ? 64 : 6, streams);
      }
      c.rank = 1;
      c.stream_groups = streams;  // one estimate per stream
      ticks_do_not_allocate<Cell>(name, c, streams > 8 ? 64 : 6, streams);
      c.stream_groups = 1;
      c.memory = 4;
      ticks_do_not_allocate<Cell>(name, c, streams > 8 ? 64 : 6, streams);
      c.memory = 1;
      if (streams > 8) {
        if constexpr (Cell::kSnapSlots > 0) {  // SnAp-1's sweep over streams at size (3: below)
          c.algorithm = Algorithm::Snap1;
          ticks_do_not_allocate<Cell>(name, c, 64, streams);
          c.algorithm = Algorithm::Uoro;
        }
        continue;  // the other per-stream exact estimators: small cases
      }
      for (Algorithm a : {Algorithm::Rtrl, Algorithm::Tbptt, Algorithm::TbpttChunk, Algorithm::Snap1}) {
        c.algorithm = a;
        c.truncation = 4;
        ticks_do_not_allocate<Cell>(name, c, 6, streams);
      }
      for (Index rank : {1, 2}) {
        c.algorithm = rank == 1 ? Algorithm::KfRtrl : Algorithm::Ok;
        c.rank = rank;
        ticks_do_not_allocate<Cell>(name, c, 6, streams);
      }
      c.rank = 1;
    }
  }
}

// Inside a guard a subnormal result is flushed to zero; after it the caller's mode is back.
void subnormals_are_flushed_only_inside_the_guard() {
  volatile float tiny = 1e-30f, scale = 1e-15f;  // the product, 1e-45, is subnormal
  {
    const FlushSubnormals flush;
#if defined(__SSE__) || defined(_M_X64)
    check(tiny * scale == 0.0f, "a subnormal product is flushed to zero inside FlushSubnormals");
#endif
  }
  check(tiny * scale != 0.0f, "the caller's floating-point mode is restored after FlushSubnormals");
}

// The readout's one-packet products (outputs that fit one SIMD packet) against Eigen's
// general ones, for output sizes on both sides of that fit, cross-entropy loss.
template <class S>
void readout_products_match(const char* name) {
  for (Index outputs : {1, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31}) {
    const Index hidden = 37;
    Readout<S> readout(hidden, outputs, Loss::CrossEntropy, 3);
    Rng rng(5);
    Vec<S> theta(3 + readout.block().size()), h(hidden), dh(hidden);
    for (Index i = 0; i < theta.size(); ++i) theta(i) = S(double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1);
    for (Index i = 0; i < hidden; ++i) h(i) = S(double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1);
    Target<S> y;
    y.token = outputs / 2;
    const S loss = readout.loss_and_grad(theta.data(), h, y, dh);
    const auto w = block_matrix(theta.data(), readout.block());
    Vec<S> v(hidden + 1);
    v << h, S(1);
    const Vec<S> logits = w * v;
    const double log_norm = std::log(logits.array().exp().template cast<double>().sum());
    Vec<S> d = (logits.array() - S(log_norm)).exp().matrix();
    d(y.token) -= S(1);
    const Vec<S> dh_eigen = w.leftCols(hidden).transpose() * d;
    const double tol = sizeof(S) == 4 ? 1e-5 : 1e-13;
    check(std::abs(double(loss) - (log_norm - double(logits(y.token)))) < tol &&
              (readout.d_out() - d).norm() < tol &&
              (dh - dh_eigen).norm() <= tol * std::max(dh_eigen.norm(), S(1)),
          std::string(name) + " readout with " + std::to_string(outputs) + " outputs: loss, ∂ℓ/∂o, ∂ℓ/∂h");
  }
}

// A rank-1 UORO + Adam step folds the cell's next recurrent products into its pass
// (FoldedProducts). A learner that drops them before every step, as any write to θ or
// the state does, computes them itself: it must learn the same bits (sizes with whole
// bands of packets, single packets and a tail of rows below one packet).
template <class S, template <class> class CellT>
void folded_products_are_the_cells_own(const char* name) {
  for (Index hidden : {5, 16, 37}) {
    LearnerConfig c;
    c.input_size = c.output_size = 4;
    c.hidden_size = hidden;
    Learner<S, CellT<S>> folded(c), computed(c);
    bool used = true;
    for (int t = 0; t < 300; ++t) {
      Sample<S> s;
      // One-hot tokens, and every fifth sample a dense input (the input's columns are
      // then a product, not a gathered column).
      const S dense[4] = {S(0.5), S(-1), S(0.25 * (t % 3)), S(2)};
      if (t % 5 == 4)
        s.x = dense;
      else
        s.x_token = t % 4;
      s.y.token = (t * 3 + 1) % 4;
      folded.step(s);
      used = used && folded.cell().folded.state_ready && folded.cell().folded.tangent_ready;
      computed.theta();  // drops the folded products
      computed.step(s);
    }
    const std::string what =
        std::string(name) + "-" + std::to_string(hidden) + (sizeof(S) == 4 ? " f32" : " f64");
    check(used, what + ": every step folded the next products into its pass");
    const bool same = folded.theta() == computed.theta() && folded.state() == computed.state();
    check(same, what + ": folded recurrent products learn the same bits as computed ones");
  }
}

// The per-stream passes (one θ̃ per stream, g held in registers across the streams, 1/ρ1
// folded into u_ν) against the per-group ones, run once per stream with the first
// writing g: g, every θ̃ and every norm agree to rounding (row counts with whole bands
// of packets, single packets and a tail below one packet; tiles of 4 columns and single
// columns; dense columns and a one-hot column). The two round differently (fused
// multiply-adds in another order), so the bound is a few ulps of each entry's terms,
// where a term missing or counted twice would be off by about one.
template <class S>
void per_stream_passes_match_per_group_ones(const char* name) {
  Rng rng(11);
  const auto uniform = [&] { return S(double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1); };
  const auto fill = [&](auto& m) {
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = uniform();
  };
  bool same = true, lazy_same = true;
  const auto close = [](const auto& a, const auto& b) {
    return ((a - b).array().abs() <= 32 * std::numeric_limits<S>::epsilon() * (1 + a.array().abs())).all();
  };
  for (Index rows : {5, 16, 37, 64, 100})
    for (Index cols : {1, 3, 4, 9})
      for (Index streams : {2, 3, 5}) {
        Mat<S> a_c(rows, streams), a_nu(rows, streams), v(cols + 2, streams), t0(rows * cols, streams);
        Vec<S> coef(streams), rho0(streams), rho1(streams);
        fill(a_c), fill(a_nu), fill(v), fill(t0), fill(coef), fill(rho0), fill(rho1);
        Mat<S> t_group = t0, t_stream = t0;
        Vec<S> g_group(rows * cols), g_stream(rows * cols), lanes(streams * 16);
        Vec<S> norm_group = Vec<S>::Zero(streams), norm_stream = Vec<S>::Zero(streams);
        // Dense columns (v's rows 2 on), then one column of a one-hot input that streams 0
        // and 2 read.
        for (Index p = 0; p < streams; ++p)
          norm_group(p) +=
              p == 0 ? uoro_pass_sums<false>(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef(p), rho0(p),
                                             rho1(p), g_group.data(), t_group.col(p).data(), p, 1)
                     : uoro_pass_sums<true>(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef(p), rho0(p),
                                            rho1(p), g_group.data(), t_group.col(p).data(), p, 1);
        uoro_pass_sums_per_stream(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef.data(), rho0.data(),
                                  rho1.data(), g_stream.data(), t_stream.data(), t_stream.outerStride(),
                                  norm_stream.data(), lanes.data());
        same = same && close(g_group, g_stream) && close(t_group, t_stream) && close(norm_group, norm_stream);
        const Index readers[2] = {0, 2};
        for (Index p = 0; p < streams; ++p) {
          const Index count = p == 0 || p == 2 ? 1 : 0;
          norm_group(p) +=
              p == 0 ? uoro_pass_column<false>(a_c, a_nu, readers + (p == 2), count, coef(p), rho0(p),
                                               rho1(p), g_group.data(), t_group.col(p).data())
                     : uoro_pass_column<true>(a_c, a_nu, readers + (p == 2), count, coef(p), rho0(p), rho1(p),
                                              g_group.data(), t_group.col(p).data());
        }
        uoro_pass_column_per_stream(
            a_c, a_nu, [](Index p) { return p == 0 || p == 2; }, coef.data(), rho0.data(), rho1.data(),
            g_stream.data(), t_stream.data(), t_stream.outerStride(), norm_stream.data(), lanes.data());
        same = same && close(g_group.head(rows), g_stream.head(rows)) && close(t_group, t_stream) &&
               close(norm_group, norm_stream);
        // The lazy forms: the full ones with 1/ρ0 = 1, the norms left unread and untouched.
        const Vec<S> ones = Vec<S>::Ones(streams), poison = Vec<S>::Constant(streams, S(-7));
        Mat<S> t_full = t0, t_lazy = t0;
        Vec<S> g_full(rows * cols), g_lazy(rows * cols), norm_lazy = poison;
        uoro_pass_sums_per_stream(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef.data(), ones.data(),
                                  rho1.data(), g_full.data(), t_full.data(), t_full.outerStride(),
                                  norm_stream.data(), lanes.data());
        uoro_pass_sums_per_stream<true>(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef.data(),
                                        poison.data(), rho1.data(), g_lazy.data(), t_lazy.data(),
                                        t_lazy.outerStride(), norm_lazy.data(), lanes.data());
        lazy_same = lazy_same && (g_full - g_lazy).cwiseAbs().maxCoeff() == S(0) && t_full == t_lazy;
        const auto reads = [](Index p) { return p == 0 || p == 2; };
        uoro_pass_column_per_stream(a_c, a_nu, reads, coef.data(), ones.data(), rho1.data(), g_full.data(),
                                    t_full.data(), t_full.outerStride(), norm_stream.data(), lanes.data());
        uoro_pass_column_per_stream<true>(a_c, a_nu, reads, coef.data(), poison.data(), rho1.data(),
                                          g_lazy.data(), t_lazy.data(), t_lazy.outerStride(),
                                          norm_lazy.data(), lanes.data());
        lazy_same = lazy_same && g_full.head(rows) == g_lazy.head(rows) && t_full == t_lazy &&
                    norm_lazy == poison && t_lazy != t0;
      }
  check(same, std::string(name) + " per-stream UORO passes: the per-group passes' g, θ̃ and norms");
  check(lazy_same, std::string(name) + " lazy per-stream UORO passes: the full ones with 1/ρ0 = 1, no norm");
}

// Every check of one cell, each in the dtype it runs in.
template <template <class> class Cell>
void cell_checks(const char* name) {
  kernels_match_finite_differences<Cell<double>>(name);
  all_algorithms<Cell<float>>(name);
  batched_kernels_match_one_stream<Cell<double>>(name);
  all_algorithms_on_streams<Cell<float>>(name);
}
template <class S>
using GruStack2 = StackCell<S, GruCell, 2>;
template <class S>
using LstmStack2 = StackCell<S, LstmCell, 2>;
template <class S>
using MinGruStack3 = StackCell<S, MinGruCell, 3>;

// The checks build as two programs compiled side by side (UORO_CHECKS_PART=0 and 1, each
// with half of the cells), which halves the build's wall time on two cores; without the
// macro one program runs them all.
#ifndef UORO_CHECKS_PART
#define UORO_CHECKS_PART -1
#endif
#define UORO_CHECKS_IN_PART(k) (UORO_CHECKS_PART < 0 || UORO_CHECKS_PART == (k))

int main() {
#if UORO_CHECKS_IN_PART(0)
  per_stream_passes_match_per_group_ones<float>("f32");
  subnormals_are_flushed_only_inside_the_guard();
  readout_products_match<float>("f32");
  folded_products_are_the_cells_own<float, RnnCell>("rnn");
  folded_products_are_the_cells_own<float, GruCell>("gru");
  folded_products_are_the_cells_own<float, LstmCell>("lstm");
  cell_checks<RnnCell>("rnn");
  cell_checks<LstmCell>("lstm");
  cell_checks<MinGruCell>("mingru");
  cell_checks<IndRnnCell>("indrnn");
  cell_checks<LstmStack2>("lstm_l2");
#endif
#if UORO_CHECKS_IN_PART(1)
  per_stream_passes_match_per_group_ones<double>("f64");
  readout_products_match<double>("f64");
  folded_products_are_the_cells_own<double, RnnCell>("rnn");
  folded_products_are_the_cells_own<double, GruCell>("gru");
  folded_products_are_the_cells_own<double, LstmCell>("lstm");
  cell_checks<GruCell>("gru");
  cell_checks<InfluenceCell>("influence");
  cell_checks<MinLstmCell>("minlstm");
  cell_checks<GruStack2>("gru_l2");
  cell_checks<MinGruStack3>("mingru_l3");
#endif
  std::printf("%d failed\n", g_failures);
  return g_failures ? 1 : 0;
}
