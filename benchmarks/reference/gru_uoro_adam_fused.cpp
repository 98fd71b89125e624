// The fastest one-stream UORO (rank 1) + Adam step for a GRU on one-hot tokens we could
// write in one file, without the library's generality (one cell, rank 1, token inputs,
// exact Adam only) and without its safety (no divergence guard, no checks). The plain
// reference beside it (gru_uoro_adam.cpp) is the straightforward step; this one is the
// lower bound the library is measured against. Both learn exactly as the library does
// (same θ₀, same signs, same trajectory, to rounding), which a test checks.
//
// What it does that a straightforward step does not:
//  - W_hh is read once per step, not three times: the pass that updates θ (gradient,
//    θ̃, Adam) also accumulates, column by column from the new values, the next step's
//    W_hh·[h'; 1] and W_hh·s̃' (h' and the new s̃ are known before the pass), so the next
//    forward pass and tangent find their products done (a matrix times two vectors,
//    fused into the update). Only the first step computes them on their own.
//  - The one-hot input's column is gathered, not multiplied; in the pass only the hot
//    column and the bias of the input block get the outer-product terms, the other input
//    columns only θ̃'s rescaling and the memory term of the gradient.
//  - ‖νᵀ∂F/∂θ‖² from the factors: the ν-side factors are F ⊙ ν with ν = ±1, so their
//    squared norms are those of the per-unit factors F, times ‖[x; 1]‖² = 2 and
//    ‖[h; 1]‖²; ‖θ̃‖² is carried from the pass that wrote θ̃.
//  - One loop over the units for the cotangent factors, the tangent, and every norm and
//    dot product the normalizers need; one explicitly vectorized pass over (θ, θ̃, m, v)
//    for the gradient, θ̃, exact Adam (IEEE square root and division) and ‖θ̃'‖².
//
//   gru_uoro_adam_fused bench <hidden> <steps> <repeats>   best µs per step
//   gru_uoro_adam_fused phases <hidden> <steps> <repeats>  µs per step by phase
//   gru_uoro_adam_fused check                              as gru_uoro_adam check
//
// Same parameter layout as the library: column-major blocks [W_ih | b_ih] (3n, I + 1),
// [W_hh | b_hh] (3n, n + 1), readout [W | b] (O, n + 1), gate order r, z, n.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <type_traits>
#include <vector>

#include "uoro/common.hpp"  // the sign generator, so a check replays the library's signs

// Packets (SIMD vector types) as template arguments: their attributes, which GCC reports
// as ignored there, do not matter to these templates.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace {

using Eigen::Index;
namespace pk = Eigen::internal;

// An IEEE square root of a packet (Eigen's psqrt for float is an approximation under
// EIGEN_FAST_MATH; Adam here is exact): the instruction where there is one, else lane by lane.
template <class P>
P exact_sqrt(const P& x) {
  using S = typename pk::unpacket_traits<P>::type;
  constexpr int L = pk::unpacket_traits<P>::size;
  alignas(64) S lanes[L];
  pk::pstoreu(lanes, x);
  for (S& lane : lanes) lane = std::sqrt(lane);
  return pk::ploadu<P>(lanes);
}
#if defined(__AVX512F__)
inline pk::Packet16f exact_sqrt(const pk::Packet16f& x) { return _mm512_sqrt_ps(x); }
inline pk::Packet8d exact_sqrt(const pk::Packet8d& x) { return _mm512_sqrt_pd(x); }
#endif
#if defined(__AVX__)
inline pk::Packet8f exact_sqrt(const pk::Packet8f& x) { return _mm256_sqrt_ps(x); }
inline pk::Packet4d exact_sqrt(const pk::Packet4d& x) { return _mm256_sqrt_pd(x); }
#endif
#if defined(__SSE2__)
inline pk::Packet4f exact_sqrt(const pk::Packet4f& x) { return _mm_sqrt_ps(x); }
inline pk::Packet2d exact_sqrt(const pk::Packet2d& x) { return _mm_sqrt_pd(x); }
#endif

