// Element-wise recurrent cells: each unit recurs only on itself, so ∂F/∂s is diagonal and
// a parameter row drives one unit (row i of every block drives unit i mod n). Their exact
// RTRL sensitivity ∂s/∂θ is then one value per parameter: SnAp-1's recursion, with
// nothing dropped, is exact RTRL at O(|θ|) per step (kElementwise; see
// estimator_for in estimator.hpp and docs/concepts.md).
//
// The kernels run on one stream (C = Vec<S>) or B streams (C = Mat<S>), as the dense
// cells' do. Shapes: I = input size, n = hidden size = state size.
#pragma once

#include "uoro/cells.hpp"

namespace uoro {

// minGRU (Feng et al. 2024, "Were RNNs all we needed?"): the gate and the candidate
// read the input only,
//   z = σ(W_z x + b_z),  h̃ = W_h x + b_h,  h' = (1 − z) ⊙ h + z ⊙ h̃.
// One block [weight_ih | bias_ih] (2n, I + 1), rows z then h̃.
template <class S>
class MinGruCell {
 public:
  static constexpr int kBlocks = 1;
  static constexpr int kSnapSlots = 1;
  static constexpr bool kInputInFactor = true;  // x is the top I rows of v[0]
  static constexpr bool kElementwise = true;

  template <class C>
  struct CacheOf {
    std::array<C, kBlocks> v;  // [x; 1]                 (I + 1)
    C z, candidate;            // z and h̃               (n each)
    C h;                       // the previous state h  (n)
    std::array<C*, 4> fields() { return {&v[0], &z, &candidate, &h}; }
  };
  using Cache = CacheOf<Vec<S>>;
  using Batch = CacheOf<Mat<S>>;

  MinGruCell(Index input_size, Index hidden_size) : in_(input_size), n_(hidden_size), a_(2 * n_) {
    blocks_[0] = {0, 2 * n_, in_ + 1};
  }
  void reserve_streams(Index streams) { a_b_ = Mat<S>::Zero(2 * n_, streams); }

  Index input_size() const { return in_; }
  Index hidden_size() const { return n_; }
  Index state_size() const { return n_; }
  Index param_size() const { return blocks_[0].size(); }
  const std::array<Block, kBlocks>& blocks() const { return blocks_; }

  Cache make_cache() const { return make<Vec<S>>(1); }
  Batch make_batch(Index streams) const { return make<Mat<S>>(streams); }
  template <class K>
  static auto input(K& k, Index input_size) {
    return k.v[0].topRows(input_size);
  }

  template <class C>
  void forward(const S* theta, In<C> s, CacheOf<C>& k, Out<C> s_next, const Index* tokens = nullptr) {
    C& a = scratch_for<C>(a_, a_b_);
    input_block_product(block_matrix(theta, blocks_[0]), k.v[0], in_, tokens, a);
    k.h = s;
    k.z = sigmoid(a.topRows(n_).array()).matrix();
    k.candidate = a.bottomRows(n_);
    s_next = ((S(1) - k.z.array()) * s.array() + k.z.array() * k.candidate.array()).matrix();
  }

  // (∂F/∂s) s̃ = (1 − z) ⊙ s̃.
  template <class C>
  void jvp_state(const S*, const CacheOf<C>& k, In<C> s_tilde, Out<C> out) const {
    out = ((S(1) - k.z.array()) * s_tilde.array()).matrix();
  }
  void vjp_state(const S*, const Cache& k, ConstVecRef<S> c, VecRef<S> out) const {
    out = ((S(1) - k.z.array()) * c.array()).matrix();
  }
  // (∂F/∂x) x̃ = z(1 − z) ã_z ⊙ (h̃ − h) + z ⊙ ã_h, ã = W_i x̃.
  template <class C>
  void jvp_input(const S* theta, const CacheOf<C>& k, In<C> x_tilde, Out<C> out) {
    C& a = scratch_for<C>(a_, a_b_);
    assign_product(block_matrix(theta, blocks_[0]).leftCols(in_), x_tilde, a);
    const auto z = k.z.array();
    out = (z * (S(1) - z) * a.topRows(n_).array() * (k.candidate.array() - k.h.array()) +
           z * a.bottomRows(n_).array())
              .matrix();
  }
  void state_diagonal(const S*, const Cache& k, Mat<S>& d) const { d.col(0) = (S(1) - k.z.array()).matrix(); }

