// Readouts: a linear layer o = W h + b on the cell's hidden output, with either a
// softmax + cross-entropy loss (categorical targets) or a squared-error loss.
#pragma once

#include <algorithm>
#include <cmath>

#include "uoro/common.hpp"

namespace uoro {

enum class Loss { CrossEntropy, SquaredError };

// One sample's target: a class index for cross-entropy, `output_size` values otherwise.
template <class S>
struct Target {
  const S* values = nullptr;
  std::int64_t token = -1;
};

template <class S>
class Readout {
 public:
  // The block [W | b] (O, n + 1) sits at theta[offset].
  Readout(Index hidden_size, Index output_size, Loss loss, Index offset)
      : loss_(loss),
        block_{offset, output_size, hidden_size + 1},
        v_(Vec<S>::Zero(hidden_size + 1)),
        output_(Vec<S>::Zero(output_size)),
        d_out_(Vec<S>::Zero(output_size)) {
    v_(hidden_size) = S(1);
  }

  Loss loss() const { return loss_; }
  const Block& block() const { return block_; }
  Index hidden_size() const { return block_.cols - 1; }
  Index output_size() const { return block_.rows; }

  // Input factor [h; 1] of the readout's parameter gradient d_out ⊗ v.
  const Vec<S>& v() const { return v_; }
  // Class probabilities (cross-entropy) or predicted values (squared error).
  const Vec<S>& output() const { return output_; }
  // ∂ℓ/∂o of the last `loss_and_grad`.
  const Vec<S>& d_out() const { return d_out_; }

  // Forward only: the prediction and the loss for hidden output h (0 without a target).
  S forward(const S* theta, ConstVecRef<S> h, const Target<S>& y) {
    v_.head(hidden_size()) = h;
    if (one_packet_)
      packet_product(theta + block_.offset);
    else
      output_.noalias() = block_matrix(theta, block_) * v_;
    return output_loss(output_, y);
  }

  // Forward and backward: the loss, d_out, and dh = ∂ℓ/∂h (n).
  S loss_and_grad(const S* theta, ConstVecRef<S> h, const Target<S>& y, VecRef<S> dh) {
    const S loss = forward(theta, h, y);
    output_grad(output_, y, d_out_);
    if (one_packet_)
      packet_transpose_product(theta + block_.offset, dh);
    else
      dh.noalias() = block_matrix(theta, block_).leftCols(hidden_size()).transpose() * d_out_;
    return loss;
  }

  // The loss of an output o = W [h; 1] (0 without a target); o turns from logits into
  // probabilities for the cross-entropy. For a column of several streams' outputs too.
  template <class O>
  S output_loss(O&& o, const Target<S>& y) const {
    if (loss_ == Loss::CrossEntropy) {
      // Stable log-softmax.
      const S top = o.maxCoeff();
      const S log_norm = top + std::log((o.array() - top).exp().sum());
      const S loss = y.token >= 0 ? log_norm - o(y.token) : S(0);
      o = (o.array() - log_norm).exp().matrix();
      return loss;
    }
    if (!y.values) return S(0);
    return S(0.5) * (o - Eigen::Map<const Vec<S>>(y.values, output_size())).squaredNorm();
  }
  // output_loss for several streams' outputs at once (one column of o each): losses[b]
  // for every b in `columns`, target(b) its target. For the cross-entropy every column's
  // log-softmax in one go, the exponentials vectorized over the whole matrix (column by
  // column, a 13-class column is mostly a scalar tail). reserve_streams first.
  template <class Columns, class TargetOf>
  void output_losses(Mat<S>& o, const Columns& columns, TargetOf&& target, S* losses) {
    if (loss_ != Loss::CrossEntropy) {
      for (Index b : columns) losses[b] = output_loss(o.col(b), target(b));
      return;
    }
    column_top_ = o.colwise().maxCoeff();
    o.array().rowwise() -= column_top_.array();
    for (Index b : columns) {
      const std::int64_t y = target(b).token;
      losses[b] = y >= 0 ? -o(y, b) : S(0);
    }
    o.array() = o.array().exp();
    column_sum_ = o.colwise().sum();
    o.array().rowwise() /= column_sum_.array();
    for (Index b : columns)
      if (target(b).token >= 0) losses[b] += std::log(column_sum_(b));
  }
  void reserve_streams(Index streams) { column_top_ = column_sum_ = RowVec::Zero(streams); }

  // ∂ℓ/∂o of an output that output_loss has seen.
  template <class O, class D>
  void output_grad(const O& o, const Target<S>& y, D&& d_out) const {
    d_out = o;
    if (loss_ == Loss::CrossEntropy)
      d_out(y.token) -= S(1);
    else
      d_out -= Eigen::Map<const Vec<S>>(y.values, output_size());
  }

 private:
  using Packet = typename Eigen::internal::packet_traits<S>::type;
  static constexpr Index kLanes = Eigen::internal::unpacket_traits<Packet>::size;

  // With O outputs, O ≤ L ≤ 2·O for L lanes, a packet loaded at any of W's columns holds
  // the column and stays inside the block [W | b] (its lanes past O come from the next
  // column): the products over a few-row readout run one packet per column, where
  // Eigen's would split each column into narrower packets and a scalar tail.
  static bool fits_one_packet(Index outputs) { return outputs <= kLanes && kLanes <= 2 * outputs; }

  // output = W h + b: the bias from a copy (a packet at the last column would leave the
  // block), four columns' partial sums in flight.
  void packet_product(const S* w) {
    namespace pk = Eigen::internal;
    const Index n = hidden_size(), rows = output_size();
    std::copy(w + n * rows, w + (n + 1) * rows, lanes_.data());
    Packet acc[4] = {pk::ploadu<Packet>(lanes_.data()), pk::pset1<Packet>(S(0)), pk::pset1<Packet>(S(0)),
                     pk::pset1<Packet>(S(0))};
    Index j = 0;
    for (; j + 4 <= n; j += 4)
      for (Index q = 0; q < 4; ++q)
        acc[q] = pk::pmadd(pk::ploadu<Packet>(w + (j + q) * rows), pk::pset1<Packet>(v_(j + q)), acc[q]);
    for (; j < n; ++j) acc[0] = pk::pmadd(pk::ploadu<Packet>(w + j * rows), pk::pset1<Packet>(v_(j)), acc[0]);
    pk::pstoreu(lanes_.data(), pk::padd(pk::padd(acc[0], acc[1]), pk::padd(acc[2], acc[3])));
    output_ = lanes_.head(rows);
  }
  // dh = Wᵀ d_out: one packet product per column against d_out padded with zeros.
  void packet_transpose_product(const S* w, VecRef<S> dh) {
    namespace pk = Eigen::internal;
    const Index rows = output_size();
    lanes_.head(rows) = d_out_;
    lanes_.tail(kLanes - rows).setZero();
    const Packet d = pk::ploadu<Packet>(lanes_.data());
    for (Index j = 0; j < hidden_size(); ++j)
      dh(j) = pk::predux(pk::pmul(pk::ploadu<Packet>(w + j * rows), d));
  }

  Loss loss_;
  Block block_;
  bool one_packet_ = fits_one_packet(block_.rows);
  Vec<S> lanes_ = Vec<S>::Zero(kLanes);  // one packet of outputs, padded
  Vec<S> v_, output_, d_out_;
  using RowVec = Eigen::Matrix<S, 1, Eigen::Dynamic>;
  RowVec column_top_, column_sum_;  // per stream: the largest logit, Σ exp(logit − largest)
};

}  // namespace uoro