// The packet of the pass over (θ, θ̃, m, v): the widest, or 256 bits with -DPASS_BITS=256.
// The pass is bound by Adam's square root and division, which on the x86 parts with
// AVX-512 cost about as much per element at 256 bits as at 512 (measured: the same within
// noise at 256 units, 512 bits 3 % faster at 64).
#ifndef PASS_BITS
#define PASS_BITS 512
#endif
template <class S, class P = typename pk::packet_traits<S>::type>
using PassPacket =
    std::conditional_t<(PASS_BITS < 512 && sizeof(P) == 64), typename pk::unpacket_traits<P>::half, P>;

enum Phase { kForward, kTangent, kCellPass, kReadoutPass, kPhases };
constexpr const char* kPhaseNames[kPhases] = {
    "forward (gather, gates, readout, softmax, c)",
    "tangent and normalizers (factors, s~', norms, signs, rho)",
    "cell pass (gradient, theta~, Adam; next W_hh products)",
    "readout pass (gradient, Adam)",
};

// Per-phase wall time, accumulated over the steps a `phases` run times.
struct Laps {
  using Clock = std::chrono::steady_clock;
  std::array<double, kPhases> us{};
  Clock::time_point last;
  void start() { last = Clock::now(); }
  void lap(Phase phase) {
    const auto now = Clock::now();
    us[phase] += std::chrono::duration<double, std::micro>(now - last).count();
    last = now;
  }
};

template <class S>
class FusedGru {
  using P = typename pk::packet_traits<S>::type;
  static constexpr Index L = pk::unpacket_traits<P>::size;
  using Q = PassPacket<S>;  // the pass's
  static constexpr Index LQ = pk::unpacket_traits<Q>::size;
  using V = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using Arr = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
  using CArr = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

 public:
  // `fuse_ahead` off: the W_hh products are computed at the start of every step instead
  // of in the previous pass (the same values, for the phase breakdown).
  FusedGru(int inputs, int hidden, int outputs, double lr, bool fuse_ahead = true)
      : I(inputs), n(hidden), O(outputs), G(3 * Index(hidden)), lr(lr), fuse_ahead(fuse_ahead) {
    in_size = G * (I + 1);
    cell_size = in_size + G * (n + 1);
    theta = m = v = V::Zero(cell_size + O * (n + 1));
    tt = V::Zero(cell_size);
    hv = hv_next = V::Zero(n + 1);
    hv(n) = hv_next(n) = 1;
    st = st_next = nu = c = r = z = nn = hn = V::Zero(n);
    a_h = a_t = uc_in = uc_h = un_in = un_h = V::Zero(G);
    o = V::Zero(O);
    g_out = V::Zero(O * (n + 1));
  }

