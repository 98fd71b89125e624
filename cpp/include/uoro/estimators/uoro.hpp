// UORO (Tallec & Ollivier 2017, Algorithm 1), rank r: r independent pairs (s̃, θ̃) with
// E[s̃ ⊗ θ̃] = ∂s/∂θ, their gradient estimates averaged. The fused step produces the
// gradient, the new θ̃ and the optimizer update in one pass over the parameter blocks,
// column by column, from the outer-product factors; θ̃ spans the cell's parameters only
// (the readout's gradient is exact).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "uoro/estimator.hpp"

namespace uoro {

inline constexpr const char* kUoroSensitivity = "estimator's sensitivity ∂s/∂θ (UORO's s̃ ⊗ θ̃)";

// What a UORO step (one stream or many) computes per rank before its pass, and the
// checks it must pass to be committed: bounds on |g|, on the new |θ̃| and on the part of
// |g| that comes through θ̃.
template <class S>
class UoroChecks {
 public:
  explicit UoroChecks(S eps) : eps_(eps) {}

  // The gradient's part from this step's own parameter-VJP (bounded block by block).
  void add_direct_bound(S bound) { grad_bound_ = std::max(grad_bound_, bound); }

  // One rank: ρ0 = √(‖θ̃‖ / (‖s̃'‖ + ε)) + ε, ρ1 = √(‖a‖ / (‖ν‖ + ε)) + ε with a = νᵀ ∂F/∂θ
  // (given as ‖a‖² and a bound max|a|), and the rank's part of the bounds.
  struct Scales {
    S rho0, rho1, inv_rho0, inv_rho1;
  };
  Scales add_rank(S coef, S tt_norm, S s_next_norm, S a_norm2, S a_max, S nu_norm) {
    Scales k;
    k.rho0 = std::sqrt(tt_norm / (s_next_norm + eps_)) + eps_;
    k.rho1 = std::sqrt(std::sqrt(a_norm2) / (nu_norm + eps_)) + eps_;
    k.inv_rho0 = S(1) / k.rho0;
    k.inv_rho1 = S(1) / k.rho1;
    grad_bound_ += std::abs(coef) * tt_norm;
    memory_bound_ += std::abs(coef) * tt_norm;
    tilde_bound_ = std::max(tilde_bound_, tt_norm * k.inv_rho0 + a_max * k.inv_rho1);
    return k;
  }

  // Why the step must not be committed (the new s̃ given), or no refusal.
  template <class M>
  Refusal refusal(const M& s_tilde_next, const Optimizer<S>& optimizer) const {
    const S update_bound = S(optimizer.learning_rate() * double(grad_bound_));
    if (!bounded(s_tilde_next) || !bounded(tilde_bound_) || !bounded(memory_bound_))
      return {Refusal::Sensitivity, kUoroSensitivity,
              std::max({max_abs(s_tilde_next), double(tilde_bound_), double(memory_bound_)})};
    if (!bounded(grad_bound_)) return {Refusal::Gradient, "gradient estimate", double(grad_bound_)};
    if (!bounded(update_bound)) return {Refusal::Gradient, "parameter update", double(update_bound)};
    return {};
  }

 private:
  S eps_;
  S grad_bound_ = 0, tilde_bound_ = 0, memory_bound_ = 0;
};

template <class S, class Cell>
class Uoro {
  using Packet = typename Eigen::internal::packet_traits<S>::type;
  static constexpr Index kLanes = Eigen::internal::unpacket_traits<Packet>::size;

