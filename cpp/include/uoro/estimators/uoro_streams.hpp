// UORO over B streams, as the authors' code trains on a batch: the streams are one
// system whose state is the concatenation of theirs. Per rank, s̃ spans every stream's
// state (an (S, B) matrix) and θ̃ is one vector over the cell's parameters; the signs ν
// are drawn for every stream present. The tangent runs on all streams at once (W times
// a matrix of B columns), and the parameter-side products of all streams, Σ_b u_b ⊗ v_b,
// are rank-B products (U Vᵀ) summed into one pass over θ per tick: the gradient of the
// tick's mean loss, the new θ̃ and the optimizer update.
//
// A stream absent from a tick keeps its state, so its part of the system's transition is
// the identity: its columns of s̃ are only rescaled by ρ0 (their product with θ̃ is kept
// in expectation) and it draws no signs.
//
// Groups (config.stream_groups = G): the streams split into G contiguous groups, each an
// independent UORO estimate of its own streams' sensitivity with its own θ̃ per rank
// (and its own ρ0, ρ1). The streams' states never mix, so each group's rows of ∂s/∂θ
// evolve on their own and the sum over groups of their unbiased estimates is an unbiased
// estimate of the whole; the groups' noises are independent, so it averages down as G
// grows, where one system's cross-stream terms (ν_b ν_b' for b ≠ b') do not. s̃ keeps
// one column per stream and rank, so the tangent and the signs cost what G = 1 costs;
// the pass touches G θ̃ per rank.
//
// One estimate per stream (the default for many streams; rank 1, G = B): the pass over
// B θ̃ per tick is most of a tick, so it keeps θ̃_b = σ_b·t_b (t_b stored, σ_b a scalar
// per stream). The rescale by 1/ρ0 then goes into σ_b instead of every entry, and ‖θ̃_b‖²
// (which sets the next ρ0) follows the recursion N ← N/ρ0² + ‖a_b‖²/ρ1² instead of being
// summed over θ̃_b: its expectation over this tick's signs, since the cross term
// 2⟨θ̃_b, a_b⟩/(ρ0ρ1) is odd in ν_b (a_b = ν_bᵀ ∂F_b/∂θ, rank one per block, so ‖a_b‖² is
// exact). The ρ depend only on past signs and on even functions of this tick's, so the
// estimate stays unbiased. Every kExactNormEvery ticks (or when σ_b would leave
// [2⁻¹⁶, 2¹⁶]) the pass instead folds σ_b into t_b and sums the exact norm. Three
// multiply-adds per entry and stream instead of five (docs/concepts.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "uoro/estimators/uoro.hpp"
#include "uoro/products.hpp"
#include "uoro/streams.hpp"

namespace uoro {

// Whether the cell computes the per-unit factors its batched tangent and parameter-VJPs
// share once per tick (GruCell::shared_factors).
template <class S, class Cell, class = void>
struct HasSharedFactors : std::false_type {};
template <class S, class Cell>
struct HasSharedFactors<S, Cell,
                        std::void_t<decltype(std::declval<const Cell&>().shared_factors(
                            std::declval<const typename Cell::Batch&>(), std::declval<Mat<S>&>()))>>
    : std::true_type {};

// Whether the cell also computes its factors' bounds in the same pass
// (GruCell::param_cotangents_bounded).
template <class S, class Cell, class = void>
struct HasBoundedCotangents : std::false_type {};
template <class S, class Cell>
struct HasBoundedCotangents<
    S, Cell,
    std::void_t<decltype(std::declval<const Cell&>().param_cotangents_bounded(
        std::declval<const Mat<S>&>(), std::declval<const Mat<S>&>(), std::declval<const Mat<S>&>(),
        std::declval<const Mat<S>&>(), std::declval<std::array<Mat<S>, Cell::kBlocks>&>(),
        std::declval<std::array<FactorBounds<S>, Cell::kBlocks>&>()))>> : std::true_type {};

template <class S, class Cell>
class UoroStreams {
  static constexpr bool kShared = HasSharedFactors<S, Cell>::value;
  static constexpr bool kBounded = kShared && HasBoundedCotangents<S, Cell>::value;
  using Bounds = std::array<FactorBounds<S>, Cell::kBlocks>;

