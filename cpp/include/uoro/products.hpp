// The dense kernels of a many-streams tick: W times B columns (forward pass, tangent),
// the rank-B parameter-side sums U Vᵀ, and the per-column statistics of the estimator's
// checks. At these sizes (a few hundred rows, B or I + n + 1 columns) Eigen's general
// product spent about a quarter of its time packing W into panels on every call (profile
// of a GRU-64 tick); here the micro-kernel reads the column-major operand where it lies.
// A tile of 3 SIMD vectors of rows × 4 columns stays in registers (12 accumulators: fits
// the 16 vector registers of SSE2 and AVX2 too), so W's tile is read once per 4 columns
// (per 8 with AVX-512 where W's band outgrows L1, see product_rows).
// Single-stream (matrix–vector) products stay with Eigen, but for the recurrent products
// an estimator's pass can fold in (column_product). Also here: the padding that
// lets a few-row output (the readout) run as whole bands, the column sums of a one-hot
// input's gradient, and a rank-1 UORO pass's two sums with θ̃'s update in one sweep.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

#include "uoro/common.hpp"

// Packet types carry vector attributes that GCC reports as ignored when they are template
// arguments; they are meant to be (as inside Eigen, which silences the same warning).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace uoro {
namespace detail {

template <class P>
inline constexpr int kLanes = Eigen::internal::unpacket_traits<P>::size;
template <class P>
using HalfPacket = typename Eigen::internal::unpacket_traits<P>::half;
inline constexpr int kTileVectors = 3;
template <class P>
constexpr Index smallest_lanes() {
  if constexpr (kLanes<HalfPacket<P>> < kLanes<P>)
    return smallest_lanes<HalfPacket<P>>();
  else
    return kLanes<P>;
}

// One tile: c[:, 0:NC] (RV packets of rows) = a b, or += α a b (kAdd), over k;
// b(p, j) = b[p·b_p + j·b_j].
template <class P, int RV, int NC, bool kAdd, class S>
inline void product_tile(Index k, const S* a, Index lda, const S* b, Index b_p, Index b_j, S alpha, S* c,
                         Index ldc) {
  using namespace Eigen::internal;
  constexpr int L = kLanes<P>;
  P acc[NC][RV];
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) acc[j][r] = pset1<P>(S(0));
  for (Index p = 0; p < k; ++p) {
    P col[RV];
    for (int r = 0; r < RV; ++r) col[r] = ploadu<P>(a + p * lda + r * L);
    const S* row = b + p * b_p;
    for (int j = 0; j < NC; ++j) {
      const P x = pset1<P>(row[j * b_j]);
      for (int r = 0; r < RV; ++r) acc[j][r] = pmadd(col[r], x, acc[j][r]);
    }
  }
  const P scale = pset1<P>(alpha);
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) {
      S* out = c + j * ldc + r * L;
      pstoreu(out, kAdd ? pmadd(scale, acc[j][r], ploadu<P>(out)) : acc[j][r]);
    }
}

// A band of RV packets of rows across all n columns, NC columns at a time: 12
// accumulators in a tile of 3 packets, 8 in a tile of one (enough independent
// multiply-adds to cover their latency).
template <class P, int RV, bool kAdd, class S, int NC = RV == 1 ? 8 : 4>
inline void product_band(Index n, Index k, const S* a, Index lda, const S* b, Index b_p, Index b_j, S alpha,
                         S* c, Index ldc) {
  Index j = 0;
  for (; j + NC <= n; j += NC)
    product_tile<P, RV, NC, kAdd>(k, a, lda, b + j * b_j, b_p, b_j, alpha, c + j * ldc, ldc);
  if constexpr (NC > 1)
    if (j < n)
      product_band<P, RV, kAdd, S, NC / 2>(n - j, k, a, lda, b + j * b_j, b_p, b_j, alpha, c + j * ldc, ldc);
}

