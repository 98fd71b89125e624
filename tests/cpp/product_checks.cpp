// The many-streams kernels (products.hpp) against Eigen's: the matrix products, on shapes that reach
// every path of the kernel: whole tiles, the last columns, bands of one packet, half
// packets and the rows left to Eigen; b column-major or transposed; c = a b and c += α a b.
// And the fused sums of a rank-1 UORO pass (dense columns and a one-hot input's), the
// per-column statistics of the estimator's checks, the column sums of the one-hot
// input's gradient, and the GRU's many-streams passes written in packets: its gates with
// the shared factors (forward), the tangent's combination (jvp_state_shared) and the
// cotangent factors with their bounds (param_cotangents_bounded).
// Built once per instruction-set variant (run_core_checks.py --products), since the
// packet sizes and so the paths taken differ with the SIMD width.
#include <cstdio>
#include <string>

#include "uoro/cells.hpp"
#include "uoro/products.hpp"

using namespace uoro;

static int g_failures = 0;
static int g_checks = 0;

// One check's tally over its shapes, and its summary line.
struct Tally {
  const char* type;
  int failed = 0, done = 0;
  // Counts one shape; returns ok, so the caller can say what mismatched.
  bool record(bool ok) {
    ++done;
    if (!ok) ++failed;
    return ok;
  }
  void report(const char* what) {
    ++g_checks;
    if (failed) ++g_failures;
    std::printf("%s %s: %d shapes, %s\n", failed ? "FAIL" : "ok  ", type, done - failed, what);
  }
};

// A rows × cols matrix of uniform values in [-half_width, half_width), filled in order.
template <class S>
Mat<S> uniform(Rng& rng, Index rows, Index cols, double half_width) {
  Mat<S> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m(i) = S(double(rng.next() >> 11) * 0x1.0p-53 * 2.0 * half_width - half_width);
  return m;
}

template <class S>
void products_match_eigen(const char* type, double tolerance) {
  using M = Mat<S>;
  Rng rng(5);
  auto random = [&](Index rows, Index cols) { return uniform<S>(rng, rows, cols, 1.0); };
  Tally tally{type};
  for (Index rows : {1, 3, 4, 13, 16, 29, 48, 64, 97, 192})
    for (Index cols : {1, 2, 3, 4, 5, 9, 16, 65})
      for (Index depth : {0, 1, 7, 16, 65, 257}) {
        // a is a block of a larger matrix (lda > rows), b a block, c a block: the strides
        // of θ's blocks and of the learner's matrices.
        const M a_full = random(rows + 3, depth + 1), b_full = random(depth + 2, cols + 1);
        const M bt_full = random(cols + 2, depth + 1);
        const auto a = a_full.topRightCorner(rows, depth);
        const auto b = b_full.bottomLeftCorner(depth, cols);
        const auto bt = bt_full.bottomRightCorner(cols, depth).transpose();
        M c_full = random(rows + 2, cols), c0 = c_full;
        auto c = c_full.bottomRows(rows);
        const Mat<double> want = a.template cast<double>() * b.template cast<double>();
        const Mat<double> want_t = a.template cast<double>() * bt.template cast<double>();
        const double scale = std::max(1.0, want.cwiseAbs().maxCoeff()),
                     scale_t = std::max(1.0, want_t.cwiseAbs().maxCoeff());
        multiply_into(a, b, c);
        const bool into = (c.template cast<double>() - want).cwiseAbs().maxCoeff() <= tolerance * scale;
        multiply_add(a, bt, c, S(-0.5));
        const bool add = (c.template cast<double>() - want + 0.5 * want_t).cwiseAbs().maxCoeff() <=
                         tolerance * 2 * scale_t;
        multiply_into(a, bt, c);
        const bool into_t = (c.template cast<double>() - want_t).cwiseAbs().maxCoeff() <= tolerance * scale_t;
        // Rows outside c are left alone.
        const bool outside = c_full.topRows(2) == c0.topRows(2);
        if (!tally.record(into && add && into_t && outside)) {
          std::printf("  mismatch (%s): %ld x %ld times %ld x %ld\n", type, long(rows), long(depth),
                      long(depth), long(cols));
        }
      }
  tally.report("products equal Eigen's");
}

