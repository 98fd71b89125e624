// A cell whose transition s' = F(x, s, θ) the user supplies (UORO's black-box use): the
// core calls three functions through the `Transition` interface, and every estimator
// runs on it unchanged, as on the built-in cells.
//
// The whole parameter vector is one block of shape (P, 1) with the input factor v = [1],
// so the parameter-side factor of a cotangent c is the VJP cᵀ ∂F/∂θ itself (as for the
// influence cell's one parameter). The cache keeps what the functions need later (the
// input, the state before and after the step), so windowed estimators can replay a step.
//
// The functions may throw (a Python callback raising): every estimator calls them before
// it commits anything, and the learners restore what a throwing step had touched.
#pragma once

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "uoro/cells.hpp"

namespace uoro {

// Column-major (rows, cols) arrays, one column per stream (cols = 1 for one stream).
template <class S>
struct Columns {
  const S* data;
  Index rows, cols;
};
template <class S>
struct OutColumns {
  S* data;
  Index rows, cols;
};

// The user's transition on one stream (cols = 1) or several at once. theta holds the P
// cell parameters. A null output of `vjp` is not wanted.
template <class S>
class Transition {
 public:
  virtual ~Transition() = default;
  virtual void forward(Columns<S> x, Columns<S> s, const S* theta, OutColumns<S> s_next) = 0;
  // False: the core takes the tangent as a finite difference of `forward`.
  virtual bool has_jvp_state() const = 0;
  virtual void jvp_state(Columns<S> x, Columns<S> s, const S* theta, Columns<S> s_dot, OutColumns<S> out) = 0;
  // c_s = cᵀ ∂F/∂s (S, B) and c_theta = cᵀ ∂F/∂θ (P, B), either one null if not wanted.
  virtual void vjp(Columns<S> x, Columns<S> s, const S* theta, Columns<S> c, OutColumns<S> c_s,
                   OutColumns<S> c_theta) = 0;
};

// Sizes of a user cell: the readout sees the first `hidden_size` entries of the state.
struct UserCellSizes {
  Index input_size, hidden_size, state_size, param_size;
};

template <class S>
class UserCell {
 public:
  static constexpr int kBlocks = 1;
  static constexpr int kSnapSlots = 0;           // no known sparsity: SnAp-1 does not apply
  static constexpr bool kJointVjp = true;        // one call gives both halves of the VJP
  static constexpr bool kInputInFactor = false;  // v = [1]: the input is not a factor column

  template <class C>
  struct CacheOf {
    std::array<C, kBlocks> v;  // [1]
    C x;                       // the input            (I)
    C s, s_next;               // the state before and after the step (S)
    std::array<C*, 4> fields() { return {&v[0], &x, &s, &s_next}; }
  };
  using Cache = CacheOf<Vec<S>>;
  using Batch = CacheOf<Mat<S>>;

  UserCell(const UserCellSizes& sizes, std::shared_ptr<Transition<S>> transition)
      : sizes_(sizes), transition_(std::move(transition)) {
    if (!transition_) throw std::invalid_argument("a user cell needs its transition functions");
    if (sizes.input_size < 1 || sizes.state_size < 1 || sizes.param_size < 1 || sizes.hidden_size < 1 ||
        sizes.hidden_size > sizes.state_size)
      throw std::invalid_argument("user cell sizes out of range");
    blocks_[0] = {0, sizes.param_size, 1};
    reserve_streams(1);
  }
  void reserve_streams(Index streams) {
    arg_ = result_ = Mat<S>::Zero(sizes_.state_size, streams);
    fd_step_ = Vec<S>::Zero(streams);
  }

  Index input_size() const { return sizes_.input_size; }
  Index hidden_size() const { return sizes_.hidden_size; }
  Index state_size() const { return sizes_.state_size; }
  Index param_size() const { return sizes_.param_size; }
  const std::array<Block, kBlocks>& blocks() const { return blocks_; }

  Cache make_cache() const { return make<Vec<S>>(1); }
  Batch make_batch(Index streams) const { return make<Mat<S>>(streams); }
  template <class K>
  static auto input(K& k, Index input_size) {
    return k.x.topRows(input_size);
  }
  // θ for param_cotangents in a copy of the cell that runs no forward pass of its own.
  void bind_parameters(const S* theta) { theta_ = theta; }