  // δz = c ⊙ (h̃ − h) ⊙ z(1 − z), δh̃ = c ⊙ z.
  template <class C>
  void param_cotangents(const CacheOf<C>& k, In<C> c, std::array<C, kBlocks>& u) const {
    const auto z = k.z.array();
    u[0].topRows(n_) = (c.array() * (k.candidate.array() - k.h.array()) * z * (S(1) - z)).matrix();
    u[0].bottomRows(n_) = (c.array() * z).matrix();
  }

  template <class A, class H>
  void hidden(const A& s_next, H&& h) const {
    h = s_next;
  }
  template <class A, class T, class Ht>
  void hidden_jvp(const A&, const T& s_tilde, Ht&& h_tilde) const {
    h_tilde = s_tilde;
  }
  template <class A, class D, class Co>
  void hidden_vjp(const A&, const D& dh, Co&& c) const {
    c = dh;
  }

 private:
  template <class C>
  CacheOf<C> make(Index streams) const {
    CacheOf<C> k;
    k.v[0] = zeros<C>(in_ + 1, streams);
    k.v[0].row(in_).setOnes();
    k.z = k.candidate = k.h = zeros<C>(n_, streams);
    return k;
  }

  Index in_, n_;
  std::array<Block, kBlocks> blocks_;
  Vec<S> a_;
  Mat<S> a_b_;
};

// minLSTM (Feng et al. 2024): a forget and an input gate on the input only, normalized
// to sum to one,
//   f = σ(W_f x + b_f),  i = σ(W_i x + b_i),  h̃ = W_h x + b_h,
//   f̂ = f / (f + i),  î = i / (f + i) = 1 − f̂,  h' = f̂ ⊙ h + î ⊙ h̃.
// One block [weight_ih | bias] (3n, I + 1), rows f, i, h̃. f̂ is computed as σ(d) with
// d = log f − log i = softplus(−a_i) − softplus(−a_f) (a the pre-activations): f + i
// underflows to 0 when both gates saturate shut, d does not. Then ∂d/∂a_f = 1 − f and
// ∂d/∂a_i = −(1 − i), and ∂h'/∂d = f̂ î (h − h̃).
template <class S>
class MinLstmCell {
 public:
  static constexpr int kBlocks = 1;
  static constexpr int kSnapSlots = 1;
  static constexpr bool kInputInFactor = true;
  static constexpr bool kElementwise = true;

  template <class C>
  struct CacheOf {
    std::array<C, kBlocks> v;  // [x; 1]                              (I + 1)
    C forget;                  // f̂                                  (n)
    C f_rest, i_rest;          // 1 − f and 1 − i: σ(−a_f), σ(−a_i)   (n each)
    C candidate;               // h̃                                  (n)
    C h;                       // the previous state                  (n)
    std::array<C*, 6> fields() { return {&v[0], &forget, &f_rest, &i_rest, &candidate, &h}; }
  };
  using Cache = CacheOf<Vec<S>>;
  using Batch = CacheOf<Mat<S>>;

  MinLstmCell(Index input_size, Index hidden_size) : in_(input_size), n_(hidden_size), a_(3 * n_) {
    blocks_[0] = {0, 3 * n_, in_ + 1};
  }
  void reserve_streams(Index streams) { a_b_ = Mat<S>::Zero(3 * n_, streams); }

  Index input_size() const { return in_; }
  Index hidden_size() const { return n_; }
  Index state_size() const { return n_; }
  Index param_size() const { return blocks_[0].size(); }
  const std::array<Block, kBlocks>& blocks() const { return blocks_; }

  Cache make_cache() const { return make<Vec<S>>(1); }
  Batch make_batch(Index streams) const { return make<Mat<S>>(streams); }
  template <class K>
  static auto input(K& k, Index input_size) {
    return k.v[0].topRows(input_size);
  }

  template <class C>
  void forward(const S* theta, In<C> s, CacheOf<C>& k, Out<C> s_next, const Index* tokens = nullptr) {
    C& a = scratch_for<C>(a_, a_b_);
    input_block_product(block_matrix(theta, blocks_[0]), k.v[0], in_, tokens, a);
    k.h = s;
    const auto a_f = a.topRows(n_).array(), a_i = a.middleRows(n_, n_).array();
    k.f_rest = sigmoid(-a_f).matrix();
    k.i_rest = sigmoid(-a_i).matrix();
    k.forget = sigmoid(softplus(-a_i) - softplus(-a_f)).matrix();
    k.candidate = a.bottomRows(n_);
    const auto f = k.forget.array();
    s_next = (f * s.array() + (S(1) - f) * k.candidate.array()).matrix();
  }