// uoro_pass_sums: g = coef·t + A_c Bᵀ, t ← t/ρ0 + (1/ρ1)·A_ν Bᵀ and Σ t_new², against
// Eigen's products in double, on shapes that reach whole tiles, the last columns, bands
// of one packet and the rows below a packet; B's rows are a block of the factors'
// matrix (its outer stride larger than the columns taken), g and t columns of blocks.
template <class S>
void pass_sums_match_eigen(const char* type, double tolerance) {
  Rng rng(23);
  auto random = [&](Index rows, Index cols) { return uniform<S>(rng, rows, cols, 1.0); };
  Tally tally{type};
  for (Index rows : {1, 5, 16, 37, 48, 64, 97, 192})
    for (Index cols : {1, 3, 4, 5, 9, 65})
      for (Index streams : {1, 2, 7, 16}) {
        const Mat<S> a_c = random(rows, streams), a_nu = random(rows, streams);
        const Mat<S> v = random(cols + 3, streams);  // columns 2 .. cols + 1 taken
        Mat<S> t = random(rows, cols), g = random(rows, cols + 1);
        const S coef = S(0.7), inv_rho0 = S(1.3), inv_rho1 = S(-0.4);
        const Mat<double> vb = v.middleRows(2, cols).template cast<double>().transpose();
        const Mat<double> sum_c = a_c.template cast<double>() * vb,
                          sum_nu = a_nu.template cast<double>() * vb;
        const Mat<double> want_g = double(coef) * t.template cast<double>() + sum_c;
        const Mat<double> want_t = double(inv_rho0) * t.template cast<double>() + double(inv_rho1) * sum_nu;
        const S last_g = g(0, cols);
        const S norm2 = uoro_pass_sums(a_c, a_nu, v.data() + 2, v.outerStride(), cols, coef, inv_rho0,
                                       inv_rho1, g.data(), t.data());
        const double scale = std::max({1.0, want_g.cwiseAbs().maxCoeff(), want_t.cwiseAbs().maxCoeff()});
        const bool ok =
            (g.leftCols(cols).template cast<double>() - want_g).cwiseAbs().maxCoeff() <= tolerance * scale &&
            (t.template cast<double>() - want_t).cwiseAbs().maxCoeff() <= tolerance * scale &&
            std::abs(double(norm2) - want_t.squaredNorm()) <= tolerance * want_t.squaredNorm() &&
            g(0, cols) == last_g;  // nothing written past the chunk
        if (!tally.record(ok)) {
          std::printf("  mismatch (%s): %ld rows, %ld columns, %ld streams\n", type, long(rows), long(cols),
                      long(streams));
        }
      }
  tally.report("UORO pass sums equal Eigen's");
}

// column_stats: max|x_b| and ‖x_b‖² per column, as Eigen's column-wise reductions give.
template <class S>
void column_stats_match_eigen(const char* type, double tolerance) {
  Rng rng(9);
  Tally tally{type};
  for (Index rows : {1, 5, 16, 37, 64, 192})
    for (Index cols : {1, 3, 4, 7, 16, 65}) {
      const Mat<S> x = uniform<S>(rng, rows, cols, 2.0);
      Vec<S> max_abs(cols), norm2(cols);
      column_stats(x, max_abs, norm2);
      const Vec<S> want_max = x.cwiseAbs().colwise().maxCoeff().transpose();
      const Vec<S> want_norm2 = x.colwise().squaredNorm().transpose();
      if (!tally.record(max_abs == want_max &&
                        !((norm2 - want_norm2).array().abs() > tolerance * want_norm2.array()).any())) {
        std::printf("  mismatch (%s): %ld x %ld\n", type, long(rows), long(cols));
      }
    }
  tally.report("column maxima and squared norms equal Eigen's");
}

