// A straightforward UORO + Adam learner for a GRU on one-hot tokens, written in one
// file without the library's generality (one cell, rank 1, token inputs, Adam only)
// and without its safety (no divergence guard, no checks of any kind). It is the
// yardstick the speed targets are stated against: "a straightforward fused C++ step,
// one pass over the parameter arrays for gradient, θ̃ and Adam". The benchmark times it
// beside the library in one run; a test checks that it learns exactly as the library
// does (same θ₀, same signs, same trajectory), so the comparison is like for like.
//
//   gru_uoro_adam bench <hidden> <steps> <repeats>   prints the best µs per step
//   gru_uoro_adam check                    reads a problem on stdin (see `check`),
//                                          prints the losses and the final θ (float64)
//
// Same parameter layout as the library: column-major blocks [W_ih | b_ih] (3n, I + 1),
// [W_hh | b_hh] (3n, n + 1), readout [W | b] (O, n + 1), gate order r, z, n.
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "uoro/common.hpp"  // the sign generator only, so a check replays the library's signs

template <class S>
class GruUoroAdam {
  using V = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using M = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>>;

 public:
  GruUoroAdam(int inputs, int hidden, int outputs, double lr)
      : I(inputs), n(hidden), O(outputs), G(3 * hidden), lr(lr) {
    const int cell_params = G * (I + 1) + G * (n + 1);
    theta = m = v = V::Zero(cell_params + O * (n + 1));
    tt = V::Zero(cell_params);
    h = st = st_next = nu = V::Zero(n);
    a_in = a_h = a_t = uc = un = V::Zero(G);
    hv = hv_next = V::Zero(n + 1);
    hv(n) = hv_next(n) = 1;
    o = V::Zero(O);
  }

  S step(int x, int y) {
    M W0(theta.data(), G, I + 1), W1(W0.data() + W0.size(), G, n + 1), R(W1.data() + W1.size(), O, n + 1);

    // Forward: gates, new state, readout, loss.
    hv.head(n) = h;
    a_in = W0.col(x) + W0.col(I);
    a_h.noalias() = W1 * hv;
    const auto r = (a_in.head(n) + a_h.head(n)).array().logistic().eval();
    const auto z = (a_in.segment(n, n) + a_h.segment(n, n)).array().logistic().eval();
    const auto hn = a_h.tail(n).array();
    const auto nn = (a_in.tail(n).array() + r * hn).tanh().eval();
    hv_next.head(n) = ((S(1) - z) * nn + z * h.array()).matrix();
    o.noalias() = R * hv_next;
    const S top = o.maxCoeff();
    const S log_norm = top + std::log((o.array() - top).exp().sum());
    const S loss = log_norm - o(y);
    o = (o.array() - log_norm).exp().matrix();  // probabilities; then ∂ℓ/∂o in place
    o(y) -= 1;
    const V c = R.leftCols(n).transpose() * o;

    // Gate cotangents of c (the hidden block's third gate carries r) and of ν.
    const auto hprev = h.array();
    auto cotangents = [&](const auto& w, V& u) {
      const auto dn = w * (S(1) - z) * (S(1) - nn.square());
      u.head(n) = (dn * hn * r * (S(1) - r)).matrix();
      u.segment(n, n) = (w * (hprev - nn) * z * (S(1) - z)).matrix();
      u.tail(n) = dn.matrix();  // input block; the hidden block uses dn ⊙ r
    };
    cotangents(c.array(), uc);

    // Tangent propagation s̃' = (∂F/∂s) s̃ and the normalizers.
    a_t.noalias() = W1.leftCols(n) * st;
    const auto r_t = r * (S(1) - r) * a_t.head(n).array();
    const auto z_t = z * (S(1) - z) * a_t.segment(n, n).array();
    const auto n_t = (S(1) - nn.square()) * (r_t * hn + r * a_t.tail(n).array());
    st_next = ((S(1) - z) * n_t + z_t * (hprev - nn) + z * st.array()).matrix();
    const S coef = c.dot(st_next);
    rng.fill_signs(nu);
    cotangents(nu.array(), un);
    const S un_in2 = un.squaredNorm();
    const S un_hid2 = un.head(2 * n).squaredNorm() + (un.tail(n).array() * r).matrix().squaredNorm();
    const S a_norm2 = un_in2 * 2 + un_hid2 * hv.squaredNorm();  // ‖[x; 1]‖² = 2 for a token
    const S eps = S(1e-7);
    const S rho0 = std::sqrt(std::sqrt(tt_norm2) / (st_next.norm() + eps)) + eps;
    const S rho1 = std::sqrt(std::sqrt(a_norm2) / (std::sqrt(S(n)) + eps)) + eps;
    st = rho0 * st_next + rho1 * nu;
    const S inv_rho0 = 1 / rho0, inv_rho1 = 1 / rho1;

    // Adam's constants for this step.
    ++t;
    const S b1 = S(0.9), b2 = S(0.999), c1 = 1 - b1, c2 = 1 - b2, adam_eps = S(1e-8);
    const S step_size = S(lr / (1 - std::pow(0.9, double(t))));
    const S bias2 = S(1 / std::sqrt(1 - std::pow(0.999, double(t))));

    // One pass over every column: gradient, θ̃ and Adam, element by element.
    const Adam adam{b1, b2, c1, c2, step_size, bias2, adam_eps};
    S norm2 = 0;
    auto column = [&](long off, long rows, const S* gu, const S* nu_f, S vj) {
      S* tc = nu_f ? tt.data() + off : nullptr;
      fused_column(theta.data() + off, m.data() + off, v.data() + off, tc, gu, nu_f, rows, vj, coef, inv_rho0,
                   vj * inv_rho1, adam);
      if (tc) norm2 += Eigen::Map<const V>(tc, rows).squaredNorm();
    };
    // The hidden block's third-gate factors, dn ⊙ r, in the scratch tails of a_in/a_t.
    V& uc_hid = a_in;
    V& un_hid = a_t;
    uc_hid.head(2 * n) = uc.head(2 * n);
    uc_hid.tail(n) = (uc.tail(n).array() * r).matrix();
    un_hid.head(2 * n) = un.head(2 * n);
    un_hid.tail(n) = (un.tail(n).array() * r).matrix();
    for (int j = 0; j <= I; ++j) column(long(j) * G, G, uc.data(), un.data(), S(j == x || j == I));
    const long hid = long(G) * (I + 1);
    for (int j = 0; j <= n; ++j) column(hid + long(j) * G, G, uc_hid.data(), un_hid.data(), hv(j));
    const long out = hid + long(G) * (n + 1);
    for (int j = 0; j <= n; ++j) column(out + long(j) * O, O, o.data(), nullptr, hv_next(j));
    tt_norm2 = norm2;
    h = hv_next.head(n);
    return loss;
  }