  template <bool kTimed = false>
  S step(int x, int y, Laps* laps = nullptr) {
    if constexpr (kTimed) laps->start();
    const S* W0 = theta.data();
    const S* W1 = W0 + in_size;
    const S* R = W0 + cell_size;

    // Forward: a_h = [W_hh | b_hh]·[h; 1] and a_t = W_hh·s̃ are ready from the last pass.
    if (!ahead) products(W1);
    {
      const S* wx = W0 + Index(x) * G;
      const S* wb = W0 + Index(I) * G;
      Arr ar(r.data(), n), az(z.data(), n), an(nn.data(), n), ahn(hn.data(), n);
      ar = ((CArr(wb, n) + CArr(wx, n)) + CArr(a_h.data(), n)).logistic();
      az = ((CArr(wb + n, n) + CArr(wx + n, n)) + CArr(a_h.data() + n, n)).logistic();
      ahn = CArr(a_h.data() + 2 * n, n);
      an = ((CArr(wb + 2 * n, n) + CArr(wx + 2 * n, n)) + ar * ahn).tanh();
      hv_next.head(n).array() = (S(1) - az) * an + az * hv.head(n).array();
    }
    const Eigen::Map<const Mat> Rm(R, O, n + 1);
    o.noalias() = Rm * hv_next;
    const S top = o.maxCoeff();
    const S log_norm = top + std::log((o.array() - top).exp().sum());
    const S loss = log_norm - o(y);
    o = (o.array() - log_norm).exp().matrix();  // probabilities; then ∂ℓ/∂o in place
    o(y) -= 1;
    c.noalias() = Rm.leftCols(n).transpose() * o;
    if constexpr (kTimed) laps->lap(kForward);

    // Per unit: the factors F of the gates' cotangents, F_r = (1 − z)(1 − n²) hn r(1 − r),
    // F_z = (h − n) z(1 − z), F_n = (1 − z)(1 − n²) r (hidden block), F_x = (1 − z)(1 − n²)
    // (input block); the cotangent factors of c and of ν; the tangent
    // s̃' = F_r ã_r + F_z ã_z + F_n ã_n + z s̃; and the sums the normalizers need.
    rng.fill_signs(nu);
    Sums<P> packets;
    Sums<S> rest;
    const Index whole = n / L * L;
    for (Index i = 0; i < whole; i += L) units(i, packets);
    for (Index i = whole; i < n; ++i) units(i, rest);
    const S sum_rz = pk::predux(packets.rz) + rest.rz, sum_nh = pk::predux(packets.nh) + rest.nh,
            sum_nx = pk::predux(packets.nx) + rest.nx, h2 = pk::predux(packets.h2) + rest.h2,
            st2 = pk::predux(packets.st2) + rest.st2, coef = pk::predux(packets.coef) + rest.coef;
    // ‖a‖² = ‖u_in‖²·‖[x; 1]‖² + ‖u_h‖²·‖[h; 1]‖², ‖u‖² = ‖F‖² as ν = ±1.
    const S a_norm2 = (sum_rz + sum_nx) * 2 + (sum_rz + sum_nh) * (h2 + 1);
    const S eps = S(1e-7);
    const S rho0 = std::sqrt(std::sqrt(tt_norm2) / (std::sqrt(st2) + eps)) + eps;
    const S rho1 = std::sqrt(std::sqrt(a_norm2) / (std::sqrt(S(n)) + eps)) + eps;
    st = rho0 * st_next + rho1 * nu;  // the new s̃
    ++t;
    const Consts k = consts(coef, 1 / rho0, 1 / rho1);
    if constexpr (kTimed) laps->lap(kTangent);

    // The pass over the cell's columns: g = u_c v_j + coef θ̃, θ̃ ← θ̃/ρ0 + u_ν v_j/ρ1,
    // Adam, ‖θ̃'‖²; over W_hh's columns also the next step's products.
    Q acc = pk::pset1<Q>(S(0));
    S tail = 0;
    for (Index j = 0; j <= I; ++j) {
      if (j == x || j == I)
        column<true, false>(j * G, uc_in.data(), un_in.data(), S(1), S(0), S(0), k, acc, tail);
      else
        column<false, false>(j * G, nullptr, nullptr, S(0), S(0), S(0), k, acc, tail);
    }
    if (fuse_ahead) {
      a_h.setZero();
      a_t.setZero();
      for (Index j = 0; j < n; ++j)
        column<true, true>(in_size + j * G, uc_h.data(), un_h.data(), hv[j], hv_next[j], st[j], k, acc, tail);
      column<true, true>(in_size + n * G, uc_h.data(), un_h.data(), S(1), S(1), S(0), k, acc, tail);
    } else {
      for (Index j = 0; j <= n; ++j)
        column<true, false>(in_size + j * G, uc_h.data(), un_h.data(), hv[j], S(0), S(0), k, acc, tail);
    }
    tt_norm2 = pk::predux(acc) + tail;
    if constexpr (kTimed) laps->lap(kCellPass);

    // The readout: exact gradient ∂ℓ/∂o ⊗ [h'; 1], then Adam over the block at once.
    Eigen::Map<Mat>(g_out.data(), O, n + 1).noalias() = o * hv_next.transpose();
    adam_only(cell_size, g_out.data(), O * (n + 1), k);
    hv.swap(hv_next);
    ahead = fuse_ahead;
    if constexpr (kTimed) laps->lap(kReadoutPass);
    return loss;
  }

  // Adam alone over all of θ from a gradient g (for the phase breakdown).
  void adam_sweep(const S* g) {
    ++t;
    const Consts k = consts(0, 1, 1);
    adam_only(0, g, theta.size(), k);
  }