// GruCell::param_cotangents_bounded: the factors param_cotangents_shared gives, bit for
// bit, and per block Σ_b max|u_b| max|v_b| and Σ_b ‖u_b‖² ‖v_b‖² as Eigen computes them.
template <class S>
void gru_bounds_match_eigen(const char* type, double tolerance) {
  Rng rng(13);
  auto random = [&](Index rows, Index cols) { return uniform<S>(rng, rows, cols, 2.0); };
  Tally tally{type};
  for (Index n : {1, 3, 8, 16, 21, 64})
    for (Index streams : {1, 2, 5, 16}) {
      const GruCell<S> cell(4, n);
      const Mat<S> f = random(cell.shared_factor_rows(), streams), c = random(n, streams);
      const Mat<S> v_max = random(2, streams).cwiseAbs(), v_norm2 = random(2, streams).cwiseAbs();
      std::array<Mat<S>, 2> u, want_u;
      for (Index k = 0; k < 2; ++k) u[k] = want_u[k] = Mat<S>::Zero(cell.blocks()[k].rows, streams);
      std::array<FactorBounds<S>, 2> bounds;
      cell.param_cotangents_bounded(f, c, v_max, v_norm2, u, bounds);
      cell.param_cotangents_shared(f, c, want_u);
      bool ok = u[0] == want_u[0] && u[1] == want_u[1];
      for (Index k = 0; k < 2; ++k) {
        const Mat<double> uk = want_u[k].template cast<double>();
        const double want_max =
            (uk.cwiseAbs().colwise().maxCoeff().array() * v_max.row(k).template cast<double>().array()).sum();
        const double want_norm2 =
            (uk.colwise().squaredNorm().array() * v_norm2.row(k).template cast<double>().array()).sum();
        ok = ok && std::abs(double(bounds[k].max) - want_max) <= tolerance * want_max &&
             std::abs(double(bounds[k].norm2) - want_norm2) <= tolerance * want_norm2;
      }
      if (!tally.record(ok)) {
        std::printf("  mismatch (%s): n = %ld, %ld streams\n", type, long(n), long(streams));
      }
    }
  tally.report("GRU cotangent factors and their bounds equal Eigen's");
}

// add_column_sum: out += α Σ of the chosen columns, as Eigen sums them.
template <class S>
void column_sums_match_eigen(const char* type, double tolerance) {
  Rng rng(17);
  Tally tally{type};
  for (Index rows : {1, 5, 16, 64, 70, 192})
    for (Index count : {0, 1, 2, 7}) {
      const Mat<S> u = uniform<S>(rng, rows, 9, 1.0);
      const Index cols[7] = {3, 0, 8, 3, 5, 1, 6};  // a column may come twice
      Vec<S> out = Vec<S>::Ones(rows), want = out;
      for (Index c = 0; c < count; ++c) want += S(-0.5) * u.col(cols[c]);
      add_column_sum(u, cols, count, S(-0.5), out.data());
      if (!tally.record(!((out - want).array().abs() > tolerance).any())) {
        std::printf("  mismatch (%s): %ld rows, %ld columns\n", type, long(rows), long(count));
      }
    }
  tally.report("column sums equal Eigen's");
}

// uoro_pass_column: g = coef·t + Σ of the chosen columns of u_c, t ← t/ρ0 + (1/ρ1)·Σ of
// those of u_ν, and Σ t_new², as Eigen computes them in double.
template <class S>
void pass_column_matches_eigen(const char* type, double tolerance) {
  Rng rng(29);
  Tally tally{type};
  for (Index rows : {1, 5, 16, 64, 70, 192})
    for (Index count : {0, 1, 2, 7}) {
      const Mat<S> u_c = uniform<S>(rng, rows, 9, 1.0), u_nu = uniform<S>(rng, rows, 9, 1.0);
      const Index streams[7] = {3, 0, 8, 4, 5, 1, 6};
      Vec<S> t = uniform<S>(rng, rows, 1, 1.0), g(rows + 1);
      g(rows) = S(5);
      const S coef = S(0.7), inv_rho0 = S(1.3), inv_rho1 = S(-0.4);
      Vec<double> sum_c = Vec<double>::Zero(rows), sum_nu = sum_c;
      for (Index c = 0; c < count; ++c) {
        sum_c += u_c.col(streams[c]).template cast<double>();
        sum_nu += u_nu.col(streams[c]).template cast<double>();
      }
      const Vec<double> want_g = double(coef) * t.template cast<double>() + sum_c;
      const Vec<double> want_t = double(inv_rho0) * t.template cast<double>() + double(inv_rho1) * sum_nu;
      const S norm2 =
          uoro_pass_column(u_c, u_nu, streams, count, coef, inv_rho0, inv_rho1, g.data(), t.data());
      const bool ok = (g.head(rows).template cast<double>() - want_g).cwiseAbs().maxCoeff() <= tolerance &&
                      (t.template cast<double>() - want_t).cwiseAbs().maxCoeff() <= tolerance &&
                      std::abs(double(norm2) - want_t.squaredNorm()) <= tolerance * want_t.squaredNorm() &&
                      g(rows) == S(5);  // nothing written past the column
      if (!tally.record(ok)) {
        std::printf("  mismatch (%s): %ld rows, %ld streams\n", type, long(rows), long(count));
      }
    }
  tally.report("UORO pass columns of a one-hot input equal Eigen's");
}