// Rows [i, m) in bands of P's packets, then what is left in half packets (a 13-row
// readout: 8 + 4 rows with AVX-512). Returns the first row not done.
template <class P, bool kAdd, class S>
Index product_rows(Index i, Index m, Index n, Index k, const S* a, Index lda, const S* b, Index b_p,
                   Index b_j, S alpha, S* c, Index ldc) {
  constexpr int L = kLanes<P>;
  if constexpr (sizeof(P) == 64) {
    // AVX-512's 32 registers hold a tile of 3 packets × 8 columns (24 accumulators), which
    // reads a's band half as often. It pays where the band (3 packets × k) overflows a
    // 32 KiB L1 and b's entries of one k lie a column apart (a GRU-256's forward and
    // tangent products); elsewhere it was no faster. Each entry's sum is the same.
    if (b_j != 1 && kTileVectors * L * k * Index(sizeof(S)) > 32 * 1024) {
      for (; i + kTileVectors * L <= m; i += kTileVectors * L)
        product_band<P, kTileVectors, kAdd, S, 8>(n, k, a + i, lda, b, b_p, b_j, alpha, c + i, ldc);
    }
  }
  for (; i + kTileVectors * L <= m; i += kTileVectors * L)
    product_band<P, kTileVectors, kAdd>(n, k, a + i, lda, b, b_p, b_j, alpha, c + i, ldc);
  for (; i + L <= m; i += L) product_band<P, 1, kAdd>(n, k, a + i, lda, b, b_p, b_j, alpha, c + i, ldc);
  if constexpr (kLanes<HalfPacket<P>> < L)
    return product_rows<HalfPacket<P>, kAdd>(i, m, n, k, a, lda, b, b_p, b_j, alpha, c, ldc);
  else
    return i;
}

template <bool kAdd, class A, class B, class C, class S = typename C::Scalar>
void multiply(const A& a, const B& b, C& c, S alpha) {
  static_assert(!A::IsRowMajor && !C::IsRowMajor, "a and c must be column-major");
  eigen_assert(a.innerStride() == 1 && c.innerStride() == 1 && a.rows() == c.rows() && a.cols() == b.rows() &&
               b.cols() == c.cols());
  const Index m = c.rows();
  const Index b_p = B::IsRowMajor ? b.outerStride() : b.innerStride();
  const Index b_j = B::IsRowMajor ? b.innerStride() : b.outerStride();
  const Index i = product_rows<typename Eigen::internal::packet_traits<S>::type, kAdd>(
      0, m, c.cols(), a.cols(), a.data(), a.outerStride(), b.data(), b_p, b_j, alpha, c.data(),
      c.outerStride());
  if (i < m) {  // the last rows, below a whole half packet: Eigen's product
    if constexpr (kAdd)
      c.bottomRows(m - i).noalias() += alpha * (a.bottomRows(m - i) * b);
    else
      c.bottomRows(m - i).noalias() = a.bottomRows(m - i) * b;
  }
}

}  // namespace detail

// c = a b for a column-major a and c with contiguous columns, b any matrix with direct
// access (a block, a map or the transpose of one).
template <class A, class B, class C>
void multiply_into(const A& a, const B& b, C&& c) {
  detail::multiply<false>(a, b, c, typename std::decay_t<C>::Scalar(1));
}
// c += α a b.
template <class A, class B, class C>
void multiply_add(const A& a, const B& b, C&& c, typename std::decay_t<C>::Scalar alpha = 1) {
  detail::multiply<true>(a, b, c, alpha);
}

// The multiple of rows that the kernel covers with its packets, down to the smallest
// half packet: an output padded to it (a 13-row readout to 16 rows, with zero rows)
// runs as whole bands, none of its rows left to Eigen's product.
template <class S>
constexpr Index kernel_row_multiple() {
  return detail::smallest_lanes<typename Eigen::internal::packet_traits<S>::type>();
}
inline Index padded_rows(Index rows, Index multiple) { return (rows + multiple - 1) / multiple * multiple; }

// dst[0 : rows, :] = src[0 : rows, :] column by column, for copies into and out of
// padded matrices (Eigen's block copy peels for alignment on every short column).
template <class Src, class Dst>
void copy_rows(const Src& src, Dst&& dst, Index rows) {
  for (Index j = 0; j < src.cols(); ++j) {
    const auto* from = src.data() + j * src.outerStride();
    auto* to = dst.data() + j * dst.outerStride();
    for (Index i = 0; i < rows; ++i) to[i] = from[i];
  }
}