 public:
  Uoro(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout)
      : rank_(config.rank), eps_(S(config.uoro_eps)) {
    const Index n_state = cell.state_size();
    s_tilde_ = s_tilde_next_ = Mat<S>::Zero(n_state, rank_);
    theta_tilde_ = Mat<S>::Zero(cell.param_size(), rank_);
    theta_tilde_norm2_ = coef_ = inv_rho0_ = inv_rho1_ = norm_acc_ = Vec<S>::Zero(rank_);
    nu_ = Vec<S>::Zero(n_state);
    for (Index k = 0; k < Cell::kBlocks; ++k) u_c_[k] = Vec<S>::Zero(cell.blocks()[k].rows);
    u_nu_.resize(rank_);
    for (auto& u : u_nu_)
      for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = Vec<S>::Zero(cell.blocks()[k].rows);
    // One cell column, or one chunk of readout columns (see pass).
    readout_chunk_ = readout_chunk_columns(readout);
    Index scratch = readout_scratch_size(readout);
    for (const Block& b : cell.blocks()) scratch = std::max(scratch, b.rows);
    column_ = Vec<S>::Zero(scratch);
  }

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    const S nu_norm = std::sqrt(S(m.cell.state_size()));  // ‖ν‖ for ±1 signs
    const auto rng_before = m.rng.state();
    m.cell.param_cotangents(m.cache, m.c, u_c_);
    UoroChecks<S> checks(eps_);
    S v_max[Cell::kBlocks];
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      v_max[k] = m.cache.v[k].cwiseAbs().maxCoeff();
      checks.add_direct_bound(u_c_[k].cwiseAbs().maxCoeff() * v_max[k]);
    }
    for (Index r = 0; r < rank_; ++r) {
      // Tangent forward propagation; c · (∂F/∂s s̃) is the paper's δs · s̃.
      auto s_next = s_tilde_next_.col(r);
      m.cell.jvp_state(m.theta.data(), m.cache, s_tilde_.col(r), s_next);
      coef_(r) = m.c.dot(s_next) / S(rank_);
      m.rng.fill_signs(nu_);
      m.cell.param_cotangents(m.cache, nu_, u_nu_[r]);
      // ‖νᵀ ∂F/∂θ‖ from the outer-product factors: Σ_k ‖u_k‖² ‖v_k‖².
      S a_norm2 = 0, a_max = 0;
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        a_norm2 += u_nu_[r][k].squaredNorm() * m.cache.v[k].squaredNorm();
        a_max = std::max(a_max, u_nu_[r][k].cwiseAbs().maxCoeff() * v_max[k]);
      }
      const auto scales =
          checks.add_rank(coef_(r), std::sqrt(theta_tilde_norm2_(r)), s_next.norm(), a_norm2, a_max, nu_norm);
      s_next = scales.rho0 * s_next + scales.rho1 * nu_;  // the new s̃, committed below
      inv_rho0_(r) = scales.inv_rho0;
      inv_rho1_(r) = scales.inv_rho1;
    }
    if (const Refusal refusal = checks.refusal(s_tilde_next_, m.optimizer)) {
      m.rng.set_state(rng_before);
      return refusal;
    }
    if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m) : 0.0);
    if (m.optimizer.is_adam())
      pass<true>(m, grad_out, update);
    else
      pass<false>(m, grad_out, update);
    if (update) m.optimizer.end();
    std::swap(s_tilde_, s_tilde_next_);
    return {};
  }

  void forget() {
    s_tilde_.setZero();
    theta_tilde_.setZero();
    theta_tilde_norm2_.setZero();
  }

  // ‖θ̃_r‖² is carried from step to step (summed column by column: saved, not recomputed,
  // so a resumed run is bit-identical).
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("s_tilde", s_tilde_);
    fn("theta_tilde", theta_tilde_);
    fn("theta_tilde_norm2", theta_tilde_norm2_);
  }
  // θ̃ written without its carried norms: recompute them.
  void arrays_written(bool all) {
    if (!all)
      for (Index r = 0; r < rank_; ++r) theta_tilde_norm2_(r) = theta_tilde_.col(r).squaredNorm();
  }
  Window<S, Cell>* window() { return nullptr; }

 private:
  // ‖g‖ of the coming step, for clipping: one read-only pass before the fused one.
  double gradient_norm(Model<S, Cell>& m) {
    double total = 0;
    for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
      column_.head(rows) = u_c_[k] * vj;
      for (Index r = 0; r < rank_; ++r)
        column_.head(rows) += coef_(r) * theta_tilde_.col(r).segment(off, rows);
      total += double(column_.head(rows).squaredNorm());
    });
    if (m.config.train_readout) total += double(m.d_out.squaredNorm() * m.readout_v.squaredNorm());
    return std::sqrt(total);
  }

  // The fused pass: per column, g = u_c v_j + Σ_r coef_r θ̃_r (the gradient estimate,
  // computed from the old θ̃), θ̃_r ← θ̃_r / ρ0 + u_ν v_j / ρ1, θ ← optimizer(θ, g).
  template <bool kAdam>
  void pass(Model<S, Cell>& m, S* grad_out, bool update) {
    norm_acc_.setZero();
    // The fused sweep's ‖θ̃′‖²: one packet of partial sums carried over every column and
    // reduced once, not a second read and a reduction per column.
    Packet norm = Eigen::internal::pset1<Packet>(S(0));
    S norm_tail = 0;
    S* __restrict g = column_.data();
    const bool fused = kAdam && update && !grad_out && rank_ == 1;
    const auto adam = m.optimizer.adam_step();
    if (fused) {  // the common case in one sweep: gradient, θ̃, its norm and Adam per element
      for (Index k = 0; k < Cell::kBlocks; ++k) {
        const Block& b = m.cell.blocks()[k];
        // The sweep also leaves the cell's next recurrent products (FoldedProducts):
        // W [h'; 1] with h' the new hidden state (the readout's input [h'; 1]) and W x̃
        // from the new s̃, so the next forward pass and tangent do not read W.
        if constexpr (FoldsProducts<Cell>::value)
          if (k == Cell::kFoldedBlock) {
            fused_adam_folded_block(m, b, adam, norm, norm_tail);
            continue;
          }
        for (Index j = 0, off = b.offset; j < b.cols; ++j, off += b.rows)
          fused_adam_column(u_c_[k].data(), u_nu_[0][k].data(), theta_tilde_.data() + off,
                            m.theta.data() + off, adam.m + off, adam.v + off, b.rows, m.cache.v[k](j), adam,
                            norm, norm_tail);
      }
    } else {
      for_each_cell_column(m.cell, m.cache, [&](Index off, Index rows, S vj, Index k) {
        const S* __restrict uc = u_c_[k].data();
        for (Index i = 0; i < rows; ++i) g[i] = uc[i] * vj;
        for (Index r = 0; r < rank_; ++r) {
          S* __restrict tt = theta_tilde_.col(r).data() + off;
          const S* __restrict un = u_nu_[r][k].data();
          const S coef = coef_(r), inv_rho0 = inv_rho0_(r), nu_scale = vj * inv_rho1_(r);
          for (Index i = 0; i < rows; ++i) {
            g[i] += coef * tt[i];
            tt[i] = tt[i] * inv_rho0 + un[i] * nu_scale;
          }
          norm_acc_(r) += Eigen::Map<const Vec<S>>(tt, rows).squaredNorm();
        }
        if (grad_out) std::copy(g, g + rows, grad_out + off);
        if (update) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, rows);
      });
    }
    if (fused) norm_acc_(0) = Eigen::internal::predux(norm) + norm_tail;
    if constexpr (FoldsProducts<Cell>::value)
      if (fused) m.cell.folded.state_ready = m.cell.folded.tangent_ready = true;
    theta_tilde_norm2_ = norm_acc_;
    readout_pass<kAdam>(m, g, readout_chunk_, grad_out, update);
  }

  // One packet of the fused sweep at column j: g = scale (u_c v_j + coef θ̃) from the old
  // θ̃, θ̃ ← θ̃ / ρ0 + u_ν v_j / ρ1 (its square added to `norm`), exact Adam; the new θ.
  template <class AdamStep>
  struct PacketStep {
    Packet coef, rho0, scale, b1, b2, c1, c2, step, bias2, eps;
    PacketStep(S coef_r, S inv_rho0, const AdamStep& a) {
      namespace pk = Eigen::internal;
      coef = pk::pset1<Packet>(coef_r);
      rho0 = pk::pset1<Packet>(inv_rho0);
      scale = pk::pset1<Packet>(a.scale);
      b1 = pk::pset1<Packet>(a.b1);
      b2 = pk::pset1<Packet>(a.b2);
      c1 = pk::pset1<Packet>(a.c1);
      c2 = pk::pset1<Packet>(a.c2);
      step = pk::pset1<Packet>(a.step);
      bias2 = pk::pset1<Packet>(a.bias2);
      eps = pk::pset1<Packet>(a.eps);
    }
    Packet operator()(const S* uc, const S* un, S* tt, S* th, S* m, S* v, const Packet& vj, const Packet& nu,
                      Packet& norm) const {
      namespace pk = Eigen::internal;
      const Packet t_old = pk::ploadu<Packet>(tt);
      const Packet g = pk::pmul(scale, pk::pmadd(pk::ploadu<Packet>(uc), vj, pk::pmul(coef, t_old)));
      const Packet t_new = pk::pmadd(pk::ploadu<Packet>(un), nu, pk::pmul(t_old, rho0));
      pk::pstoreu(tt, t_new);
      norm = pk::pmadd(t_new, t_new, norm);
      const Packet m_new = pk::padd(pk::pmul(b1, pk::ploadu<Packet>(m)), pk::pmul(c1, g));
      const Packet v_new = pk::padd(pk::pmul(b2, pk::ploadu<Packet>(v)), pk::pmul(pk::pmul(c2, g), g));
      pk::pstoreu(m, m_new);
      pk::pstoreu(v, v_new);
      const Packet den = pk::padd(pk::pmul(exact_sqrt(v_new), bias2), eps);
      const Packet th_new = pk::psub(pk::ploadu<Packet>(th), pk::pdiv(pk::pmul(step, m_new), den));
      pk::pstoreu(th, th_new);
      return th_new;
    }
  };
  // The same for one element.
  template <class AdamStep>
  S element_step(const S* uc, const S* un, S* tt, S* th, S* m, S* v, S vj, S nu_scale, const AdamStep& a,
                 S& tail) const {
    const S g = a.scale * (uc[0] * vj + coef_(0) * tt[0]);
    tt[0] = tt[0] * inv_rho0_(0) + un[0] * nu_scale;
    tail += tt[0] * tt[0];
    m[0] = a.b1 * m[0] + a.c1 * g;
    v[0] = a.b2 * v[0] + a.c2 * g * g;
    th[0] -= a.step * m[0] / (std::sqrt(v[0]) * a.bias2 + a.eps);
    return th[0];
  }

  // Written with Eigen's packets so that θ̃′'s squares accumulate in `norm` (a packet, no
  // horizontal sum per column) while the column is in registers; the remainder of a
  // column that fills no packet goes element by element into `tail`.
  template <class AdamStep>
  void fused_adam_column(const S* __restrict uc, const S* __restrict un, S* __restrict tt, S* __restrict th,
                         S* __restrict m, S* __restrict v, Index rows, S vj, const AdamStep& a, Packet& norm,
                         S& tail) const {
    namespace pk = Eigen::internal;
    const PacketStep<AdamStep> step(coef_(0), inv_rho0_(0), a);
    const S nu_scale = vj * inv_rho1_(0);
    const Packet p_vj = pk::pset1<Packet>(vj), p_nu = pk::pset1<Packet>(nu_scale);
    const Index whole = rows / kLanes * kLanes;
    for (Index i = 0; i < whole; i += kLanes)
      step(uc + i, un + i, tt + i, th + i, m + i, v + i, p_vj, p_nu, norm);
    for (Index i = whole; i < rows; ++i)
      element_step(uc + i, un + i, tt + i, th + i, m + i, v + i, vj, nu_scale, a, tail);
  }

  // The cell's folded block (W of W [h; 1] and W x̃, see FoldsProducts) in the fused
  // sweep, a band of rows at a time across all its columns: the band's products with the
  // new h' and x̃ stay in registers (column by column from memory they were two more loads and stores per
  // packet, and stores bound this sweep). Each element's products accumulate in column
  // order with fused multiply-adds, as column_product computes them.
  template <class AdamStep>
  void fused_adam_folded_block(Model<S, Cell>& model, const Block& b, const AdamStep& a, Packet& norm,
                               S& tail) {
    namespace pk = Eigen::internal;
    // Packets of rows per band: 8 accumulators beside the step's 10 constants fit AVX-512's
    // 32 vector registers (GRU-64 step 6.8–6.9 µs against 6.9–7.4 with 2 and 1); 1 for 16.
    constexpr Index kBand = sizeof(Packet) >= 64 ? 4 : 1;
    const PacketStep<AdamStep> step(coef_(0), inv_rho0_(0), a);
    const Index rows = b.rows, cols = b.cols, hidden = model.readout_v.size() - 1;
    const Index whole = rows / kLanes * kLanes;
    const S* __restrict uc = u_c_[Cell::kFoldedBlock].data();
    const S* __restrict un = u_nu_[0][Cell::kFoldedBlock].data();
    const S* __restrict vcol = model.cache.v[Cell::kFoldedBlock].data();
    // Columns from `first` on multiply [h'; 1] (W [h'; 1]) and, the last excepted, the
    // tangent's input x̃ (W x̃); the ones before it (an input's) only the step.
    const Index first = model.cell.folded_first_column();
    const S* __restrict h_new = model.readout_v.data();
    const S* __restrict x_tangent = model.cell.folded_tangent_input(h_new, s_tilde_next_.col(0).data());
    S* __restrict tt = theta_tilde_.data() + b.offset;
    S* __restrict th = model.theta.data() + b.offset;
    S* __restrict mm = a.m + b.offset;
    S* __restrict vv = a.v + b.offset;
    S* __restrict out_state = model.cell.folded.state.data();
    S* __restrict out_tangent = model.cell.folded.tangent.data();
    const S inv_rho1 = inv_rho1_(0);
    auto band = [&](Index i, auto packets) {
      constexpr Index P = decltype(packets)::value;
      Packet acc_s[P], acc_t[P];
      for (Index r = 0; r < P; ++r) acc_s[r] = acc_t[r] = pk::pset1<Packet>(S(0));
      for (Index j = 0; j < first; ++j) {
        const Index at = j * rows + i;
        const Packet vj = pk::pset1<Packet>(vcol[j]), nu = pk::pset1<Packet>(vcol[j] * inv_rho1);
        for (Index r = 0; r < P; ++r) {
          const Index e = at + r * kLanes;
          step(uc + i + r * kLanes, un + i + r * kLanes, tt + e, th + e, mm + e, vv + e, vj, nu, norm);
        }
      }
      for (Index j = first; j < cols; ++j) {
        const Index at = j * rows + i;
        const Packet vj = pk::pset1<Packet>(vcol[j]), nu = pk::pset1<Packet>(vcol[j] * inv_rho1);
        const Packet xs = pk::pset1<Packet>(h_new[j - first]);
        Packet th_new[P];
        for (Index r = 0; r < P; ++r) {
          const Index e = at + r * kLanes;
          th_new[r] =
              step(uc + i + r * kLanes, un + i + r * kLanes, tt + e, th + e, mm + e, vv + e, vj, nu, norm);
          acc_s[r] = pk::pmadd(th_new[r], xs, acc_s[r]);
        }
        if (j - first < hidden) {
          const Packet xt = pk::pset1<Packet>(x_tangent[j - first]);
          for (Index r = 0; r < P; ++r) acc_t[r] = pk::pmadd(th_new[r], xt, acc_t[r]);
        }
      }
      for (Index r = 0; r < P; ++r) {
        pk::pstoreu(out_state + i + r * kLanes, acc_s[r]);
        pk::pstoreu(out_tangent + i + r * kLanes, acc_t[r]);
      }
    };
    Index i = 0;
    for (; i + kBand * kLanes <= whole; i += kBand * kLanes) band(i, std::integral_constant<Index, kBand>());
    for (; i < whole; i += kLanes) band(i, std::integral_constant<Index, 1>());
    for (; i < rows; ++i) {  // the rows below a whole packet, element by element
      S acc_s = 0, acc_t = 0;
      for (Index j = 0; j < cols; ++j) {
        const Index e = j * rows + i;
        const S th_new = element_step(uc + i, un + i, tt + e, th + e, mm + e, vv + e, vcol[j],
                                      vcol[j] * inv_rho1, a, tail);
        if (j < first) continue;
        acc_s = std::fma(th_new, h_new[j - first], acc_s);
        if (j - first < hidden) acc_t = std::fma(th_new, x_tangent[j - first], acc_t);
      }
      out_state[i] = acc_s;
      out_tangent[i] = acc_t;
    }
  }

  Index rank_;
  S eps_;
  Index readout_chunk_;
  // One column per rank.
  Mat<S> s_tilde_, s_tilde_next_, theta_tilde_;
  Vec<S> theta_tilde_norm2_, coef_, inv_rho0_, inv_rho1_, norm_acc_, nu_;
  Vec<S> column_;  // gradient scratch: one cell column, or a chunk of readout columns
  std::array<Vec<S>, Cell::kBlocks> u_c_;
  std::vector<std::array<Vec<S>, Cell::kBlocks>> u_nu_;
};

}  // namespace uoro