// The GRU on B streams (its gates and shared factors in one pass, the tangent's
// combination) against the single-stream kernels column by column (Eigen's expressions).
template <class S>
void gru_streams_match_one_stream(const char* type, double tolerance) {
  Rng rng(19);
  auto random = [&](Index rows, Index cols) { return uniform<S>(rng, rows, cols, 0.8); };
  Tally tally{type};
  for (Index n : {1, 3, 16, 21, 64})
    for (Index streams : {1, 2, 5, 16}) {
      const Index in = 4;
      GruCell<S> cell(in, n);
      cell.reserve_streams(streams);
      auto batch = cell.make_batch(streams);
      auto one = cell.make_cache();
      const Vec<S> theta = random(cell.param_size(), 1);
      const Mat<S> s = random(n, streams), x = random(in, streams), t = random(n, streams);
      Mat<S> next(n, streams), f(cell.shared_factor_rows(), streams), want_f = f, jvp(n, streams);
      GruCell<S>::input(batch, in) = x;
      cell.forward(theta.data(), s, batch, next, nullptr, &f);
      cell.shared_factors(batch, want_f);
      cell.jvp_state_shared(theta.data(), batch, f, t, jvp);
      double error = (f - want_f).cwiseAbs().maxCoeff();
      for (Index b = 0; b < streams; ++b) {
        Vec<S> next1(n), jvp1(n);
        GruCell<S>::input(one, in) = x.col(b);
        cell.forward(theta.data(), Vec<S>(s.col(b)), one, next1);
        cell.jvp_state(theta.data(), one, Vec<S>(t.col(b)), jvp1);
        error = std::max({error, double((next.col(b) - next1).cwiseAbs().maxCoeff()),
                          double((jvp.col(b) - jvp1).cwiseAbs().maxCoeff()),
                          double((batch.r.col(b) - one.r).cwiseAbs().maxCoeff()),
                          double((batch.z.col(b) - one.z).cwiseAbs().maxCoeff()),
                          double((batch.n.col(b) - one.n).cwiseAbs().maxCoeff()),
                          double((batch.hn.col(b) - one.hn).cwiseAbs().maxCoeff())});
      }
      if (!tally.record(error <= tolerance)) {
        std::printf("  mismatch (%s): n = %ld, %ld streams: %g\n", type, long(n), long(streams), error);
      }
    }
  tally.report("the GRU on many streams equals the one-stream GRU per column");
}

int main() {
  products_match_eigen<float>("float", 1e-5);
  products_match_eigen<double>("double", 1e-13);
  pass_sums_match_eigen<float>("float", 1e-5);
  pass_sums_match_eigen<double>("double", 1e-13);
  column_stats_match_eigen<float>("float", 1e-5);
  column_stats_match_eigen<double>("double", 1e-13);
  gru_bounds_match_eigen<float>("float", 1e-5);
  gru_bounds_match_eigen<double>("double", 1e-13);
  column_sums_match_eigen<float>("float", 1e-6);
  column_sums_match_eigen<double>("double", 1e-14);
  pass_column_matches_eigen<float>("float", 1e-5);
  pass_column_matches_eigen<double>("double", 1e-13);
  gru_streams_match_one_stream<float>("float", 1e-6);
  gru_streams_match_one_stream<double>("double", 1e-14);
  std::printf("%d failed\n", g_failures);
  return g_failures ? 1 : 0;
}