  const int I, n, O;
  const Index G;
  const double lr;
  const bool fuse_ahead;
  Index in_size, cell_size;
  V theta, tt, m, v;  // θ, θ̃ (cell part), Adam's moments
  V hv, st;           // [h; 1] and s̃
  S tt_norm2 = 0;     // ‖θ̃‖², carried from the pass that wrote θ̃
  uoro::Rng rng;
  long t = 0;

 private:
  struct Consts {
    S coef, inv_rho0, inv_rho1, b1, b2, c1, c2, step, bias2, eps;
  };
  // A step's constants, t already advanced: UORO's coefficient and scales, and Adam's
  // (β1 = 0.9, β2 = 0.999, ε = 1e-8, as the library's defaults) with t's bias corrections.
  Consts consts(S coef, S inv_rho0, S inv_rho1) const {
    return {coef,
            inv_rho0,
            inv_rho1,
            S(0.9),
            S(0.999),
            S(1) - S(0.9),
            S(1) - S(0.999),
            S(lr / (1 - std::pow(0.9, double(t)))),
            S(1 / std::sqrt(1 - std::pow(0.999, double(t)))),
            S(1e-8)};
  }

  // Running sums over the units, in packets (T = P) or scalars (T = S, the last units).
  template <class T>
  struct Sums {
    T rz = pk::pset1<T>(S(0)), nh = rz, nx = rz, h2 = rz, st2 = rz, coef = rz;
  };

  // Units [i, i + |T|): the factors F, the cotangent factors of c and ν, the tangent s̃'
  // and the sums ‖F_r‖² + ‖F_z‖², ‖F_n‖², ‖F_x‖², ‖h‖², ‖s̃'‖² and c·s̃'.
  template <class T>
  void units(Index i, Sums<T>& sums) {
    using pk::padd;
    using pk::pmul;
    using pk::psub;
    const T one = pk::pset1<T>(S(1));
    const T ri = pk::ploadu<T>(r.data() + i), zi = pk::ploadu<T>(z.data() + i),
            ni = pk::ploadu<T>(nn.data() + i);
    const T hi = pk::ploadu<T>(hv.data() + i), ci = pk::ploadu<T>(c.data() + i),
            si = pk::ploadu<T>(nu.data() + i);
    const T fx = pmul(psub(one, zi), psub(one, pmul(ni, ni)));
    const T fr = pmul(pmul(pmul(fx, pk::ploadu<T>(hn.data() + i)), ri), psub(one, ri));
    const T fz = pmul(pmul(psub(hi, ni), zi), psub(one, zi));
    const T fn = pmul(fx, ri);
    const T s_next =
        padd(padd(padd(pmul(fr, pk::ploadu<T>(a_t.data() + i)), pmul(fz, pk::ploadu<T>(a_t.data() + n + i))),
                  pmul(fn, pk::ploadu<T>(a_t.data() + 2 * n + i))),
             pmul(zi, pk::ploadu<T>(st.data() + i)));
    pk::pstoreu(st_next.data() + i, s_next);
    const T cr = pmul(fr, ci), cz = pmul(fz, ci), nr = pmul(fr, si), nz = pmul(fz, si);
    pk::pstoreu(uc_in.data() + i, cr);
    pk::pstoreu(uc_h.data() + i, cr);
    pk::pstoreu(uc_in.data() + n + i, cz);
    pk::pstoreu(uc_h.data() + n + i, cz);
    pk::pstoreu(uc_h.data() + 2 * n + i, pmul(fn, ci));
    pk::pstoreu(uc_in.data() + 2 * n + i, pmul(fx, ci));
    pk::pstoreu(un_in.data() + i, nr);
    pk::pstoreu(un_h.data() + i, nr);
    pk::pstoreu(un_in.data() + n + i, nz);
    pk::pstoreu(un_h.data() + n + i, nz);
    pk::pstoreu(un_h.data() + 2 * n + i, pmul(fn, si));
    pk::pstoreu(un_in.data() + 2 * n + i, pmul(fx, si));
    sums.rz = padd(sums.rz, padd(pmul(fr, fr), pmul(fz, fz)));
    sums.nh = pk::pmadd(fn, fn, sums.nh);
    sums.nx = pk::pmadd(fx, fx, sums.nx);
    sums.h2 = pk::pmadd(hi, hi, sums.h2);
    sums.st2 = pk::pmadd(s_next, s_next, sums.st2);
    sums.coef = pk::pmadd(ci, s_next, sums.coef);
  }

