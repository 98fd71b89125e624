// The many-streams kernels (products.hpp) against Eigen's: the matrix products, on shapes that reach
// every path of the kernel: whole tiles, the last columns, bands of one packet, half
// packets and the rows left to Eigen; b column-major or transposed; c = a b and c += α a b.
// And the per-column statistics of the estimator's checks.
// Built once per instruction-set variant (run_core_checks.py --products), since the
// packet sizes and so the paths taken differ with the SIMD width.
#include <cstdio>
#include <string>

#include "uoro/products.hpp"

using namespace uoro;

static int g_failures = 0;
static int g_checks = 0;

template <class S>
void products_match_eigen(const char* type, double tolerance) {
  using M = Mat<S>;
  Rng rng(5);
  auto random = [&](Index rows, Index cols) {
    M m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m(i) = S(double(rng.next() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    return m;
  };
  int failed = 0, done = 0;
  for (Index rows : {1, 3, 4, 13, 16, 29, 48, 64, 97, 192})
    for (Index cols : {1, 2, 3, 4, 5, 9, 16, 65})
      for (Index depth : {0, 1, 7, 16, 65}) {
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
        ++done;
        if (!(into && add && into_t && outside)) {
          ++failed;
          std::printf("  mismatch (%s): %ld x %ld times %ld x %ld\n", type, long(rows), long(depth),
                      long(depth), long(cols));
        }
      }
  ++g_checks;
  if (failed) ++g_failures;
  std::printf("%s %s: %d shapes, products equal Eigen's\n", failed ? "FAIL" : "ok  ", type, done - failed);
}

// column_stats: max|x_b| and ‖x_b‖² per column, as Eigen's column-wise reductions give.
template <class S>
void column_stats_match_eigen(const char* type, double tolerance) {
  Rng rng(9);
  int failed = 0, done = 0;
  for (Index rows : {1, 5, 16, 37, 64, 192})
    for (Index cols : {1, 3, 4, 7, 16, 65}) {
      Mat<S> x(rows, cols);
      for (Index i = 0; i < x.size(); ++i) x(i) = S(double(rng.next() >> 11) * 0x1.0p-53 * 4.0 - 2.0);
      Vec<S> max_abs(cols), norm2(cols);
      column_stats(x, max_abs, norm2);
      const Vec<S> want_max = x.cwiseAbs().colwise().maxCoeff().transpose();
      const Vec<S> want_norm2 = x.colwise().squaredNorm().transpose();
      ++done;
      if (max_abs != want_max ||
          ((norm2 - want_norm2).array().abs() > tolerance * want_norm2.array()).any()) {
        ++failed;
        std::printf("  mismatch (%s): %ld x %ld\n", type, long(rows), long(cols));
      }
    }
  ++g_checks;
  if (failed) ++g_failures;
  std::printf("%s %s: %d shapes, column maxima and squared norms equal Eigen's\n", failed ? "FAIL" : "ok  ",
              type, done - failed);
}

int main() {
  products_match_eigen<float>("float", 1e-5);
  products_match_eigen<double>("double", 1e-13);
  column_stats_match_eigen<float>("float", 1e-5);
  column_stats_match_eigen<double>("double", 1e-13);
  std::printf("%d failed\n", g_failures);
  return g_failures ? 1 : 0;
}