namespace detail {

// The pass's work on one packet (or one entry) of a chunk, given both sums there:
// g = coef·t + sum_c (added to g with kAccumulate), t ← t/ρ0 + (1/ρ1)·sum_ν; returns
// norm2 + t_new².
template <bool kAccumulate, class P, class S>
inline P pass_update(const P& sum_c, const P& sum_nu, S coef, S inv_rho0, S inv_rho1, S* g, S* t, P norm2) {
  using namespace Eigen::internal;
  if constexpr (std::is_same_v<P, S>) {
    const S old = *t;
    *g = kAccumulate ? *g + coef * old + sum_c : coef * old + sum_c;
    *t = old * inv_rho0 + inv_rho1 * sum_nu;
    return norm2 + *t * *t;
  } else {
    const P old = ploadu<P>(t);
    const P own = padd(pmul(pset1<P>(coef), old), sum_c);
    pstoreu(g, kAccumulate ? padd(ploadu<P>(g), own) : own);
    const P renewed = pmadd(pset1<P>(inv_rho1), sum_nu, pmul(old, pset1<P>(inv_rho0)));
    pstoreu(t, renewed);
    return pmadd(renewed, renewed, norm2);
  }
}

// A tile of uoro_pass_sums: RV packets of rows × NC columns of both sums in registers
// (2·RV·NC accumulators), then the pass's work on each packet as it leaves them.
template <bool kAccumulate, class P, int RV, int NC, class S>
inline P uoro_pass_tile(Index k, const S* a_c, const S* a_nu, Index lda, const S* b, Index b_p, S coef,
                        S inv_rho0, S inv_rho1, S* g, S* t, Index ldc, P norm2) {
  using namespace Eigen::internal;
  constexpr int L = kLanes<P>;
  P acc_c[NC][RV], acc_nu[NC][RV];
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) acc_c[j][r] = acc_nu[j][r] = pset1<P>(S(0));
  for (Index p = 0; p < k; ++p) {
    P col_c[RV], col_nu[RV];
    for (int r = 0; r < RV; ++r) {
      col_c[r] = ploadu<P>(a_c + p * lda + r * L);
      col_nu[r] = ploadu<P>(a_nu + p * lda + r * L);
    }
    const S* row = b + p * b_p;
    for (int j = 0; j < NC; ++j) {
      const P x = pset1<P>(row[j]);
      for (int r = 0; r < RV; ++r) {
        acc_c[j][r] = pmadd(col_c[r], x, acc_c[j][r]);
        acc_nu[j][r] = pmadd(col_nu[r], x, acc_nu[j][r]);
      }
    }
  }
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) {
      const Index at = j * ldc + r * L;
      norm2 = pass_update<kAccumulate>(acc_c[j][r], acc_nu[j][r], coef, inv_rho0, inv_rho1, g + at, t + at,
                                       norm2);
    }
  return norm2;
}

}  // namespace detail

inline constexpr Index kPassSumColumns = 4;  // the columns of uoro_pass_sums' tiles

// Columns per chunk of a many-streams pass over a block of `rows` rows: up to 16384
// values, so the chunk's gradient stays in cache, and whole tiles of uoro_pass_sums (a
// column left over runs as a matrix–vector product, which in every chunk cost a GRU-256
// about a tenth of its sums' time).
inline Index pass_chunk_columns(Index rows, Index cols) {
  const Index fit = std::max<Index>(1, 16384 / rows);
  return std::min(cols, fit >= kPassSumColumns ? fit / kPassSumColumns * kPassSumColumns : fit);
}