  // a_h = [W_hh | b_hh]·[h; 1], a_t = W_hh·s̃: one sweep over W_hh's columns.
  void products(const S* W1) {
    a_h = Eigen::Map<const V>(W1 + n * G, G);
    a_t.setZero();
    for (Index j = 0; j < n; ++j) {
      const S* w = W1 + j * G;
      const S hj = hv[j], sj = st[j];
      S* __restrict ah = a_h.data();
      S* __restrict at = a_t.data();
      for (Index i = 0; i < G; ++i) {
        ah[i] += w[i] * hj;
        at[i] += w[i] * sj;
      }
    }
  }

  // One column of G rows at θ[off]. kFactors: the outer-product terms u_c·vj and
  // u_ν·vj/ρ1 (else the column is a cold input column: vj = 0). kAhead: also
  // a_h += θ'·hj_next and a_t += θ'·sj_next.
  template <bool kFactors, bool kAhead>
  void column(Index off, const S* __restrict uc, const S* __restrict un, S vj, S hj_next, S sj_next,
              const Consts& k, Q& acc, S& tail) {
    S* __restrict th = theta.data() + off;
    S* __restrict tc = tt.data() + off;
    S* __restrict mm = m.data() + off;
    S* __restrict vv = v.data() + off;
    S* __restrict ah = a_h.data();
    S* __restrict at = a_t.data();
    const S nu_scale = vj * k.inv_rho1;
    const Q p_vj = pk::pset1<Q>(vj), p_nu = pk::pset1<Q>(nu_scale), p_coef = pk::pset1<Q>(k.coef),
            p_rho0 = pk::pset1<Q>(k.inv_rho0), p_b1 = pk::pset1<Q>(k.b1), p_b2 = pk::pset1<Q>(k.b2),
            p_c1 = pk::pset1<Q>(k.c1), p_c2 = pk::pset1<Q>(k.c2), p_step = pk::pset1<Q>(k.step),
            p_bias2 = pk::pset1<Q>(k.bias2), p_eps = pk::pset1<Q>(k.eps), p_h = pk::pset1<Q>(hj_next),
            p_s = pk::pset1<Q>(sj_next);
    const Index whole = G / LQ * LQ;
    for (Index i = 0; i < whole; i += LQ) {
      const Q t_old = pk::ploadu<Q>(tc + i);
      Q g = pk::pmul(p_coef, t_old), t_new = pk::pmul(t_old, p_rho0);
      if constexpr (kFactors) {
        g = pk::padd(pk::pmul(pk::ploadu<Q>(uc + i), p_vj), g);
        t_new = pk::padd(t_new, pk::pmul(pk::ploadu<Q>(un + i), p_nu));
      }
      pk::pstoreu(tc + i, t_new);
      acc = pk::pmadd(t_new, t_new, acc);
      const Q m_new = pk::padd(pk::pmul(p_b1, pk::ploadu<Q>(mm + i)), pk::pmul(p_c1, g));
      const Q v_new = pk::padd(pk::pmul(p_b2, pk::ploadu<Q>(vv + i)), pk::pmul(pk::pmul(p_c2, g), g));
      pk::pstoreu(mm + i, m_new);
      pk::pstoreu(vv + i, v_new);
      const Q den = pk::padd(pk::pmul(exact_sqrt(v_new), p_bias2), p_eps);
      const Q th_new = pk::psub(pk::ploadu<Q>(th + i), pk::pdiv(pk::pmul(p_step, m_new), den));
      pk::pstoreu(th + i, th_new);
      if constexpr (kAhead) {
        pk::pstoreu(ah + i, pk::pmadd(th_new, p_h, pk::ploadu<Q>(ah + i)));
        pk::pstoreu(at + i, pk::pmadd(th_new, p_s, pk::ploadu<Q>(at + i)));
      }
    }
    for (Index i = whole; i < G; ++i) {
      S g = k.coef * tc[i], t_new = tc[i] * k.inv_rho0;
      if constexpr (kFactors) {
        g = uc[i] * vj + g;
        t_new = t_new + un[i] * nu_scale;
      }
      tc[i] = t_new;
      tail += t_new * t_new;
      mm[i] = k.b1 * mm[i] + k.c1 * g;
      vv[i] = k.b2 * vv[i] + k.c2 * g * g;
      th[i] -= k.step * mm[i] / (std::sqrt(vv[i]) * k.bias2 + k.eps);
      if constexpr (kAhead) {
        ah[i] += th[i] * hj_next;
        at[i] += th[i] * sj_next;
      }
    }
  }

