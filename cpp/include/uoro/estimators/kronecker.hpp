// Kronecker-factored influence: KF-RTRL (Mujika, Meier & Steger 2018) and the optimal
// Kronecker-sum approximation OK (Benzing et al. 2019). Each cell block k (a weight
// matrix W_k with input factor v_k, see cells.hpp) has its columns of ∂s/∂θ carried as
// a sum of r Kronecker products Σ_i u_i ⊗ A_i (u_i: the block's columns, A_i: state ×
// the block's rows). One step:
//
//   C = Σ_i u_i ⊗ (H A_i) + v ⊗ D     (H = ∂F/∂s; D the block's immediate ∂s'/∂(W v))
//
// holds the exact new influence of the old estimate (r + 1 terms); the gradient
// g = cᵀ C is computed from it, and C is reduced to r terms by an unbiased random
// reduction: KF-RTRL's sign-and-balance combination (r = 1), or OK's minimum-variance
// reduction (any r), which is exact whenever C has rank ≤ r. docs/concepts.md derives
// both. Blocks are independent (their own factors and signs). Cost per step: the
// tangent and cotangent kernels on all S unit vectors at once (H and the D's), and an
// S × S × (r · Σ rows) product.
#pragma once

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "uoro/estimator.hpp"

namespace uoro {

inline constexpr Index kMaxKroneckerRank = 16;

// Whether a cell's param_cotangents needs θ handed over (bind_parameters) when it has not
// run the forward pass itself: a stack's and a user cell's do.
template <class Cell, class = void>
struct BindsParameters : std::false_type {};
template <class Cell>
struct BindsParameters<Cell, std::void_t<decltype(std::declval<Cell&>().bind_parameters(nullptr))>>
    : std::true_type {};

template <class S, class Cell>
class Kronecker {
  static constexpr int kTerms = kMaxKroneckerRank + 1;
  // The reduction's small matrices (at most r + 1 square): fixed capacity, no heap.
  using Small = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, kTerms, kTerms>;
  using SmallVec = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, kTerms, 1>;

 public:
  Kronecker(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout)
      : cell_(cell),
        units_(cell.make_batch(cell.state_size())),
        optimal_(config.algorithm == Algorithm::Ok),
        rank_(optimal_ ? config.rank : 1),
        eps_(S(config.uoro_eps)) {
    if (rank_ < 1 || rank_ > kMaxKroneckerRank)
      throw std::invalid_argument("rank of 'ok' must be in [1, " + std::to_string(kMaxKroneckerRank) +
                                  "], got " + std::to_string(rank_));
    const Index n_state = cell.state_size();
    Index state_cols = 0, param_rows = 0;
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Block& b = cell.blocks()[k];
      state_offset_[k] = state_cols;
      param_offset_[k] = param_rows;
      state_cols += rank_ * b.rows;
      param_rows += b.cols;
      d_[k] = Mat<S>::Zero(n_state, b.rows);
      u_c_[k] = Vec<S>::Zero(b.rows);
    }
    state_factors_ = state_next_ = propagated_ = Mat<S>::Zero(n_state, state_cols);
    param_factors_ = param_next_ = Mat<S>::Zero(param_rows, rank_);
    coefficients_ = Vec<S>::Zero(state_cols);
    dfds_ = Mat<S>::Zero(n_state, n_state);
    cell_.reserve_streams(n_state);
    identity_ = Mat<S>::Identity(n_state, n_state);
    for (Index k = 0; k < Cell::kBlocks; ++k) u_units_[k] = Mat<S>::Zero(cell.blocks()[k].rows, n_state);
    grad_ = Vec<S>::Zero(cell.param_size() + readout.block().size());
  }

  Refusal update(Model<S, Cell>& m, S* grad_out, bool update) {
    const auto rng_before = m.rng.state();
    bool due;
    if (const Refusal refusal = propose(m, due)) {
      m.rng.set_state(rng_before);
      return refusal;
    }
    commit();
    if (grad_out) Eigen::Map<Vec<S>>(grad_out, m.n_params()) = grad_;
    if (update) apply_gradient(m, grad_);
    return {};
  }