// The dense part of a rank-1 UORO pass over B streams, for one chunk of `cols` columns
// of a block (rows × cols, column-major, rows = a_c.rows()):
//   g = coef·t + A_c Bᵀ,   t ← t/ρ0 + (1/ρ1)·A_ν Bᵀ,   returns Σ t_new²,
// with b(p, j) = b[p·b_p + j] (the factors' rows j0 + j of stream p), over the streams
// [first, first + count) (all by default); kAccumulate adds to g. Both rank-B sums
// share B's entries and never leave registers before the update: one sweep over t, where
// separate products would each read and write their output and θ̃'s rescaling and norm
// would need sweeps of their own. AVX-512's 32 registers hold 3 packets × 4 columns of
// both sums; other instruction sets take one packet × 4.
template <bool kAccumulate = false, class S>
S uoro_pass_sums(const Mat<S>& a_c, const Mat<S>& a_nu, const S* b, Index b_p, Index cols, S coef, S inv_rho0,
                 S inv_rho1, S* g, S* t, Index first = 0, Index count = -1) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr int L = detail::kLanes<P>, RV = sizeof(P) == 64 ? 3 : 1, NC = kPassSumColumns;
  const Index rows = a_c.rows(), k = count < 0 ? a_c.cols() - first : count;
  const S* u_c = a_c.data() + first * rows;
  const S* u_nu = a_nu.data() + first * rows;
  b += first * b_p;
  P norm2 = pset1<P>(S(0));
  const auto band = [&](auto vectors, Index i) {
    constexpr int V = decltype(vectors)::value;
    Index j = 0;
    for (; j + NC <= cols; j += NC)
      norm2 = detail::uoro_pass_tile<kAccumulate, P, V, NC>(k, u_c + i, u_nu + i, rows, b + j, b_p, coef,
                                                            inv_rho0, inv_rho1, g + i + j * rows,
                                                            t + i + j * rows, rows, norm2);
    for (; j < cols; ++j)
      norm2 = detail::uoro_pass_tile<kAccumulate, P, V, 1>(k, u_c + i, u_nu + i, rows, b + j, b_p, coef,
                                                           inv_rho0, inv_rho1, g + i + j * rows,
                                                           t + i + j * rows, rows, norm2);
  };
  Index i = 0;
  for (; i + RV * L <= rows; i += RV * L) band(std::integral_constant<int, RV>{}, i);
  for (; i + L <= rows; i += L) band(std::integral_constant<int, 1>{}, i);
  S total = predux(norm2);
  for (Index j = 0; j < cols && i < rows; ++j)  // rows below a whole packet
    for (Index r = i; r < rows; ++r) {
      S sum_c = 0, sum_nu = 0;
      for (Index p = 0; p < k; ++p) {
        sum_c += u_c[r + p * rows] * b[p * b_p + j];
        sum_nu += u_nu[r + p * rows] * b[p * b_p + j];
      }
      total = detail::pass_update<kAccumulate>(sum_c, sum_nu, coef, inv_rho0, inv_rho1, g + r + j * rows,
                                               t + r + j * rows, total);
    }
  return total;
}

// out[0 : rows] += α Σ_c u.col(cols[c]) for c < count: the columns summed in registers
// and added to out once (adding them to out one by one would wait on each store).
template <class S>
void add_column_sum(const Mat<S>& u, const Index* cols, Index count, S alpha, S* __restrict out) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr Index L = detail::kLanes<P>, kBand = 4 * L;
  const Index rows = u.rows();
  Index i = 0;
  for (; i + kBand <= rows; i += kBand) {
    P acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = pset1<P>(S(0));
    for (Index c = 0; c < count; ++c) {
      const S* col = u.col(cols[c]).data() + i;
      for (int r = 0; r < 4; ++r) acc[r] = padd(acc[r], ploadu<P>(col + r * L));
    }
    const P a = pset1<P>(alpha);
    for (int r = 0; r < 4; ++r) pstoreu(out + i + r * L, pmadd(a, acc[r], ploadu<P>(out + i + r * L)));
  }
  for (; i < rows; ++i) {
    S sum = 0;
    for (Index c = 0; c < count; ++c) sum += u(i, cols[c]);
    out[i] += alpha * sum;
  }
}

