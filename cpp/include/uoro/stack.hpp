// A stack of L layers of one cell kind, as one more cell: layer l reads layer l − 1's new
// hidden output at the same step (layer 0 reads the input x), the readout reads the top
// layer's. Its state is the layers' states concatenated, [s_0; …; s_{L−1}], and θ the
// layers' blocks one layer after the other, so every estimator applies to the whole stack
// unchanged: UORO stays unbiased for the whole network, RTRL and a full-window truncated
// BPTT stay exact; SnAp-1 on a stack runs within each layer (the layer-wise rule).
//
// Its kernels compose the layers' own: with x_l = h_{l−1}(s'_{l−1}),
//   s̃'_l = (∂F_l/∂s_l) s̃_l + (∂F_l/∂x_l)(∂h_{l−1}/∂s'_{l−1}) s̃'_{l−1}      (bottom up)
//   c̄_{l−1} = c_{l−1} + (∂h_{l−1}/∂s'_{l−1})ᵀ W_{x,l}ᵀ u_{l,0}(c̄_l)          (top down)
// where u_{l,0}(c̄_l) is layer l's cotangent factor of its first block, whose top rows the
// input multiplies (kInputInFactor): cᵀ ∂F_l/∂x_l = W_{x,l}ᵀ u_{l,0}. The parameter-VJP of
// layer l's blocks is its own, from the total cotangent c̄_l on its new state.
#pragma once

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>
#include <vector>

#include "uoro/cells.hpp"

namespace uoro {

template <class S, template <class> class LayerOf, int L>
class StackCell {
  using Layer = LayerOf<S>;
  static_assert(L >= 2, "a stack has at least two layers");
  static_assert(Layer::kInputInFactor, "a stacked layer's input must be the top rows of its first factor");
  static constexpr int kLayerBlocks = Layer::kBlocks;
  template <class C>
  using LayerCache = typename Layer::template CacheOf<C>;
  template <class C>
  static constexpr std::size_t kLayerFields =
      std::tuple_size<decltype(std::declval<LayerCache<C>&>().fields())>::value;

 public:
  static constexpr int kBlocks = L * kLayerBlocks;
  static constexpr int kLayers = L;
  // SnAp-1 within each layer (snap_units and the rest below): the layer-wise rule.
  static constexpr int kSnapSlots = Layer::kSnapSlots;
  static constexpr bool kInputInFactor = true;

  template <class C>
  struct CacheOf {
    std::array<C, kBlocks> v;  // the layers' factors, block by block (copies of layer[l].v)
    std::array<LayerCache<C>, L> layer;
    std::array<C*, kBlocks + L * kLayerFields<C>> fields() {
      std::array<C*, kBlocks + L * kLayerFields<C>> out;
      std::size_t i = 0;
      for (auto& f : v) out[i++] = &f;
      for (auto& k : layer)
        for (C* f : k.fields()) out[i++] = f;
      return out;
    }
  };
  using Cache = CacheOf<Vec<S>>;
  using Batch = CacheOf<Mat<S>>;

  StackCell(Index input_size, Index hidden_size) : in_(input_size), n_(hidden_size) {
    layers_.reserve(L);
    Index offset = 0;
    for (int l = 0; l < L; ++l) {
      layers_.emplace_back(l == 0 ? input_size : hidden_size, hidden_size);
      offset_[l] = offset;
      for (int j = 0; j < kLayerBlocks; ++j) {
        Block b = layers_[l].blocks()[j];
        b.offset += offset;
        blocks_[l * kLayerBlocks + j] = b;
      }
      offset += layers_[l].param_size();
    }
    param_size_ = offset;
    layer_state_ = layers_[0].state_size();
    reserve_scratch(scratch_, 1);
    layer_diagonal_ = Mat<S>::Zero(n_, std::max(1, kSnapSlots * kSnapSlots));
  }
  void reserve_streams(Index streams) {
    for (auto& layer : layers_) layer.reserve_streams(streams);
    reserve_scratch(scratch_b_, streams);
  }

  Index input_size() const { return in_; }
  Index hidden_size() const { return n_; }
  Index state_size() const { return L * layer_state_; }
  Index param_size() const { return param_size_; }
  const std::array<Block, kBlocks>& blocks() const { return blocks_; }
  Index layer_offset(int l) const { return offset_[l]; }