 public:
  UoroStreams(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams)
      : rank_(config.rank),
        groups_(std::clamp<Index>(config.stream_groups, 1, streams)),
        eps_(S(config.uoro_eps)),
        streams_(streams),
        readout_(readout, streams) {
    const Index n_state = cell.state_size(), estimates = rank_ * groups_;
    s_tilde_ = s_tilde_next_ = Mat<S>::Zero(n_state, rank_ * streams);
    theta_tilde_ = Mat<S>::Zero(cell.param_size(), estimates);
    theta_tilde_norm2_ = coef_ = inv_rho0_ = inv_rho1_ = norm_acc_ = Vec<S>::Zero(estimates);
    // Group g holds the streams [group_start_[g], group_start_[g + 1]), sizes within one.
    group_start_.resize(groups_ + 1);
    for (Index g = 0; g <= groups_; ++g) group_start_[g] = g * streams / groups_;
    stream_group_.resize(streams);
    for (Index g = 0; g < groups_; ++g)
      std::fill(stream_group_.begin() + group_start_[g], stream_group_.begin() + group_start_[g + 1], g);
    present_in_group_.assign(groups_, 0);
    a_norm2_ = Vec<S>::Zero(streams);
    a_max_ = Mat<S>::Zero(Cell::kBlocks, streams);
    nu_ = Mat<S>::Zero(n_state, streams);
    Index scratch = 0;
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Block& b = cell.blocks()[k];
      u_c_[k] = Mat<S>::Zero(b.rows, streams);
      chunk_[k] = chunk_columns(b);
      scratch = std::max(scratch, b.rows * chunk_[k]);
    }
    v_max_ = v_norm2_ = Mat<S>::Zero(Cell::kBlocks, streams);
    u_max_ = u_norm2_ = Vec<S>::Zero(streams);
    c_mean_ = Mat<S>::Zero(n_state, streams);
    u_nu_.resize(rank_);
    for (auto& u : u_nu_)
      for (Index k = 0; k < Cell::kBlocks; ++k) u[k] = Mat<S>::Zero(cell.blocks()[k].rows, streams);
    if constexpr (kShared) factors_ = Mat<S>::Zero(cell.shared_factor_rows(), streams);
    scratch = std::max(scratch, readout_.scratch_size());
    by_symbol_.reserve(streams);
    symbol_start_.assign(groups_ * config.input_size + 1, 0);
    symbol_next_.assign(groups_ * config.input_size, 0);
    g_ = Vec<S>::Zero(scratch);
    if (per_stream_pass()) stream_lanes_ = Vec<S>::Zero(streams * Eigen::internal::packet_traits<S>::size);
    theta_tilde_scale_ = Vec<S>::Ones(estimates);
    lazy_ticks_ = Vec<S>::Zero(1);
  }

  // Ticks between the exact norms of the per-stream pass (see the top of this file).
  static constexpr int kExactNormEvery = 16;