// uoro_pass_sums for a column of a one-hot input, where v is 1 for the streams reading
// its symbol (`streams[0 : count]`) and 0 for the others: over the block's rows,
//   g = coef·t + Σ_c u_c.col(streams[c]),   t ← t/ρ0 + (1/ρ1)·Σ_c u_ν.col(streams[c]),
// the sums in registers (added to g with kAccumulate); returns Σ t_new².
template <bool kAccumulate = false, class S>
S uoro_pass_column(const Mat<S>& u_c, const Mat<S>& u_nu, const Index* streams, Index count, S coef,
                   S inv_rho0, S inv_rho1, S* __restrict g, S* __restrict t) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr Index L = detail::kLanes<P>, kBand = 4 * L;
  const Index rows = u_c.rows();
  P norm2 = pset1<P>(S(0));
  Index i = 0;
  for (; i + kBand <= rows; i += kBand) {
    P sum_c[4], sum_nu[4];
    for (int r = 0; r < 4; ++r) sum_c[r] = sum_nu[r] = pset1<P>(S(0));
    for (Index s = 0; s < count; ++s) {
      const S* col_c = u_c.col(streams[s]).data() + i;
      const S* col_nu = u_nu.col(streams[s]).data() + i;
      for (int r = 0; r < 4; ++r) {
        sum_c[r] = padd(sum_c[r], ploadu<P>(col_c + r * L));
        sum_nu[r] = padd(sum_nu[r], ploadu<P>(col_nu + r * L));
      }
    }
    for (int r = 0; r < 4; ++r)
      norm2 = detail::pass_update<kAccumulate>(sum_c[r], sum_nu[r], coef, inv_rho0, inv_rho1, g + i + r * L,
                                               t + i + r * L, norm2);
  }
  S total = predux(norm2);
  for (; i < rows; ++i) {
    S sum_c = 0, sum_nu = 0;
    for (Index s = 0; s < count; ++s) {
      sum_c += u_c(i, streams[s]);
      sum_nu += u_nu(i, streams[s]);
    }
    total = detail::pass_update<kAccumulate>(sum_c, sum_nu, coef, inv_rho0, inv_rho1, g + i, t + i, total);
  }
  return total;
}

// With one estimate per stream (stream_groups = B) the passes above would run once per
// stream over its own θ̃, the first writing g and the others adding to it. The
// *_per_stream forms hold a tile of g in registers across the streams, and fold 1/ρ1 into
// u_ν once per tile: per entry and stream, two multiply-adds for g, a multiply and a
// multiply-add for θ̃ and one for its norm, where the per-group passes spend eight
// operations (at 16 streams of a GRU-64 this pass is about half of a tick).
// Stream p's θ̃ starts at t + p·t_p and its scales are coef[p], inv_rho0[p] and
// inv_rho1[p]; per entry (i, j) of the chunk
//   g = Σ_p (coef_p·t_p + u_c,p(i)·v_p(j)),   t_p ← t_p/ρ0_p + (u_ν,p(i)/ρ1_p)·v_p(j),
// and norm2[p] += Σ t_p,new² (added); `lanes` is scratch for one packet per stream.
// kLazy (the caller keeps θ̃_p = σ_p·t_p, folds 1/ρ0 into σ_p and tracks the norm
// itself): t_p ← t_p + (u_ν,p(i)/ρ1_p)·v_p(j), inv_rho0 and norm2 unread, three
// multiply-adds per entry and stream instead of five.
namespace detail {

template <bool kLazy, class P, int RV, int NC, class S>
inline void uoro_pass_tile_per_stream(Index streams, const S* a_c, const S* a_nu, Index lda, const S* b,
                                      Index b_p, const S* coef, const S* inv_rho0, const S* inv_rho1, S* g,
                                      S* t, Index t_p, Index ldc, S* lanes) {
  using namespace Eigen::internal;
  constexpr int L = kLanes<P>;
  P acc[NC][RV];
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) acc[j][r] = pset1<P>(S(0));
  for (Index p = 0; p < streams; ++p) {
    P col_c[RV], col_nu[RV];
    const P rho1 = pset1<P>(inv_rho1[p]);
    for (int r = 0; r < RV; ++r) {
      col_c[r] = ploadu<P>(a_c + p * lda + r * L);
      col_nu[r] = pmul(ploadu<P>(a_nu + p * lda + r * L), rho1);
    }
    const P c = pset1<P>(coef[p]);
    const S* row = b + p * b_p;
    S* tp = t + p * t_p;
    P rho0{}, norm2{};
    if constexpr (!kLazy) rho0 = pset1<P>(inv_rho0[p]), norm2 = ploadu<P>(lanes + p * L);
    for (int j = 0; j < NC; ++j) {
      const P x = pset1<P>(row[j]);
      for (int r = 0; r < RV; ++r) {
        const Index at = j * ldc + r * L;
        const P old = ploadu<P>(tp + at);
        acc[j][r] = pmadd(col_c[r], x, pmadd(c, old, acc[j][r]));
        if constexpr (kLazy) {
          pstoreu(tp + at, pmadd(col_nu[r], x, old));
        } else {
          const P renewed = pmadd(col_nu[r], x, pmul(old, rho0));
          pstoreu(tp + at, renewed);
          norm2 = pmadd(renewed, renewed, norm2);
        }
      }
    }
    if constexpr (!kLazy) pstoreu(lanes + p * L, norm2);
  }
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < RV; ++r) pstoreu(g + j * ldc + r * L, acc[j][r]);
}