  const int I, n, O, G;
  const double lr;
  V theta, tt, m, v;  // θ, θ̃ (cell part), Adam's moments
  V h, st;            // state and s̃
  S tt_norm2 = 0;     // ‖θ̃‖², carried from the pass that wrote θ̃
  uoro::Rng rng;
  long t = 0;

 private:
  struct Adam {
    S b1, b2, c1, c2, step, bias2, eps;
  };

  // g = gu·vj (+ coef·θ̃), θ̃ ← θ̃/ρ0 + ν-factor·vj/ρ1 (cell columns, tc non-null), then Adam.
  static void fused_column(S* __restrict th, S* __restrict mm, S* __restrict vv, S* __restrict tc,
                           const S* __restrict gu, const S* __restrict nu_f, long rows, S vj, S coef,
                           S inv_rho0, S nu_scale, const Adam a) {
    if (tc) {
      for (long i = 0; i < rows; ++i) {
        const S g = gu[i] * vj + coef * tc[i];
        tc[i] = tc[i] * inv_rho0 + nu_f[i] * nu_scale;
        mm[i] = a.b1 * mm[i] + a.c1 * g;
        vv[i] = a.b2 * vv[i] + a.c2 * g * g;
        th[i] -= a.step * mm[i] / (std::sqrt(vv[i]) * a.bias2 + a.eps);
      }
    } else {  // the readout: exact gradient, no θ̃
      for (long i = 0; i < rows; ++i) {
        const S g = gu[i] * vj;
        mm[i] = a.b1 * mm[i] + a.c1 * g;
        vv[i] = a.b2 * vv[i] + a.c2 * g * g;
        th[i] -= a.step * mm[i] / (std::sqrt(vv[i]) * a.bias2 + a.eps);
      }
    }
  }

  V st_next, nu, a_in, a_h, a_t, uc, un, hv, hv_next, o;
};

// Times `steps` steps on random tokens (13 symbols): a fresh learner each repeat, warmed
// by 64 steps, as the library's benchmark does.
static int bench(int hidden, long steps, int repeats) {
  const int symbols = 13;
  uoro::Rng init(0);
  std::vector<int> tokens(size_t(std::max(steps, 64L)) + 1);
  for (auto& token : tokens) token = int(init.next() % symbols);
  double best = 1e300, sink = 0;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    GruUoroAdam<float> learner(symbols, hidden, symbols, 1e-3);  // PyTorch's init, U(±1/√n)
    const float bound = 1 / std::sqrt(float(hidden));
    for (long p = 0; p < learner.theta.size(); ++p)
      learner.theta(p) = bound * (2 * float(init.next() >> 40) * 0x1.0p-24f - 1);
    for (long i = 0; i < 64; ++i) sink += learner.step(tokens[size_t(i)], tokens[size_t(i) + 1]);
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < steps; ++i) sink += learner.step(tokens[size_t(i)], tokens[size_t(i) + 1]);
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count() / double(steps));
  }
  std::printf("%.4f\n", best);
  return std::isfinite(sink) ? 0 : 1;
}

// stdin: I n O steps lr, then θ₀ (all parameters), the 4 words of the sign generator's
// state, and `steps` pairs x y. stdout: one loss per line, then θ, in float64.
static int check() {
  int I, n, O;
  long steps;
  double lr;
  std::cin >> I >> n >> O >> steps >> lr;
  GruUoroAdam<double> learner(I, n, O, lr);
  for (long p = 0; p < learner.theta.size(); ++p) std::cin >> learner.theta(p);
  std::array<std::uint64_t, 4> state;
  for (auto& word : state) std::cin >> word;
  learner.rng.set_state(state);
  if (!std::cin) return 2;
  for (long i = 0; i < steps; ++i) {
    int x, y;
    std::cin >> x >> y;
    std::printf("%.17g\n", learner.step(x, y));
  }
  for (long p = 0; p < learner.theta.size(); ++p) std::printf("%.17g\n", learner.theta(p));
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "bench") == 0)
    return bench(std::atoi(argv[2]), std::atol(argv[3]), std::atoi(argv[4]));
  if (argc == 2 && std::strcmp(argv[1], "check") == 0) return check();
  std::fprintf(stderr, "usage: %s bench <hidden> <steps> <repeats> | %s check < problem\n", argv[0], argv[0]);
  return 2;
}