  // (∂F/∂s) s̃ = f̂ ⊙ s̃.
  template <class C>
  void jvp_state(const S*, const CacheOf<C>& k, In<C> s_tilde, Out<C> out) const {
    out = (k.forget.array() * s_tilde.array()).matrix();
  }
  void vjp_state(const S*, const Cache& k, ConstVecRef<S> c, VecRef<S> out) const {
    out = (k.forget.array() * c.array()).matrix();
  }
  // (∂F/∂x) x̃ = f̂ î (h − h̃) ⊙ ((1 − f) ã_f − (1 − i) ã_i) + î ⊙ ã_h, ã = W_i x̃.
  template <class C>
  void jvp_input(const S* theta, const CacheOf<C>& k, In<C> x_tilde, Out<C> out) {
    C& a = scratch_for<C>(a_, a_b_);
    assign_product(block_matrix(theta, blocks_[0]).leftCols(in_), x_tilde, a);
    const auto f = k.forget.array();
    const auto d_t =
        k.f_rest.array() * a.topRows(n_).array() - k.i_rest.array() * a.middleRows(n_, n_).array();
    out = (f * (S(1) - f) * (k.h.array() - k.candidate.array()) * d_t + (S(1) - f) * a.bottomRows(n_).array())
              .matrix();
  }
  void state_diagonal(const S*, const Cache& k, Mat<S>& d) const { d.col(0) = k.forget; }

  // With δd = c ⊙ f̂ î (h − h̃): δa_f = δd ⊙ (1 − f), δa_i = −δd ⊙ (1 − i), δh̃ = c ⊙ î.
  template <class C>
  void param_cotangents(const CacheOf<C>& k, In<C> c, std::array<C, kBlocks>& u) const {
    const auto f = k.forget.array();
    const auto dd = c.array() * f * (S(1) - f) * (k.h.array() - k.candidate.array());
    u[0].topRows(n_) = (dd * k.f_rest.array()).matrix();
    u[0].middleRows(n_, n_) = (-dd * k.i_rest.array()).matrix();
    u[0].bottomRows(n_) = (c.array() * (S(1) - f)).matrix();
  }

  template <class A, class H>
  void hidden(const A& s_next, H&& h) const {
    h = s_next;
  }
  template <class A, class T, class Ht>
  void hidden_jvp(const A&, const T& s_tilde, Ht&& h_tilde) const {
    h_tilde = s_tilde;
  }
  template <class A, class D, class Co>
  void hidden_vjp(const A&, const D& dh, Co&& c) const {
    c = dh;
  }

 private:
  // log(1 + eˣ) without overflow: max(x, 0) + log1p(e^−|x|).
  template <class Derived>
  static auto softplus(const Eigen::ArrayBase<Derived>& x) {
    return x.cwiseMax(S(0)) + (-x.abs()).exp().log1p();
  }
  template <class C>
  CacheOf<C> make(Index streams) const {
    CacheOf<C> k;
    k.v[0] = zeros<C>(in_ + 1, streams);
    k.v[0].row(in_).setOnes();
    k.forget = k.f_rest = k.i_rest = k.candidate = k.h = zeros<C>(n_, streams);
    return k;
  }

  Index in_, n_;
  std::array<Block, kBlocks> blocks_;
  Vec<S> a_;
  Mat<S> a_b_;
};

// IndRNN (Li et al. 2018, "Independently recurrent neural network") with tanh: each unit
// recurs on itself through a learned weight,
//   h' = tanh(W x + b + w ⊙ h).
// Blocks [weight_ih | bias] (n, I + 1) with v = [x; 1], and weight_hh (n, 1), the
// per-unit recurrent weights w, with v = [1]: its cotangent factor is δ ⊙ h.
template <class S>
class IndRnnCell {
 public:
  static constexpr int kBlocks = 2;
  static constexpr int kSnapSlots = 1;
  static constexpr bool kInputInFactor = true;
  static constexpr bool kElementwise = true;