// The entries below a whole packet, one at a time, in the same order as the tiles.
template <bool kLazy, class S, class X>
void uoro_pass_tail_per_stream(Index streams, Index first_row, Index rows, Index cols, const S* a_c,
                               const S* a_nu, X&& x_at, const S* coef, const S* inv_rho0, const S* inv_rho1,
                               S* g, S* t, Index t_p, S* norm2) {
  for (Index j = 0; j < cols; ++j)
    for (Index r = first_row; r < rows; ++r) g[r + j * rows] = S(0);
  for (Index p = 0; p < streams; ++p) {
    S total = 0;
    for (Index j = 0; j < cols; ++j) {
      const S x = x_at(p, j);
      for (Index r = first_row; r < rows; ++r) {
        S& at_t = t[p * t_p + r + j * rows];
        const S old = at_t;
        g[r + j * rows] += coef[p] * old + a_c[p * rows + r] * x;
        if constexpr (kLazy) {
          at_t = old + a_nu[p * rows + r] * inv_rho1[p] * x;
        } else {
          at_t = old * inv_rho0[p] + a_nu[p * rows + r] * inv_rho1[p] * x;
          total += at_t * at_t;
        }
      }
    }
    if constexpr (!kLazy) norm2[p] += total;
  }
}

}  // namespace detail

// uoro_pass_sums over every stream of a_c's columns, each with its own θ̃ (see above):
// v_p(j) = b[p·b_p + j].
template <bool kLazy = false, class S>
void uoro_pass_sums_per_stream(const Mat<S>& a_c, const Mat<S>& a_nu, const S* b, Index b_p, Index cols,
                               const S* coef, const S* inv_rho0, const S* inv_rho1, S* g, S* t, Index t_p,
                               S* norm2, S* lanes) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr int L = detail::kLanes<P>, RV = sizeof(P) == 64 ? 3 : 1, NC = kPassSumColumns;
  const Index rows = a_c.rows(), streams = a_c.cols();
  std::fill(lanes, lanes + streams * L, S(0));
  const auto band = [&](auto vectors, Index i) {
    constexpr int V = decltype(vectors)::value;
    Index j = 0;
    for (; j + NC <= cols; j += NC)
      detail::uoro_pass_tile_per_stream<kLazy, P, V, NC>(
          streams, a_c.data() + i, a_nu.data() + i, rows, b + j, b_p, coef, inv_rho0, inv_rho1,
          g + i + j * rows, t + i + j * rows, t_p, rows, lanes);
    for (; j < cols; ++j)
      detail::uoro_pass_tile_per_stream<kLazy, P, V, 1>(streams, a_c.data() + i, a_nu.data() + i, rows, b + j,
                                                        b_p, coef, inv_rho0, inv_rho1, g + i + j * rows,
                                                        t + i + j * rows, t_p, rows, lanes);
  };
  Index i = 0;
  for (; i + RV * L <= rows; i += RV * L) band(std::integral_constant<int, RV>{}, i);
  for (; i + L <= rows; i += L) band(std::integral_constant<int, 1>{}, i);
  if constexpr (!kLazy)
    for (Index p = 0; p < streams; ++p) norm2[p] += predux(ploadu<P>(lanes + p * L));
  if (i < rows)
    detail::uoro_pass_tail_per_stream<kLazy>(
        streams, i, rows, cols, a_c.data(), a_nu.data(), [&](Index p, Index j) { return b[p * b_p + j]; },
        coef, inv_rho0, inv_rho1, g, t, t_p, norm2);
}