  // Adam on θ[off, off + len) from a gradient g.
  void adam_only(Index off, const S* __restrict g, Index len, const Consts& k) {
    S* __restrict th = theta.data() + off;
    S* __restrict mm = m.data() + off;
    S* __restrict vv = v.data() + off;
    const Q p_b1 = pk::pset1<Q>(k.b1), p_b2 = pk::pset1<Q>(k.b2), p_c1 = pk::pset1<Q>(k.c1),
            p_c2 = pk::pset1<Q>(k.c2), p_step = pk::pset1<Q>(k.step), p_bias2 = pk::pset1<Q>(k.bias2),
            p_eps = pk::pset1<Q>(k.eps);
    const Index whole = len / LQ * LQ;
    for (Index i = 0; i < whole; i += LQ) {
      const Q gi = pk::ploadu<Q>(g + i);
      const Q m_new = pk::padd(pk::pmul(p_b1, pk::ploadu<Q>(mm + i)), pk::pmul(p_c1, gi));
      const Q v_new = pk::padd(pk::pmul(p_b2, pk::ploadu<Q>(vv + i)), pk::pmul(pk::pmul(p_c2, gi), gi));
      pk::pstoreu(mm + i, m_new);
      pk::pstoreu(vv + i, v_new);
      const Q den = pk::padd(pk::pmul(exact_sqrt(v_new), p_bias2), p_eps);
      pk::pstoreu(th + i, pk::psub(pk::ploadu<Q>(th + i), pk::pdiv(pk::pmul(p_step, m_new), den)));
    }
    for (Index i = whole; i < len; ++i) {
      mm[i] = k.b1 * mm[i] + k.c1 * g[i];
      vv[i] = k.b2 * vv[i] + k.c2 * g[i] * g[i];
      th[i] -= k.step * mm[i] / (std::sqrt(vv[i]) * k.bias2 + k.eps);
    }
  }

  bool ahead = false;  // a_h and a_t hold this step's products
  V hv_next, st_next, nu, c, r, z, nn, hn, a_h, a_t, uc_in, uc_h, un_in, un_h, o, g_out;
};

constexpr int kSymbols = 13;

// A learner as the benchmark times it: 13 symbols, PyTorch's init U(±1/√n) from a fixed
// generator, as the plain reference does.
FusedGru<float> bench_learner(int hidden, uoro::Rng& init, bool fuse_ahead = true) {
  FusedGru<float> learner(kSymbols, hidden, kSymbols, 1e-3, fuse_ahead);
  const float bound = 1 / std::sqrt(float(hidden));
  for (Index p = 0; p < learner.theta.size(); ++p)
    learner.theta(p) = bound * (2 * float(init.next() >> 40) * 0x1.0p-24f - 1);
  return learner;
}

// Times `steps` steps on random tokens: a fresh learner each repeat, warmed by 64 steps,
// as the plain reference and the library's benchmark do.
int bench(int hidden, long steps, int repeats) {
  const uoro::FlushSubnormals flush;  // as the library's steps do
  uoro::Rng init(0);
  std::vector<int> tokens(size_t(std::max(steps, 64L)) + 1);
  for (auto& token : tokens) token = int(init.next() % kSymbols);
  double best = 1e300, sink = 0;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    auto learner = bench_learner(hidden, init);
    for (long i = 0; i < 64; ++i) sink += learner.step(tokens[size_t(i)], tokens[size_t(i) + 1]);
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < steps; ++i) sink += learner.step(tokens[size_t(i)], tokens[size_t(i) + 1]);
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count() / double(steps));
  }
  std::printf("%.4f\n", best);
  return std::isfinite(sink) ? 0 : 1;
}