  // The new factors and the gradient (left in gradient()), committed by commit(); a
  // refusal changes nothing but the generator's state, which the caller restores.
  Refusal propose(Model<S, Cell>& m, bool& due) {
    due = true;
    jacobians(m);
    m.cell.param_cotangents(m.cache, m.c, u_c_);
    propagated_.noalias() = dfds_ * state_factors_;  // H A_i, every block and term at once
    coefficients_.noalias() = propagated_.transpose() * m.c;
    grad_.setZero();
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      gradient_block(m, k);
      reduce_block(m, k);
    }
    add_readout_gradient(m.readout, m.d_out, m.readout_v, grad_.data());
    if (!bounded(state_next_) || !bounded(param_next_))
      return {Refusal::Sensitivity, "estimator's sensitivity ∂s/∂θ (its Kronecker factors)",
              std::max(max_abs(state_next_), max_abs(param_next_))};
    if (!bounded(grad_)) return {Refusal::Gradient, "gradient estimate", max_abs(grad_)};
    const double update_bound = m.optimizer.learning_rate() * max_abs(grad_);
    if (!bounded(S(update_bound))) return {Refusal::Gradient, "parameter update", update_bound};
    return {};
  }
  void commit() {
    std::swap(state_factors_, state_next_);
    std::swap(param_factors_, param_next_);
  }
  void enable_proposals() {}
  void rollback() {}
  const Vec<S>& gradient() const { return grad_; }

  void forget() {
    state_factors_.setZero();
    param_factors_.setZero();
  }
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("kronecker_state_factors", state_factors_);
    fn("kronecker_param_factors", param_factors_);
  }
  void arrays_written(bool) {}
  Window<S, Cell>* window() { return nullptr; }

 private:
  // H = ∂F/∂s and each block's D_k (D_k[i, :] = u_k(e_i)ᵀ): the cell's kernels run on
  // all unit tangents at once, as on S streams whose activations are this step's (the
  // estimator's own copy of the cell holds that many streams' scratch), so the products
  // are matrix products and a user cell's functions are called once.
  void jacobians(Model<S, Cell>& m) {
    const Index n_state = m.cell.state_size();
    auto to = units_.fields();
    auto from = m.cache.fields();
    for (std::size_t f = 0; f < to.size(); ++f)  // (column copies: replicate() divides per element)
      for (Index i = 0; i < n_state; ++i) to[f]->col(i) = *from[f];
    if constexpr (BindsParameters<Cell>::value) cell_.bind_parameters(m.theta.data());
    cell_.jvp_state(m.theta.data(), units_, identity_, dfds_);
    cell_.param_cotangents(units_, identity_, u_units_);
    for (Index k = 0; k < Cell::kBlocks; ++k) d_[k] = u_units_[k].transpose();
  }

  // Term i of block k: its state factor A_i (n_state × rows) and parameter factor u_i.
  auto state_term(Mat<S>& a, Index k, Index i, Index rows) {
    return a.middleCols(state_offset_[k] + i * rows, rows);
  }
  auto param_term(Mat<S>& p, Index k, Index i, Index cols) {
    return p.col(i).segment(param_offset_[k], cols);
  }

  // g_k = cᵀ C = Σ_i ((H A_i)ᵀ c) u_iᵀ + u_k(c) v_kᵀ, as the block's (rows × cols) matrix.
  void gradient_block(Model<S, Cell>& m, Index k) {
    const Block& b = m.cell.blocks()[k];
    MatMap<S> g(grad_.data() + b.offset, b.rows, b.cols);
    g.noalias() = u_c_[k] * m.cache.v[k].transpose();
    for (Index i = 0; i < rank_; ++i)
      g.noalias() += coefficients_.segment(state_offset_[k] + i * b.rows, b.rows) *
                     param_term(param_factors_, k, i, b.cols).transpose();
  }

  // The r + 1 terms of C (P = [u_1..u_r, v], Q = [H A_1..H A_r, D]) reduced to r:
  // new u'_j = P α_j, A'_j = Q β_j with E[Σ_j α_j β_jᵀ] = I.
  void reduce_block(Model<S, Cell>& m, Index k) {
    const Block& b = m.cell.blocks()[k];
    const Index terms = rank_ + 1;
    Small alpha = Small::Zero(terms, rank_), beta = Small::Zero(terms, rank_);
    if (optimal_)
      optimal_coefficients(m, k, alpha, beta);
    else
      kf_coefficients(m, k, alpha, beta);
    for (Index j = 0; j < rank_; ++j) {
      auto p = param_term(param_next_, k, j, b.cols);
      auto a = state_term(state_next_, k, j, b.rows);
      p = S(alpha(rank_, j)) * m.cache.v[k];
      a = S(beta(rank_, j)) * d_[k];
      for (Index i = 0; i < rank_; ++i) {
        p += S(alpha(i, j)) * param_term(param_factors_, k, i, b.cols);
        a += S(beta(i, j)) * state_term(propagated_, k, i, b.rows);
      }
    }
  }

  // KF-RTRL: u' = u / ρ0 + ν v / ρ1, A' = ρ0 H A + ν ρ1 D, with one random sign ν and
  // ρ0 = √(‖u‖ / ‖H A‖), ρ1 = √(‖v‖ / ‖D‖), which balance each term's two factors
  // (ε as in UORO keeps them finite when a factor vanishes).
  void kf_coefficients(Model<S, Cell>& m, Index k, Small& alpha, Small& beta) {
    const Block& b = m.cell.blocks()[k];
    const double eps = double(eps_);
    const double u_norm = double(param_term(param_factors_, k, 0, b.cols).norm());
    const double ha_norm = double(state_term(propagated_, k, 0, b.rows).norm());
    const double rho0 = std::sqrt(u_norm / (ha_norm + eps)) + eps;
    const double rho1 = std::sqrt(double(m.cache.v[k].norm()) / (double(d_[k].norm()) + eps)) + eps;
    const double sign = (m.rng.next() & 1u) ? 1.0 : -1.0;
    alpha(0, 0) = 1.0 / rho0;
    beta(0, 0) = rho0;
    alpha(1, 0) = sign / rho1;
    beta(1, 0) = sign * rho1;
  }

  // OK: the minimum-variance unbiased rank-r approximation of C = P Qᵀ (docs/concepts.md,
  // "Kronecker-factored influence"). P = U_p W_pᵀ and Q = U_q W_qᵀ with orthonormal U's
  // from the Gram matrices' eigendecompositions (in double, whatever S); the small
  // K = W_pᵀ W_q = X Σ Yᵀ gives C's singular values. With at most r of them C is kept
  // exactly; otherwise the top m are kept (m smallest with (k − 1) σ_{m+1} ≤ Σ_{i>m} σ_i,
  // k = r + 1 − m) and the other k become k − 1 terms s/(k−1) · Z Zᵀ, Z an orthonormal
  // basis of w⊥ for w_i = ±√(1 − (k − 1) σ_i / s) with random signs (E[w wᵀ] makes it
  // unbiased, and every singular value equal to s/(k−1) makes it optimal).
  void optimal_coefficients(Model<S, Cell>& m, Index k, Small& alpha, Small& beta) {
    const Block& b = m.cell.blocks()[k];
    const Index terms = rank_ + 1;
    Small gram_p(terms, terms), gram_q(terms, terms);
    for (Index i = 0; i < terms; ++i)
      for (Index j = 0; j <= i; ++j) {
        gram_p(i, j) = gram_p(j, i) = dot(param_column(m, k, i), param_column(m, k, j), b.cols);
        gram_q(i, j) = gram_q(j, i) =
            dot(state_column(k, i), state_column(k, j), m.cell.state_size() * b.rows);
      }
    Small basis_p, basis_q, root_p, root_q;  // B = V Λ^(-1/2) (U = P B) and W = V Λ^(1/2)
    const Index kept_p = factor(gram_p, basis_p, root_p), kept_q = factor(gram_q, basis_q, root_q);
    if (kept_p == 0 || kept_q == 0) return;  // C = 0: all factors zero
    const Small small = root_p.transpose() * root_q;
    const Eigen::JacobiSVD<Small> svd(small, Eigen::ComputeFullU | Eigen::ComputeFullV);
    const SmallVec sigma = svd.singularValues();
    const Small left = basis_p * svd.matrixU(), right = basis_q * svd.matrixV();  // P·left orthonormal
    const Index n_sigma = sigma.size();
    Index exact = std::min<Index>(n_sigma, rank_);
    if (n_sigma > rank_) {          // n_sigma == r + 1: reduce by one
      if (!(sigma(0) > 0)) return;  // C = 0
      Index kept = 0;
      double rest = sigma.sum();
      while (kept < terms - 2 && double(terms - kept - 1) * sigma(kept) > rest) rest -= sigma(kept++);
      exact = kept;
      const Index mixed = terms - kept;  // ≥ 2
      SmallVec w(mixed);
      for (Index i = 0; i < mixed; ++i) {
        const double share = std::max(0.0, 1.0 - double(mixed - 1) * sigma(kept + i) / rest);
        w(i) = ((m.rng.next() & 1u) ? 1.0 : -1.0) * std::sqrt(share);
      }
      w /= w.norm();
      // Householder reflection mapping w to ∓e_1: its other columns span w⊥.
      SmallVec h = w;
      h(0) += w(0) >= 0 ? 1.0 : -1.0;
      const Small reflect = Small::Identity(mixed, mixed) - (2.0 / h.squaredNorm()) * h * h.transpose();
      const double scale = std::sqrt(rest / double(mixed - 1));
      for (Index j = 0; j < mixed - 1; ++j) {
        alpha.col(exact + j) = scale * (left.middleCols(kept, mixed) * reflect.col(j + 1));
        beta.col(exact + j) = scale * (right.middleCols(kept, mixed) * reflect.col(j + 1));
      }
    }
    for (Index j = 0; j < exact; ++j) {
      alpha.col(j) = std::sqrt(sigma(j)) * left.col(j);
      beta.col(j) = std::sqrt(sigma(j)) * right.col(j);
    }
  }

  // Gram = V Λ Vᵀ: the eigenvectors kept (λ above rounding's reach) as basis V Λ^(-1/2)
  // and root V Λ^(1/2); returns how many.
  static Index factor(const Small& gram, Small& basis, Small& root) {
    const Eigen::SelfAdjointEigenSolver<Small> eig(gram);
    const SmallVec& lambda = eig.eigenvalues();  // increasing
    const double floor = std::max(1e-13, std::pow(64.0 * double(Eigen::NumTraits<S>::epsilon()), 2)) *
                         std::max(lambda(lambda.size() - 1), 0.0);
    Index first = 0;
    while (first < lambda.size() && !(lambda(first) > floor)) ++first;
    const Index kept = lambda.size() - first;
    basis.resize(gram.rows(), kept);
    root.resize(gram.rows(), kept);
    for (Index j = 0; j < kept; ++j) {
      const double l = lambda(first + j);
      basis.col(j) = eig.eigenvectors().col(first + j) / std::sqrt(l);
      root.col(j) = eig.eigenvectors().col(first + j) * std::sqrt(l);
    }
    return kept;
  }

  const S* param_column(Model<S, Cell>& m, Index k, Index i) {
    return i < rank_ ? param_factors_.col(i).data() + param_offset_[k] : m.cache.v[k].data();
  }
  const S* state_column(Index k, Index i) {
    const Index rows = d_[k].cols();
    return i < rank_ ? propagated_.data() + (state_offset_[k] + i * rows) * propagated_.rows() : d_[k].data();
  }
  // Accumulated in double: the Gram matrices must resolve directions far below S's ε.
  // Eight partial sums, in a fixed order: the compiler vectorizes them, and the result
  // does not depend on the build.
  static double dot(const S* a, const S* b, Index n) {
    double part[8] = {};
    Index i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) part[j] += double(a[i + j]) * double(b[i + j]);
    for (; i < n; ++i) part[0] += double(a[i]) * double(b[i]);
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  }

  Cell cell_;                                  // S streams' scratch, for jacobians()
  typename Cell::Batch units_;                 // this step's activations, once per unit tangent
  Mat<S> identity_;                            // the unit tangents
  std::array<Mat<S>, Cell::kBlocks> u_units_;  // u_k(e_i) for every i: D_kᵀ
  bool optimal_;
  Index rank_;
  S eps_;
  std::array<Index, Cell::kBlocks> state_offset_{}, param_offset_{};
  // Block k, term i: A_i in columns state_offset_[k] + i·rows of state_factors_ (S × r·Σ
  // rows), u_i in rows param_offset_[k] of column i of param_factors_ (Σ cols × r).
  Mat<S> state_factors_, param_factors_, state_next_, param_next_;
  Mat<S> propagated_;                    // H A_i, laid out as state_factors_
  Vec<S> coefficients_;                  // (H A_i)ᵀ c, likewise
  Mat<S> dfds_;                          // H
  std::array<Mat<S>, Cell::kBlocks> d_;  // D_k: (S × rows)
  std::array<Vec<S>, Cell::kBlocks> u_c_;
  Vec<S> grad_;
};

}  // namespace uoro