  Cache make_cache() const { return make<Vec<S>>(1); }
  Batch make_batch(Index streams) const { return make<Mat<S>>(streams); }
  template <class K>
  static auto input(K& k, Index input_size) {
    return Layer::input(k.layer[0], input_size);
  }
  // θ for param_cotangents in a copy of the cell that runs no forward pass of its own.
  void bind_parameters(const S* theta) { theta_ = theta; }

  template <class C>
  void forward(const S* theta, In<C> s, CacheOf<C>& k, Out<C> s_next, const Index* tokens = nullptr) {
    theta_ = theta;
    for (int l = 0; l < L; ++l) {
      if (l > 0) layers_[l - 1].hidden(part(s_next, l - 1), Layer::input(k.layer[l], n_));
      layers_[l].forward(theta + offset_[l], part(s, l), k.layer[l], part(s_next, l),
                         l == 0 ? tokens : nullptr);
      for (int j = 0; j < kLayerBlocks; ++j) k.v[l * kLayerBlocks + j] = k.layer[l].v[j];
    }
  }

  // Bottom up: each layer's own tangent plus what the tangent of its input brings.
  template <class C>
  void jvp_state(const S* theta, const CacheOf<C>& k, In<C> s_tilde, Out<C> out) {
    Scratch<C>& t = scratch<C>();
    for (int l = 0; l < L; ++l) {
      auto out_l = part(out, l);
      layers_[l].jvp_state(theta + offset_[l], k.layer[l], part(s_tilde, l), out_l);
      if (l == 0) continue;
      layers_[l - 1].hidden_jvp(Layer::input(k.layer[l], n_), part(out, l - 1), t.h_tilde);
      layers_[l].jvp_input(theta + offset_[l], k.layer[l], t.h_tilde, t.x_tilde);
      out_l += t.x_tilde;
    }
  }

  // Top down: each layer's VJP from the total cotangent on its new state.
  void vjp_state(const S* theta, const Cache& k, ConstVecRef<S> c, VecRef<S> out) {
    Scratch<Vec<S>>& t = scratch_;
    t.c_bar = part(c, L - 1);
    for (int l = L - 1; l >= 0; --l) {
      layers_[l].vjp_state(theta + offset_[l], k.layer[l], t.c_bar, part(out, l));
      if (l > 0) cotangent_below(theta, k, l, part(c, l - 1), t);
    }
  }

  template <class C>
  void param_cotangents(const CacheOf<C>& k, In<C> c, std::array<C, kBlocks>& u) {
    Scratch<C>& t = scratch<C>();
    t.c_bar = part(c, L - 1);
    for (int l = L - 1; l >= 0; --l) {
      layers_[l].param_cotangents(k.layer[l], t.c_bar, t.u);
      for (int j = 0; j < kLayerBlocks; ++j) u[l * kLayerBlocks + j] = t.u[j];
      if (l > 0) below_from_factors(theta_, k, l, part(c, l - 1), t);
    }
  }

  // ---- The layer-wise rule (Zucchet et al. 2023), as SnAp-1 within each layer: each
  // layer's parameters keep the sensitivity of their own unit in their own layer, and the
  // error reaches a lower layer through the current step only. Exact for element-wise
  // layers' own parameters within their layer; what a lower layer's parameter does to the
  // layers above over time is dropped.
  // Units: n per layer, unit l·n + u; slot q of it is state entry l·S_l + q·n + u.
  Index snap_units() const { return L * n_; }
  Index snap_unit(Index block, Index row) const { return block / kLayerBlocks * n_ + row % n_; }
  Index snap_entry(int slot, Index unit) const { return unit / n_ * layer_state_ + slot * n_ + unit % n_; }
  // Each layer's per-unit blocks of its own ∂F_l/∂s_l.                 d: (L·n, slots²)
  void state_diagonal(const S* theta, const Cache& k, Mat<S>& d) {
    for (int l = 0; l < L; ++l) {
      layers_[l].state_diagonal(theta + offset_[l], k.layer[l], layer_diagonal_);
      d.middleRows(l * n_, n_) = layer_diagonal_;
    }
  }
  // Each layer's parameter-VJP of its own part of c, nothing passed between layers.
  void layer_param_cotangents(const Cache& k, ConstVecRef<S> c, std::array<Vec<S>, kBlocks>& u) {
    for (int l = 0; l < L; ++l) {
      layers_[l].param_cotangents(k.layer[l], part(c, l), scratch_.u);
      for (int j = 0; j < kLayerBlocks; ++j) u[l * kLayerBlocks + j] = scratch_.u[j];
    }
  }
  // c̄: each layer's total cotangent on its new state, with what the layers above send it
  // through their inputs in this step.                                  (S) -> (S)
  void total_cotangent(const S* theta, const Cache& k, ConstVecRef<S> c, Vec<S>& out) {
    Scratch<Vec<S>>& t = scratch_;
    t.c_bar = part(c, L - 1);
    part(out, L - 1) = t.c_bar;
    for (int l = L - 1; l > 0; --l) {
      cotangent_below(theta, k, l, part(c, l - 1), t);
      part(out, l - 1) = t.c_bar;
    }
  }