  // The parameter-side factors need θ, which the kernel interface passes to forward and
  // the state-side kernels only: the learner's θ stays at one address for its whole life,
  // so the one forward saw is the one to use.
  template <class C>
  void forward(const S* theta, In<C> s, CacheOf<C>& k, Out<C> s_next) {
    theta_ = theta;
    k.s = s;
    transition_->forward(in(k.x), in(k.s), theta, out(k.s_next));
    s_next = k.s_next;
  }

  // The user's JVP, or the finite difference (F(x, s + ε s̃) − F(x, s)) / ε of the paper's
  // eq. 17, with ε‖s̃‖ = √(machine ε) (1 + ‖s‖) per stream: the perturbation is a fixed
  // fraction of the state whatever the scale of s̃.
  template <class C>
  void jvp_state(const S* theta, const CacheOf<C>& k, In<C> s_tilde, Out<C> tangent) {
    const Index B = s_tilde.cols();
    auto arg = arg_.leftCols(B);
    auto result = result_.leftCols(B);
    if (transition_->has_jvp_state()) {
      arg = s_tilde;  // contiguous columns for the callback
      transition_->jvp_state(in(k.x), in(k.s), theta, in(arg), out(result));
      tangent = result;
      return;
    }
    const S root_eps = std::sqrt(std::numeric_limits<S>::epsilon());
    for (Index b = 0; b < B; ++b) {
      const S norm = s_tilde.col(b).norm();
      fd_step_(b) = norm > 0 ? root_eps * (S(1) + k.s.col(b).norm()) / norm : S(1);
      arg.col(b) = k.s.col(b) + fd_step_(b) * s_tilde.col(b);
    }
    transition_->forward(in(k.x), in(arg), theta, out(result));
    for (Index b = 0; b < B; ++b) tangent.col(b) = (result.col(b) - k.s_next.col(b)) / fd_step_(b);
  }

  void vjp_state(const S* theta, const Cache& k, ConstVecRef<S> c, VecRef<S> c_s) {
    vjp(theta, k, c, c_s, nullptr);
  }

  // Both halves of the VJP from one call: cᵀ ∂F/∂s into c_s and, with u, cᵀ ∂F/∂θ into
  // u[0].
  template <class C>
  void vjp(const S* theta, const CacheOf<C>& k, In<C> c, Out<C> c_s, std::array<C, kBlocks>* u) {
    const Index B = c.cols();
    auto arg = arg_.leftCols(B);
    auto result = result_.leftCols(B);
    arg = c;
    OutColumns<S> to_theta{u ? (*u)[0].data() : nullptr, sizes_.param_size, B};
    transition_->vjp(in(k.x), in(k.s), theta, in(arg), out(result), to_theta);
    c_s = result;
  }

  template <class C>
  void param_cotangents(const CacheOf<C>& k, In<C> c, std::array<C, kBlocks>& u) {
    const Index B = c.cols();
    auto arg = arg_.leftCols(B);
    arg = c;
    transition_->vjp(in(k.x), in(k.s), theta_, in(arg), {nullptr, sizes_.state_size, B},
                     {u[0].data(), sizes_.param_size, B});
  }

  template <class A, class H>
  void hidden(const A& s_next, H&& h) const {
    h = s_next.topRows(sizes_.hidden_size);
  }
  template <class A, class D, class Co>
  void hidden_vjp(const A&, const D& dh, Co&& c) const {
    c.topRows(sizes_.hidden_size) = dh;
    c.bottomRows(sizes_.state_size - sizes_.hidden_size).setZero();
  }

 private:
  template <class C>
  CacheOf<C> make(Index streams) const {
    CacheOf<C> k;
    k.v[0] = zeros<C>(1, streams);
    k.v[0].setOnes();
    k.x = zeros<C>(sizes_.input_size, streams);
    k.s = k.s_next = zeros<C>(sizes_.state_size, streams);
    return k;
  }
  template <class A>
  static Columns<S> in(const A& a) {
    return {a.data(), a.rows(), a.cols()};
  }
  template <class A>
  static OutColumns<S> out(A& a) {
    return {a.data(), a.rows(), a.cols()};
  }

  UserCellSizes sizes_;
  std::shared_ptr<Transition<S>> transition_;
  std::array<Block, kBlocks> blocks_;
  const S* theta_ = nullptr;
  Mat<S> arg_, result_;  // contiguous columns passed to and filled by the callbacks
  Vec<S> fd_step_;       // the finite-difference step of each stream
};

}  // namespace uoro