// uoro_pass_column over every stream, each with its own θ̃ (see above): v_p is 1 when
// reads(p) (stream p reads this column's symbol) and 0 otherwise.
template <bool kLazy = false, class S, class Reads>
void uoro_pass_column_per_stream(const Mat<S>& u_c, const Mat<S>& u_nu, Reads&& reads, const S* coef,
                                 const S* inv_rho0, const S* inv_rho1, S* __restrict g, S* __restrict t,
                                 Index t_p, S* norm2, S* lanes) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr Index L = detail::kLanes<P>, kBand = 4 * L;
  const Index rows = u_c.rows(), streams = u_c.cols();
  std::fill(lanes, lanes + streams * L, S(0));
  Index i = 0;
  for (; i + kBand <= rows; i += kBand) {
    P acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = pset1<P>(S(0));
    for (Index p = 0; p < streams; ++p) {
      const P c = pset1<P>(coef[p]), rho1 = pset1<P>(inv_rho1[p]);
      S* tp = t + p * t_p + i;
      P rho0{}, norm{};
      if constexpr (!kLazy) rho0 = pset1<P>(inv_rho0[p]), norm = ploadu<P>(lanes + p * L);
      if (reads(p)) {
        const S* col_c = u_c.col(p).data() + i;
        const S* col_nu = u_nu.col(p).data() + i;
        for (int r = 0; r < 4; ++r) {
          const P old = ploadu<P>(tp + r * L);
          acc[r] = padd(pmadd(c, old, acc[r]), ploadu<P>(col_c + r * L));
          if constexpr (kLazy) {
            pstoreu(tp + r * L, pmadd(rho1, ploadu<P>(col_nu + r * L), old));
          } else {
            const P renewed = pmadd(rho1, ploadu<P>(col_nu + r * L), pmul(old, rho0));
            pstoreu(tp + r * L, renewed);
            norm = pmadd(renewed, renewed, norm);
          }
        }
      } else {
        for (int r = 0; r < 4; ++r) {
          const P old = ploadu<P>(tp + r * L);
          acc[r] = pmadd(c, old, acc[r]);
          if constexpr (!kLazy) {  // lazy: a stream not reading the symbol leaves its t as it is
            const P renewed = pmul(old, rho0);
            pstoreu(tp + r * L, renewed);
            norm = pmadd(renewed, renewed, norm);
          }
        }
      }
      if constexpr (!kLazy) pstoreu(lanes + p * L, norm);
    }
    for (int r = 0; r < 4; ++r) pstoreu(g + i + r * L, acc[r]);
  }
  if constexpr (!kLazy)
    for (Index p = 0; p < streams; ++p) norm2[p] += predux(ploadu<P>(lanes + p * L));
  if (i < rows)
    detail::uoro_pass_tail_per_stream<kLazy>(
        streams, i, rows, Index(1), u_c.data(), u_nu.data(),
        [&](Index p, Index) { return S(reads(p) ? 1 : 0); }, coef, inv_rho0, inv_rho1, g, t, t_p, norm2);
}

// Bounds on a rank-B parameter-side sum Σ_b u_b ⊗ v_b, for the estimator's checks:
// max = Σ_b max|u_b| max|v_b| bounds its entries, norm2 = Σ_b ‖u_b‖² ‖v_b‖².
template <class S>
struct FactorBounds {
  S max = 0, norm2 = 0;
};

// Per column b of x: max|x_b| and ‖x_b‖², four columns at a time so that their
// reductions overlap (Eigen's column-wise reductions finish one column before the next).
template <class S, class Max, class Norm2>
void column_stats(const Mat<S>& x, Max&& max_abs, Norm2&& norm2) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr Index L = unpacket_traits<P>::size, kCols = 4;
  const Index rows = x.rows(), whole = rows / L * L;
  Index b = 0;
  for (; b + kCols <= x.cols(); b += kCols) {
    P mx[kCols], sq[kCols];
    for (Index j = 0; j < kCols; ++j) mx[j] = sq[j] = pset1<P>(S(0));
    for (Index i = 0; i < whole; i += L)
      for (Index j = 0; j < kCols; ++j) {
        const P v = ploadu<P>(x.col(b + j).data() + i);
        mx[j] = pmax(mx[j], pabs(v));
        sq[j] = pmadd(v, v, sq[j]);
      }
    // Rows below a whole packet (all of a short column), the columns interleaved too.
    S tail_max[kCols] = {}, tail_norm2[kCols] = {};
    for (Index i = whole; i < rows; ++i)
      for (Index j = 0; j < kCols; ++j) {
        const S v = x(i, b + j);
        tail_max[j] = std::max(tail_max[j], std::abs(v));
        tail_norm2[j] += v * v;
      }
    for (Index j = 0; j < kCols; ++j) {
      max_abs(b + j) = whole ? std::max(predux_max(mx[j]), tail_max[j]) : tail_max[j];
      norm2(b + j) = whole ? predux(sq[j]) + tail_norm2[j] : tail_norm2[j];
    }
  }
  for (; b < x.cols(); ++b) {
    max_abs(b) = x.col(b).cwiseAbs().maxCoeff();
    norm2(b) = x.col(b).squaredNorm();
  }
}