  template <class A, class H>
  void hidden(const A& s_next, H&& h) const {
    layers_[L - 1].hidden(s_next.bottomRows(layer_state_), h);
  }
  template <class A, class D, class Co>
  void hidden_vjp(const A& h, const D& dh, Co&& c) const {
    c.topRows((L - 1) * layer_state_).setZero();
    layers_[L - 1].hidden_vjp(h, dh, c.bottomRows(layer_state_));
  }

 private:
  template <class C>
  struct Scratch {
    C h_tilde, x_tilde;  // a layer's input tangent (n) and what it adds to its state (S_l)
    C c_bar, c_next;     // the total cotangent on a layer's new state (S_l), the next one's
    C dh;                // a cotangent on a layer's hidden output (n)
    std::array<C, kLayerBlocks> u;
  };
  template <class C>
  Scratch<C>& scratch() {
    if constexpr (std::is_same_v<C, Vec<S>>)
      return scratch_;
    else
      return scratch_b_;
  }
  template <class C>
  void reserve_scratch(Scratch<C>& t, Index streams) const {
    t.h_tilde = t.dh = zeros<C>(n_, streams);
    t.x_tilde = t.c_bar = t.c_next = zeros<C>(layer_state_, streams);
    for (int j = 0; j < kLayerBlocks; ++j) t.u[j] = zeros<C>(layers_[0].blocks()[j].rows, streams);
  }

  // Layer l's rows of a state-sized vector or matrix.
  template <class A>
  auto part(A&& a, int l) const {
    return a.middleRows(l * layer_state_, layer_state_);
  }

  // c̄_{l−1} = c_{l−1} + (∂h_{l−1}/∂s'_{l−1})ᵀ W_{x,l}ᵀ u_{l,0}(c̄_l), into t.c_bar.
  template <class C, class K, class Below>
  void cotangent_below(const S* theta, const K& k, int l, const Below& c_below, Scratch<C>& t) {
    layers_[l].param_cotangents(k.layer[l], t.c_bar, t.u);
    below_from_factors(theta, k, l, c_below, t);
  }
  // The same from layer l's factors already in t.u.
  template <class C, class K, class Below>
  void below_from_factors(const S* theta, const K& k, int l, const Below& c_below, Scratch<C>& t) {
    const auto w_x = block_matrix(theta + offset_[l], layers_[l].blocks()[0]).leftCols(n_);
    t.dh.noalias() = w_x.transpose() * t.u[0];
    layers_[l - 1].hidden_vjp(Layer::input(k.layer[l], n_), t.dh, t.c_next);
    t.c_bar = c_below + t.c_next;
  }

  template <class C>
  CacheOf<C> make(Index streams) const {
    CacheOf<C> k;
    for (int l = 0; l < L; ++l) {
      k.layer[l] = make_layer<C>(l, streams);
      for (int j = 0; j < kLayerBlocks; ++j) k.v[l * kLayerBlocks + j] = k.layer[l].v[j];
    }
    return k;
  }
  template <class C>
  LayerCache<C> make_layer(int l, Index streams) const {
    if constexpr (C::ColsAtCompileTime == 1)
      return layers_[l].make_cache();
    else
      return layers_[l].make_batch(streams);
  }

  Index in_, n_, layer_state_ = 0, param_size_ = 0;
  std::vector<Layer> layers_;
  std::array<Index, L> offset_{};
  std::array<Block, kBlocks> blocks_;
  const S* theta_ = nullptr;  // θ of the last forward pass, for param_cotangents
  Scratch<Vec<S>> scratch_;
  Scratch<Mat<S>> scratch_b_;
  Mat<S> layer_diagonal_;  // one layer's state_diagonal (n, slots²)
};

}  // namespace uoro