  template <class C>
  struct CacheOf {
    std::array<C, kBlocks> v;  // [x; 1] (I + 1), [1] (1)
    C h;                       // the previous state     (n)
    C dtanh;                   // 1 − h'²               (n)
    std::array<C*, 4> fields() { return {&v[0], &v[1], &h, &dtanh}; }
  };
  using Cache = CacheOf<Vec<S>>;
  using Batch = CacheOf<Mat<S>>;

  IndRnnCell(Index input_size, Index hidden_size) : in_(input_size), n_(hidden_size) {
    blocks_[0] = {0, n_, in_ + 1};
    blocks_[1] = {blocks_[0].size(), n_, 1};
  }
  void reserve_streams(Index) {}

  Index input_size() const { return in_; }
  Index hidden_size() const { return n_; }
  Index state_size() const { return n_; }
  Index param_size() const { return blocks_[0].size() + blocks_[1].size(); }
  const std::array<Block, kBlocks>& blocks() const { return blocks_; }

  Cache make_cache() const { return make<Vec<S>>(1); }
  Batch make_batch(Index streams) const { return make<Mat<S>>(streams); }
  template <class K>
  static auto input(K& k, Index input_size) {
    return k.v[0].topRows(input_size);
  }

  template <class C>
  void forward(const S* theta, In<C> s, CacheOf<C>& k, Out<C> s_next, const Index* tokens = nullptr) {
    input_block_product(block_matrix(theta, blocks_[0]), k.v[0], in_, tokens, s_next);
    k.h = s;
    s_next = (s_next.array() + s.array().colwise() * recurrent(theta).array()).tanh().matrix();
    k.dtanh = (S(1) - s_next.array().square()).matrix();
  }

  // (∂F/∂s) s̃ = (1 − h'²) ⊙ w ⊙ s̃.
  template <class C>
  void jvp_state(const S* theta, const CacheOf<C>& k, In<C> s_tilde, Out<C> out) const {
    out = (k.dtanh.array() * (s_tilde.array().colwise() * recurrent(theta).array())).matrix();
  }
  void vjp_state(const S* theta, const Cache& k, ConstVecRef<S> c, VecRef<S> out) const {
    out = (k.dtanh.array() * recurrent(theta).array() * c.array()).matrix();
  }
  // (∂F/∂x) x̃ = (1 − h'²) ⊙ W x̃.
  template <class C>
  void jvp_input(const S* theta, const CacheOf<C>& k, In<C> x_tilde, Out<C> out) {
    assign_product(block_matrix(theta, blocks_[0]).leftCols(in_), x_tilde, out);
    out = (out.array() * k.dtanh.array()).matrix();
  }
  void state_diagonal(const S* theta, const Cache& k, Mat<S>& d) const {
    d.col(0) = (k.dtanh.array() * recurrent(theta).array()).matrix();
  }

  // δ = c ⊙ (1 − h'²): the input block's factor; weight_hh's is δ ⊙ h.
  template <class C>
  void param_cotangents(const CacheOf<C>& k, In<C> c, std::array<C, kBlocks>& u) const {
    u[0] = (c.array() * k.dtanh.array()).matrix();
    u[1] = (u[0].array() * k.h.array()).matrix();
  }

  template <class A, class H>
  void hidden(const A& s_next, H&& h) const {
    h = s_next;
  }
  template <class A, class T, class Ht>
  void hidden_jvp(const A&, const T& s_tilde, Ht&& h_tilde) const {
    h_tilde = s_tilde;
  }
  template <class A, class D, class Co>
  void hidden_vjp(const A&, const D& dh, Co&& c) const {
    c = dh;
  }

 private:
  template <class C>
  CacheOf<C> make(Index streams) const {
    CacheOf<C> k;
    k.v[0] = zeros<C>(in_ + 1, streams);
    k.v[0].row(in_).setOnes();
    k.v[1] = zeros<C>(1, streams);
    k.v[1].setOnes();
    k.h = k.dtanh = zeros<C>(n_, streams);
    return k;
  }
  // The per-unit recurrent weights w (n).
  Eigen::Map<const Vec<S>> recurrent(const S* theta) const { return {theta + blocks_[1].offset, n_}; }

  Index in_, n_;
  std::array<Block, kBlocks> blocks_;
};

}  // namespace uoro