// The same runs with a clock read between phases (the best repeat's time per phase, in µs
// per step), with the W_hh products fused into the pass and, for comparison, computed
// at the start of each step; then a plain Adam sweep over |θ| elements on its own.
int phases(int hidden, long steps, int repeats) {
  const uoro::FlushSubnormals flush;
  uoro::Rng init(0);
  std::vector<int> tokens(size_t(std::max(steps, 64L)) + 1);
  for (auto& token : tokens) token = int(init.next() % kSymbols);
  double sink = 0;
  for (const bool fuse : {true, false}) {
    std::array<double, kPhases> best;
    best.fill(1e300);
    for (int repeat = 0; repeat < repeats; ++repeat) {
      auto learner = bench_learner(hidden, init, fuse);
      Laps laps;
      for (long i = 0; i < 64; ++i) sink += learner.step(tokens[size_t(i)], tokens[size_t(i) + 1]);
      for (long i = 0; i < steps; ++i)
        sink += learner.template step<true>(tokens[size_t(i)], tokens[size_t(i) + 1], &laps);
      for (int p = 0; p < kPhases; ++p)
        best[size_t(p)] = std::min(best[size_t(p)], laps.us[size_t(p)] / double(steps));
    }
    double total = 0;
    std::printf("GRU-%d, W_hh products %s:\n", hidden,
                fuse ? "in the previous pass" : "in the forward phase");
    for (int p = 0; p < kPhases; ++p) {
      std::printf("  %8.3f us  %s\n", best[size_t(p)], kPhaseNames[p]);
      total += best[size_t(p)];
    }
    std::printf("  %8.3f us  total (sum of the phases' best)\n", total);
  }
  // Adam alone (exact, float32) over as many elements as θ has, from a fixed gradient.
  auto learner = bench_learner(hidden, init);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(learner.theta.size(), 1e-3f);
  double adam_best = 1e300;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    for (long s = 0; s < steps; ++s) learner.adam_sweep(g.data());
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    adam_best = std::min(adam_best, took.count() / double(steps));
  }
  sink += learner.theta.sum();
  const long size = long(learner.theta.size());
  std::printf("Adam alone over %ld elements (|theta|, no gradient, no theta~): %.3f us\n", size, adam_best);
  return std::isfinite(sink) ? 0 : 1;
}

// stdin: I n O steps lr, then θ₀ (all parameters), the 4 words of the sign generator's
// state, and `steps` pairs x y. stdout: one loss per line, then θ, in float64.
int check() {
  int I, n, O;
  long steps;
  double lr;
  std::cin >> I >> n >> O >> steps >> lr;
  if (!std::cin) return 2;
  FusedGru<double> learner(I, n, O, lr);
  for (Index p = 0; p < learner.theta.size(); ++p) std::cin >> learner.theta(p);
  std::array<std::uint64_t, 4> state;
  for (auto& word : state) std::cin >> word;
  learner.rng.set_state(state);
  if (!std::cin) return 2;
  for (long i = 0; i < steps; ++i) {
    int x, y;
    std::cin >> x >> y;
    std::printf("%.17g\n", learner.step(x, y));
  }
  for (Index p = 0; p < learner.theta.size(); ++p) std::printf("%.17g\n", learner.theta(p));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "bench") == 0)
    return bench(std::atoi(argv[2]), std::atol(argv[3]), std::atoi(argv[4]));
  if (argc == 5 && std::strcmp(argv[1], "phases") == 0)
    return phases(std::atoi(argv[2]), std::atol(argv[3]), std::atoi(argv[4]));
  if (argc == 2 && std::strcmp(argv[1], "check") == 0) return check();
  std::fprintf(stderr, "usage: %s bench|phases <hidden> <steps> <repeats> | %s check < problem\n", argv[0],
               argv[0]);
  return 2;
}