// out = Σ_j w[:, j] x_j (w: rows × cols, column-major), every element accumulated in
// column order by fused multiply-adds from zero, the whole packets of each column as
// packets and the rows below one element by element. That order is the one a pass that
// writes w column by column can accumulate in (FoldedProducts), so the product computed
// here and the one folded into a pass are the same bits.
template <class S>
void column_product(const S* w, Index rows, Index cols, const S* x, S* __restrict out) {
  using namespace Eigen::internal;
  using P = typename packet_traits<S>::type;
  constexpr Index L = unpacket_traits<P>::size, kBand = 4;  // packets of rows kept in registers
  const Index whole = rows / L * L;
  Index i = 0;
  for (; i + kBand * L <= whole; i += kBand * L) {
    P acc[kBand];
    for (Index r = 0; r < kBand; ++r) acc[r] = pset1<P>(S(0));
    for (Index j = 0; j < cols; ++j) {
      const P xj = pset1<P>(x[j]);
      for (Index r = 0; r < kBand; ++r) acc[r] = pmadd(ploadu<P>(w + j * rows + i + r * L), xj, acc[r]);
    }
    for (Index r = 0; r < kBand; ++r) pstoreu(out + i + r * L, acc[r]);
  }
  for (; i < whole; i += L) {
    P acc = pset1<P>(S(0));
    for (Index j = 0; j < cols; ++j) acc = pmadd(ploadu<P>(w + j * rows + i), pset1<P>(x[j]), acc);
    pstoreu(out + i, acc);
  }
  for (; i < rows; ++i) {
    S acc = 0;
    for (Index j = 0; j < cols; ++j) acc = std::fma(w[j * rows + i], x[j], acc);
    out[i] = acc;
  }
}

// A cell's recurrent products for its next step, W [h; 1] (the forward pass's) and W h̃
// (the tangent's), accumulated by an estimator's pass from the new W while it writes it,
// column by column in column_product's order. Each is used once, by the call it was
// computed for; whoever writes θ, the state or the estimator's memory otherwise drops
// them (the learner), and the cell then computes them itself, to the same bits.
template <class S>
struct FoldedProducts {
  Vec<S> state, tangent;  // W [h; 1], W h̃
  bool state_ready = false, tangent_ready = false;

  explicit FoldedProducts(Index rows = 0) : state(Vec<S>::Zero(rows)), tangent(Vec<S>::Zero(rows)) {}
  void drop() { state_ready = tangent_ready = false; }
  // W [h; 1] with W the n + 1 columns at w (v = [h; 1]): folded, or computed here.
  const Vec<S>& state_product(const S* w, Index n, const S* v) {
    if (!std::exchange(state_ready, false)) column_product(w, state.size(), n + 1, v, state.data());
    return state;
  }
  // W h̃ with W's first n columns.
  const Vec<S>& tangent_product(const S* w, Index n, const S* h_tilde) {
    if (!std::exchange(tangent_ready, false)) column_product(w, tangent.size(), n, h_tilde, tangent.data());
    return tangent;
  }
};

// out = w x for a cell: Eigen's matrix–vector product for one stream, the kernel above
// for B columns.
template <class W, class X, class O>
void assign_product(const W& w, const X& x, O&& out) {
  if constexpr (X::ColsAtCompileTime == 1)
    out.noalias() = w * x;
  else
    multiply_into(w, x, out);
}
template <class W, class X, class O>
void add_product(const W& w, const X& x, O&& out) {
  if constexpr (X::ColsAtCompileTime == 1)
    out.noalias() += w * x;
  else
    multiply_add(w, x, out);
}

}  // namespace uoro

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