  Refusal update(Streams<S, Cell>& m, S* grad_out, bool update) {
    const Index n = Index(m.present.size()), n_state = m.c.rows();
    const S inv_n = S(1) / S(n);  // the tick's loss is the mean over the streams present
    const auto rng_before = m.rng.state();
    // The loss cotangent's factors (each stream's share of the mean; zero for absent
    // streams, whose c is zero) and the readout's.
    for (Index k = 0; k < Cell::kBlocks; ++k) column_stats(m.batch.v[k], v_max_.row(k), v_norm2_.row(k));
    c_mean_ = inv_n * m.c;
    const Bounds c_bounds = param_cotangents(m, c_mean_, u_c_);
    readout_.load(m.d_out, inv_n);
    // Bounds on |g| and |new θ̃| of the coming pass (|Σ_b u_b v_bᵀ| <= Σ_b max|u_b| max|v_b|).
    UoroChecks<S> checks(eps_);
    for (Index k = 0; k < Cell::kBlocks; ++k) checks.add_direct_bound(c_bounds[k].max);
    const S nu_norm = std::sqrt(S(n * n_state));  // ‖ν‖ for ±1 signs on the present streams
    if (groups_ > 1) {
      std::fill(present_in_group_.begin(), present_in_group_.end(), Index(0));
      for (Index b : m.present) ++present_in_group_[stream_group_[b]];
    }
    for (Index r = 0; r < rank_; ++r) {
      // Tangent forward propagation for all streams; absent ones keep s̃ (the identity).
      auto s_next = s_tilde_next_.middleCols(r * streams_, streams_);
      if constexpr (kShared)
        m.cell.jvp_state_shared(m.theta.data(), m.batch, factors_,
                                s_tilde_.middleCols(r * streams_, streams_), s_next);
      else
        m.cell.jvp_state(m.theta.data(), m.batch, s_tilde_.middleCols(r * streams_, streams_), s_next);
      for (Index b : m.absent) s_next.col(b) = s_tilde_.col(r * streams_ + b);
      m.rng.fill_signs(nu_);
      for (Index b : m.absent) nu_.col(b).setZero();
      const Bounds nu_bounds = param_cotangents(m, nu_, u_nu_[r]);
      if (groups_ > 1) {
        group_scales(m, r, inv_n, std::sqrt(S(n_state)), s_next, checks);
        continue;
      }
      coef_(r) = (m.c.array() * s_next.array()).sum() * inv_n / S(rank_);
      // ‖νᵀ ∂F/∂θ‖² taken as Σ_b ‖u_b‖² ‖v_b‖²: its expectation over the cross terms
      // (the streams' signs are independent), exact for one stream, and even in ν as ρ1
      // must be for the estimate to stay unbiased.
      S a_norm2 = 0, a_max = 0;
      for (const FactorBounds<S>& bounds : nu_bounds) {
        a_norm2 += bounds.norm2;
        a_max = std::max(a_max, bounds.max);
      }
      const auto scales =
          checks.add_rank(coef_(r), std::sqrt(theta_tilde_norm2_(r)), s_next.norm(), a_norm2, a_max, nu_norm);
      s_next = scales.rho0 * s_next + scales.rho1 * nu_;
      inv_rho0_(r) = scales.inv_rho0;
      inv_rho1_(r) = scales.inv_rho1;
    }
    if (const Refusal refusal = checks.refusal(s_tilde_next_, m.optimizer)) {
      m.rng.set_state(rng_before);
      return refusal;
    }
    if (Cell::kInputInFactor && m.tokens) group_by_symbol(m);
    if (per_stream_pass()) lazy_ = scale_to_stored();
    if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m) : 0.0);
    if (m.optimizer.is_adam())
      pass<true>(m, grad_out, update);
    else
      pass<false>(m, grad_out, update);
    if (update) m.optimizer.end();
    std::swap(s_tilde_, s_tilde_next_);
    return {};
  }

  // The cell's shared per-unit factors of this tick (a cell with shared_factors): the
  // learner's forward pass fills them before update.
  Mat<S>& factors() { return factors_; }

  void forget() {
    s_tilde_.setZero();
    theta_tilde_.setZero();
    theta_tilde_norm2_.setZero();
    theta_tilde_scale_.setOnes();
    lazy_ticks_.setZero();
  }
  // The sensitivity of a constant state is zero: stream b's columns of s̃.
  void forget_stream(Index b) {
    for (Index r = 0; r < rank_; ++r) s_tilde_.col(r * streams_ + b).setZero();
  }

  // s̃ holds rank r, stream b in column r·B + b; θ̃ rank r, group g in column r·G + g.
  // With one estimate per stream, θ̃'s column b is theta_tilde_scale[b] times the stored
  // one, theta_tilde_norm2 the tracked ‖θ̃_b‖² and lazy_ticks the ticks since its last
  // exact sum (a checkpoint from before these has scale 1 and 0 ticks).
  template <class Fn>
  void for_each_array(Fn&& fn) {
    fn("s_tilde", s_tilde_);
    fn("theta_tilde", theta_tilde_);
    fn("theta_tilde_norm2", theta_tilde_norm2_);
    if (per_stream_pass()) {
      fn("theta_tilde_scale", theta_tilde_scale_);
      fn("lazy_ticks", lazy_ticks_);
    }
  }
  void arrays_written(bool all) {
    if (!all)
      for (Index e = 0; e < theta_tilde_.cols(); ++e)
        theta_tilde_norm2_(e) =
            theta_tilde_scale_(e) * theta_tilde_scale_(e) * theta_tilde_.col(e).squaredNorm();
  }
  Window<S, Cell>* window(Index) { return nullptr; }

 private:
  // Rank r's scales per group (estimate r·G + g), s̃'s columns of each group rescaled and
  // given its signs: as one stream's UORO over the group's streams, with ‖a‖² and max|a|
  // summed over the group's streams from their factors' statistics.
  template <class Columns>
  void group_scales(const Streams<S, Cell>& m, Index r, S inv_n, S nu_norm_per_stream, Columns s_next,
                    UoroChecks<S>& checks) {
    a_norm2_.setZero();
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      column_stats(u_nu_[r][k], u_max_, u_norm2_);
      a_max_.row(k) = u_max_.transpose().cwiseProduct(v_max_.row(k));
      a_norm2_ += u_norm2_.cwiseProduct(v_norm2_.row(k).transpose());
    }
    for (Index g = 0; g < groups_; ++g) {
      const Index first = group_start_[g], count = group_start_[g + 1] - first, e = r * groups_ + g;
      auto s_group = s_next.middleCols(first, count);
      coef_(e) = (m.c.middleCols(first, count).array() * s_group.array()).sum() * inv_n / S(rank_);
      const S a_max = a_max_.middleCols(first, count).rowwise().sum().maxCoeff();
      const S nu_norm = nu_norm_per_stream * std::sqrt(S(present_in_group_[g]));
      const auto scales = checks.add_rank(coef_(e), std::sqrt(theta_tilde_norm2_(e)), s_group.norm(),
                                          a_norm2_.segment(first, count).sum(), a_max, nu_norm);
      s_group = scales.rho0 * s_group + scales.rho1 * nu_.middleCols(first, count);
      inv_rho0_(e) = scales.inv_rho0;
      inv_rho1_(e) = scales.inv_rho1;
    }
  }

  // The factors u of c's parameter-VJP per block, and their bounds (needs v's statistics).
  Bounds param_cotangents(Streams<S, Cell>& m, const Mat<S>& c, std::array<Mat<S>, Cell::kBlocks>& u) {
    Bounds bounds;
    if constexpr (kBounded) {
      m.cell.param_cotangents_bounded(factors_, c, v_max_, v_norm2_, u, bounds);
      return bounds;
    }
    if constexpr (kShared)
      m.cell.param_cotangents_shared(factors_, c, u);
    else
      m.cell.param_cotangents(m.batch, c, u);
    for (Index k = 0; k < Cell::kBlocks; ++k) bounds[k] = factor_bounds(u[k], k);
    return bounds;
  }

  static Index chunk_columns(const Block& b) { return pass_chunk_columns(b.rows, b.cols); }

  // For block k's factors u over the streams: max = Σ_b max|u_b| max|v_b|, a bound on
  // |U Vᵀ|; norm2 = Σ_b ‖u_b‖² ‖v_b‖².
  FactorBounds<S> factor_bounds(const Mat<S>& u, Index k) {
    column_stats(u, u_max_, u_norm2_);
    return {(u_max_.array() * v_max_.row(k).transpose().array()).sum(),
            (u_norm2_.array() * v_norm2_.row(k).transpose().array()).sum()};
  }

  // out (rows × cols, column-major) += α Σ_b u_b ⊗ v_b[j0 : j0 + cols] over the streams:
  // one matrix–matrix product, accumulated where it is needed (no scratch to clear).
  // Over the streams [first, first + count).
  static void add_outer_sum(const Mat<S>& u, const Mat<S>& v, Index j0, Index cols, S* out, S alpha,
                            Index first, Index count) {
    multiply_add(u.middleCols(first, count), v.middleRows(j0, cols).middleCols(first, count).transpose(),
                 MatMap<S>(out, u.rows(), cols), alpha);
  }

  // The same for block k's factors u (rows × B). With one-hot inputs the input's columns
  // of block 0 are sums of u_b over the streams reading that symbol (v is 0 or 1 there):
  // added column by column (streams grouped by symbol, see group_by_symbol), not
  // multiplied by the mostly-zero rows of v. Over group `group`'s streams, or all (-1).
  void add_factor_products(Streams<S, Cell>& m, Index k, const Mat<S>& u, Index j0, Index cols, S* out,
                           S alpha = 1, Index group = -1) const {
    const Index dense = one_hot_end(m, k, j0, cols), rows = u.rows(), symbols = m.config.input_size;
    const Index g_begin = group < 0 ? 0 : group, g_end = group < 0 ? groups_ : group + 1;
    for (Index j = j0; j < dense; ++j)
      for (Index g = g_begin; g < g_end; ++g) {
        const Index first = symbol_start_[g * symbols + j],
                    count = symbol_start_[g * symbols + j + 1] - first;
        if (count) add_column_sum(u, by_symbol_.data() + first, count, alpha, out + (j - j0) * rows);
      }
    if (dense < j0 + cols) {
      const Index first = group < 0 ? 0 : group_start_[group];
      const Index count = group < 0 ? streams_ : group_start_[group + 1] - first;
      add_outer_sum(u, m.batch.v[k], dense, j0 + cols - dense, out + (dense - j0) * rows, alpha, first,
                    count);
    }
  }

  // The present streams ordered by group, then input symbol (a counting sort): those of
  // group g reading symbol j are by_symbol_[symbol_start_[i] : symbol_start_[i + 1]] with
  // i = g·(input size) + j.
  void group_by_symbol(const Streams<S, Cell>& m) {
    const Index symbols = m.config.input_size;
    const auto key = [&](Index b) { return stream_group_[b] * symbols + m.tokens[b]; };
    std::fill(symbol_start_.begin(), symbol_start_.end(), Index(0));
    for (Index b : m.present) ++symbol_start_[key(b) + 1];
    for (std::size_t j = 1; j < symbol_start_.size(); ++j) symbol_start_[j] += symbol_start_[j - 1];
    by_symbol_.resize(m.present.size());  // within the capacity reserved: no allocation
    std::copy(symbol_start_.begin(), symbol_start_.end() - 1, symbol_next_.begin());
    for (Index b : m.present) by_symbol_[symbol_next_[key(b)]++] = b;
  }

  template <class Fn>
  void for_each_chunk(Streams<S, Cell>& m, Fn&& fn) {
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Index cols = m.batch.v[k].rows(), rows = u_c_[k].rows();
      for (Index j0 = 0; j0 < cols; j0 += chunk_[k]) fn(k, j0, std::min(chunk_[k], cols - j0), rows);
    }
  }

  // ‖g‖ of the coming step, for clipping: one read-only pass before the one that writes.
  double gradient_norm(Streams<S, Cell>& m) {
    double total = 0;
    S* g = g_.data();
    for_each_chunk(m, [&](Index k, Index j0, Index cols, Index rows) {
      const Index off = m.cell.blocks()[k].offset + j0 * rows, len = rows * cols;
      memory_gradient(off, len, g);
      add_factor_products(m, k, u_c_[k], j0, cols, g);
      total += double(g_.head(len).squaredNorm());
    });
    return std::sqrt(total + readout_.norm2(m, g));
  }

  // The first column of [j0, j0 + cols) past a one-hot input's columns (j0 if none).
  Index one_hot_end(const Streams<S, Cell>& m, Index k, Index j0, Index cols) const {
    if (!Cell::kInputInFactor || k != 0 || !m.tokens) return j0;
    return std::clamp(m.config.input_size, j0, j0 + cols);
  }

  // A chunk's sums with rank 1 (block k's columns [j0, j0 + cols) at θ offset off): both
  // rank-B sums and θ̃'s update in one sweep, uoro_pass_column for a one-hot input's
  // columns (the streams reading each symbol, see group_by_symbol), uoro_pass_sums for
  // the columns v multiplies densely.
  // With groups, one such sweep per group over its θ̃, the first writing g and the others
  // adding to it (each group's share of the c-sum with its own); with one group per
  // stream, one sweep over all of them that holds g in registers.
  void fused_sums(const Streams<S, Cell>& m, Index k, Index j0, Index cols, Index off, S* g) {
    if (per_stream_pass()) return fused_stream_sums(m, k, j0, cols, off, g);
    for (Index group = 0; group < groups_; ++group)
      if (group == 0)
        fused_group_sums<false>(m, k, j0, cols, off, g, 0);
      else
        fused_group_sums<true>(m, k, j0, cols, off, g, group);
  }
  template <bool kAccumulate>
  void fused_group_sums(const Streams<S, Cell>& m, Index k, Index j0, Index cols, Index off, S* g,
                        Index group) {
    const Index rows = u_c_[k].rows(), dense = one_hot_end(m, k, j0, cols), symbols = m.config.input_size;
    S* tt = theta_tilde_.col(group).data() + off;
    const S coef = coef_(group), inv_rho0 = inv_rho0_(group), inv_rho1 = inv_rho1_(group);
    for (Index j = j0; j < dense; ++j) {
      const Index i = group * symbols + j, first = symbol_start_[i], at = (j - j0) * rows;
      norm_acc_(group) += uoro_pass_column<kAccumulate>(u_c_[k], u_nu_[0][k], by_symbol_.data() + first,
                                                        symbol_start_[i + 1] - first, coef, inv_rho0,
                                                        inv_rho1, g + at, tt + at);
    }
    if (dense == j0 + cols) return;
    const Mat<S>& v = m.batch.v[k];
    const Index at = (dense - j0) * rows, first = group_start_[group];
    norm_acc_(group) += uoro_pass_sums<kAccumulate>(u_c_[k], u_nu_[0][k], v.data() + dense, v.outerStride(),
                                                    j0 + cols - dense, coef, inv_rho0, inv_rho1, g + at,
                                                    tt + at, first, group_start_[group + 1] - first);
  }

  // Whether the rank-1 pass runs as fused_stream_sums: one group per stream.
  bool per_stream_pass() const { return rank_ == 1 && groups_ > 1 && groups_ == streams_; }

  // The per-stream pass's scales for the stored t_b (θ̃_b = σ_b·t_b), set in place of
  // θ̃'s before the pass reads them (memory_gradient too), and σ_b, ‖θ̃_b‖² and the tick
  // count after it: whether this tick's pass is lazy (else it folds σ_b into t_b and sums
  // the exact norm). Called after any refusal: a refused tick leaves all of this as it
  // was.
  bool scale_to_stored() {
    constexpr S kLow = S(1) / S(65536), kHigh = S(65536);
    bool lazy = lazy_ticks_(0) + 1 < S(kExactNormEvery);
    for (Index e = 0; e < groups_ && lazy; ++e) {
      const S next = theta_tilde_scale_(e) * inv_rho0_(e);
      lazy = next >= kLow && next <= kHigh;
    }
    for (Index e = 0; e < groups_; ++e) {
      const S sigma = theta_tilde_scale_(e), inv_rho0 = inv_rho0_(e), inv_rho1 = inv_rho1_(e);
      coef_(e) *= sigma;
      if (lazy) {
        theta_tilde_scale_(e) = sigma * inv_rho0;
        inv_rho1_(e) = inv_rho1 / theta_tilde_scale_(e);
        theta_tilde_norm2_(e) =
            theta_tilde_norm2_(e) * inv_rho0 * inv_rho0 + a_norm2_(e) * inv_rho1 * inv_rho1;
      } else {
        theta_tilde_scale_(e) = S(1);
        inv_rho0_(e) = sigma * inv_rho0;
      }
    }
    lazy_ticks_(0) = lazy ? lazy_ticks_(0) + 1 : S(0);
    return lazy;
  }

  // fused_group_sums of every group at once, each group one stream.
  void fused_stream_sums(const Streams<S, Cell>& m, Index k, Index j0, Index cols, Index off, S* g) {
    const Index rows = u_c_[k].rows(), dense = one_hot_end(m, k, j0, cols), symbols = m.config.input_size;
    const Index t_p = theta_tilde_.outerStride();
    S* tt = theta_tilde_.data() + off;
    for (Index j = j0; j < dense; ++j) {
      const auto reads = [&](Index p) {
        return symbol_start_[p * symbols + j + 1] > symbol_start_[p * symbols + j];
      };
      const Index at = (j - j0) * rows;
      if (lazy_)
        uoro_pass_column_per_stream<true>(u_c_[k], u_nu_[0][k], reads, coef_.data(), inv_rho0_.data(),
                                          inv_rho1_.data(), g + at, tt + at, t_p, norm_acc_.data(),
                                          stream_lanes_.data());
      else
        uoro_pass_column_per_stream(u_c_[k], u_nu_[0][k], reads, coef_.data(), inv_rho0_.data(),
                                    inv_rho1_.data(), g + at, tt + at, t_p, norm_acc_.data(),
                                    stream_lanes_.data());
    }
    if (dense == j0 + cols) return;
    const Mat<S>& v = m.batch.v[k];
    const Index at = (dense - j0) * rows;
    if (lazy_)
      uoro_pass_sums_per_stream<true>(u_c_[k], u_nu_[0][k], v.data() + dense, v.outerStride(),
                                      j0 + cols - dense, coef_.data(), inv_rho0_.data(), inv_rho1_.data(),
                                      g + at, tt + at, t_p, norm_acc_.data(), stream_lanes_.data());
    else
      uoro_pass_sums_per_stream(u_c_[k], u_nu_[0][k], v.data() + dense, v.outerStride(), j0 + cols - dense,
                                coef_.data(), inv_rho0_.data(), inv_rho1_.data(), g + at, tt + at, t_p,
                                norm_acc_.data(), stream_lanes_.data());
  }

  // The same for any rank: g from the old θ̃ and θ̃ / ρ0 in one sweep per rank, then each
  // rank-B sum added (a product, or one-hot columns summed per symbol).
  void separate_sums(Streams<S, Cell>& m, Index k, Index j0, Index cols, Index off, S* __restrict g) {
    const Index len = u_c_[k].rows() * cols;
    for (Index e = 0; e < theta_tilde_.cols(); ++e) {  // estimate e: rank e / G, group e % G
      S* __restrict tt = theta_tilde_.col(e).data() + off;
      const S coef = coef_(e), inv_rho0 = inv_rho0_(e);
      if (e == 0)
        for (Index i = 0; i < len; ++i) {
          g[i] = coef * tt[i];
          tt[i] *= inv_rho0;
        }
      else
        for (Index i = 0; i < len; ++i) {
          g[i] += coef * tt[i];
          tt[i] *= inv_rho0;
        }
      add_factor_products(m, k, u_nu_[e / groups_][k], j0, cols, tt, inv_rho1_(e),
                          groups_ > 1 ? e % groups_ : Index(-1));
      norm_acc_(e) += Eigen::Map<const Vec<S>>(tt, len).squaredNorm();
    }
    add_factor_products(m, k, u_c_[k], j0, cols, g);
  }

  // g[0 : len] = Σ_r coef_r θ̃_r[off : off + len]: the gradient through the past.
  void memory_gradient(Index off, Index len, S* __restrict g) const {
    const S* __restrict tt = theta_tilde_.col(0).data() + off;
    const S coef = coef_(0);
    for (Index i = 0; i < len; ++i) g[i] = coef * tt[i];
    for (Index e = 1; e < theta_tilde_.cols(); ++e) {
      const S* __restrict t = theta_tilde_.col(e).data() + off;
      const S c = coef_(e);
      for (Index i = 0; i < len; ++i) g[i] += c * t[i];
    }
  }

  // Per chunk of columns: g = Σ_r coef_r θ̃_r (from the old θ̃) + Σ_b u_c,b ⊗ v_b,
  // θ̃_r ← θ̃_r / ρ0 + Σ_b (u_ν,b / ρ1) ⊗ v_b, θ ← optimizer(θ, g); then the readout.
  template <bool kAdam>
  void pass(Streams<S, Cell>& m, S* grad_out, bool update) {
    norm_acc_.setZero();
    S* __restrict g = g_.data();
    for_each_chunk(m, [&](Index k, Index j0, Index cols, Index rows) {
      const Index off = m.cell.blocks()[k].offset + j0 * rows, len = rows * cols;
      if (rank_ == 1)
        fused_sums(m, k, j0, cols, off, g);
      else
        separate_sums(m, k, j0, cols, off, g);
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
    });
    if (!lazy_) theta_tilde_norm2_ = norm_acc_;
    readout_.template pass<kAdam>(m, g, grad_out, update);
  }

  Index rank_, groups_;
  S eps_;
  Index streams_;
  StreamsReadout<S> readout_;
  Mat<S> s_tilde_, s_tilde_next_;  // (S, rank·B)
  Mat<S> theta_tilde_;             // (P_cell, rank·G)
  std::vector<Index> group_start_, stream_group_, present_in_group_;
  Vec<S> a_norm2_;  // with groups: per stream, ‖ν_bᵀ ∂F_b/∂θ‖² summed over blocks
  Mat<S> a_max_;    // and per block and stream, max|u_b| max|v_b|
  Vec<S> theta_tilde_norm2_, coef_, inv_rho0_, inv_rho1_, norm_acc_;
  Mat<S> nu_;                                            // (S, B)
  std::array<Mat<S>, Cell::kBlocks> u_c_;                // per block: (rows, B)
  std::vector<std::array<Mat<S>, Cell::kBlocks>> u_nu_;  // per rank and block
  std::array<Index, Cell::kBlocks> chunk_{};
  Mat<S> v_max_, v_norm2_;                 // per block and stream
  Vec<S> u_max_, u_norm2_;                 // factor_bounds' scratch: per stream
  Mat<S> c_mean_;                          // c / (streams present): each stream's share of the mean loss
  Mat<S> factors_;                         // this tick's shared per-unit factors, when the cell has them
  Vec<S> g_;                               // one chunk of the pass
  Vec<S> stream_lanes_;                    // with one group per stream: a packet of each one's ‖θ̃‖² partials
  Vec<S> theta_tilde_scale_, lazy_ticks_;  // with one group per stream: σ_b, and the ticks since
                                           // the last exact ‖θ̃_b‖² (one entry)
  bool lazy_ = false;                      // whether this tick's per-stream pass is lazy
  std::vector<Index> by_symbol_, symbol_start_, symbol_next_;  // see group_by_symbol
};

}  // namespace uoro
