// SnAp-1 over B streams (and with it exact RTRL on the element-wise cells). Each stream
// keeps its own influence J_b, as one Snap1 per stream would, and one Snap1 per stream
// prepares its step (its units' diagonal blocks, the immediate factors and the bounds on
// the new |J_b| and |g|, all checked before anything is written). Then one sweep over the
// parameter blocks updates every present stream's J_b in place and sums the gradient of
// the tick's mean loss, (1/n) Σ_b c_b ⊙ J_b, in registers across the streams, the way the
// per-stream UORO pass does: per entry and stream a multiply and two multiply-adds (one
// slot), where a Snap1 per stream copied J_b, wrote its own gradient and added it to the
// mean. A refused tick has written nothing, so nothing needs undoing.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "uoro/estimators/snap1.hpp"
#include "uoro/products.hpp"
#include "uoro/streams.hpp"

namespace uoro {

namespace detail {

// One stream's operands of a SnAp-1 sweep over one block (see Snap1::row_diagonal): per
// row its diagonal block (d: d_hh[, d_hc, d_ch, d_cc] at strides of `rows`) and
// cotangents (c: c_h[, c_c]), each slot's immediate factors, J's slots at the block's
// start, and v (v[j] the block's column j).
template <class S>
struct SnapOperands {
  const S* d;
  const S* c;
  const S* im[2];
  S* j[2];
  const S* v;
};

// A tile of RV packets of rows (from row i) by NC columns (from column j) of one block:
// every stream's J updated (when kWrite), g = inv_n Σ_p c_p ⊙ J_p,new stored, and each
// stream's max |J_p,new| kept in its packet of `lanes` (when kWrite).
template <bool kWrite, int kSlots, class P, int RV, int NC, class S>
inline void snap_tile(const SnapOperands<S>* ops, Index streams, Index rows, Index i, Index j, S inv_n, S* g,
                      Index ldg, S* lanes) {
  using namespace Eigen::internal;
  constexpr int L = kLanes<P>;
  P acc[NC][RV];
  for (int n = 0; n < NC; ++n)
    for (int r = 0; r < RV; ++r) acc[n][r] = pset1<P>(S(0));
  for (Index p = 0; p < streams; ++p) {
    const SnapOperands<S>& o = ops[p];
    P top = kWrite ? ploadu<P>(lanes + p * L) : pset1<P>(S(0));
    if constexpr (kSlots == 1) {
      P d[RV], c[RV], im[RV];
      for (int r = 0; r < RV; ++r) {
        d[r] = ploadu<P>(o.d + i + r * L);
        c[r] = ploadu<P>(o.c + i + r * L);
        im[r] = ploadu<P>(o.im[0] + i + r * L);
      }
      for (int n = 0; n < NC; ++n) {
        const P x = pset1<P>(o.v[j + n]);
        S* at = o.j[0] + (j + n) * rows + i;
        for (int r = 0; r < RV; ++r) {
          const P renewed = pmadd(im[r], x, pmul(d[r], ploadu<P>(at + r * L)));
          acc[n][r] = pmadd(c[r], renewed, acc[n][r]);
          if constexpr (kWrite) {
            pstoreu(at + r * L, renewed);
            top = pmax(top, pabs(renewed));
          }
        }
      }
    } else {
      static_assert(RV == 1, "two slots take one packet of rows per tile");
      const P d_hh = ploadu<P>(o.d + i), d_hc = ploadu<P>(o.d + rows + i);
      const P d_ch = ploadu<P>(o.d + 2 * rows + i), d_cc = ploadu<P>(o.d + 3 * rows + i);
      const P c_h = ploadu<P>(o.c + i), c_c = ploadu<P>(o.c + rows + i);
      const P im_h = ploadu<P>(o.im[0] + i), im_c = ploadu<P>(o.im[1] + i);
      for (int n = 0; n < NC; ++n) {
        const P x = pset1<P>(o.v[j + n]);
        S* at_h = o.j[0] + (j + n) * rows + i;
        S* at_c = o.j[1] + (j + n) * rows + i;
        const P old_h = ploadu<P>(at_h), old_c = ploadu<P>(at_c);
        const P h = pmadd(im_h, x, pmadd(d_hc, old_c, pmul(d_hh, old_h)));
        const P cc = pmadd(im_c, x, pmadd(d_cc, old_c, pmul(d_ch, old_h)));
        acc[n][0] = pmadd(c_c, cc, pmadd(c_h, h, acc[n][0]));
        if constexpr (kWrite) {
          pstoreu(at_h, h);
          pstoreu(at_c, cc);
          top = pmax(top, pmax(pabs(h), pabs(cc)));
        }
      }
    }
    if constexpr (kWrite) pstoreu(lanes + p * L, top);
  }
  const P scale = pset1<P>(inv_n);
  for (int n = 0; n < NC; ++n)
    for (int r = 0; r < RV; ++r) pstoreu(g + n * ldg + r * L, pmul(acc[n][r], scale));
}

// The rows below a whole packet, one at a time, in the same arithmetic as the tiles.
template <bool kWrite, int kSlots, class S>
void snap_tail(const SnapOperands<S>* ops, Index streams, Index rows, Index first_row, Index j, Index cols,
               S inv_n, S* g, S* top) {
  for (Index n = 0; n < cols; ++n)
    for (Index i = first_row; i < rows; ++i) {
      S sum = 0;
      for (Index p = 0; p < streams; ++p) {
        const SnapOperands<S>& o = ops[p];
        const S x = o.v[j + n];
        S* at_h = o.j[0] + (j + n) * rows + i;
        if constexpr (kSlots == 1) {
          const S renewed = o.im[0][i] * x + o.d[i] * *at_h;
          sum += o.c[i] * renewed;
          if constexpr (kWrite) *at_h = renewed, top[p] = std::max(top[p], std::abs(renewed));
        } else {
          S* at_c = o.j[1] + (j + n) * rows + i;
          const S h = o.im[0][i] * x + (o.d[rows + i] * *at_c + o.d[i] * *at_h);
          const S c = o.im[1][i] * x + (o.d[3 * rows + i] * *at_c + o.d[2 * rows + i] * *at_h);
          sum += o.c[rows + i] * c + o.c[i] * h;
          if constexpr (kWrite) {
            *at_h = h, *at_c = c;
            top[p] = std::max(top[p], std::max(std::abs(h), std::abs(c)));
          }
        }
      }
      g[n * rows + i] = sum * inv_n;
    }
}

}  // namespace detail

template <class S, class Cell>
class Snap1Streams {
  static constexpr int kSlots = Cell::kSnapSlots;
  using P = typename Eigen::internal::packet_traits<S>::type;
  static constexpr int L = detail::kLanes<P>;
  static constexpr int kOneSlotRows = sizeof(P) == 64 ? 3 : 1;  // packets of rows per one-slot tile

 public:
  Snap1Streams(const LearnerConfig& config, const Cell& cell, const Readout<S>& readout, Index streams)
      : estimators_(config, cell, readout, streams), readout_(readout, streams) {
    Index scratch = 0;
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      const Block& b = cell.blocks()[k];
      chunk_[k] = pass_chunk_columns(b.rows, b.cols);  // whole tiles of columns, in cache
      scratch = std::max(scratch, b.rows * chunk_[k]);
    }
    g_ = Vec<S>::Zero(std::max(scratch, readout_.scratch_size()));
    lanes_ = Vec<S>::Zero(streams * L);
    top_ = Vec<S>::Zero(streams);
    ops_.resize(streams);
  }

  Refusal update(Streams<S, Cell>& m, S* grad_out, bool update) {
    if constexpr (kSlots == 0) {
      return {Refusal::Sensitivity, "SnAp-1 influence (not defined for this cell)", 0.0};
    } else {
      for (Index b : m.present) {
        auto model = m.model(b);
        if (const Refusal refusal = estimators_[b].prepare(model)) return refusal;
      }
      const S inv_n = S(1) / S(m.present.size());
      readout_.load(m.d_out, inv_n);
      if (update) m.optimizer.begin(m.optimizer.config().clip_norm > 0 ? gradient_norm(m, inv_n) : 0.0);
      if (m.optimizer.is_adam())
        pass<true>(m, inv_n, grad_out, update);
      else
        pass<false>(m, inv_n, grad_out, update);
      if (update) m.optimizer.end();
      return {};
    }
  }

  void forget() { estimators_.forget(); }
  void forget_stream(Index b) { estimators_[b].forget(); }
  // Each stream's influence, named with the stream's index ("snap_influence_3").
  template <class Fn>
  void for_each_array(Fn&& fn) {
    estimators_.for_each_array(fn);
  }
  void arrays_written(bool all) { estimators_.arrays_written(all); }
  Window<S, Cell>* window(Index) { return nullptr; }

 private:
  // The present streams' operands for block k.
  void gather(const Streams<S, Cell>& m, Index k) {
    const Index off = m.cell.blocks()[k].offset;
    const Mat<S>& v = m.batch.v[k];
    for (std::size_t p = 0; p < m.present.size(); ++p) {
      const Index b = m.present[p];
      auto& e = estimators_[b];
      auto& o = ops_[p];
      o.d = e.row_diagonal(k).data();
      o.c = e.row_cotangent(k).data();
      o.im[0] = e.immediate(0, k).data();
      o.im[1] = e.immediate(kSlots - 1, k).data();
      o.j[0] = e.influence().col(0).data() + off;
      o.j[1] = e.influence().col(kSlots - 1).data() + off;
      o.v = v.data() + b * v.outerStride();
    }
  }

  // g of block k's columns [j0, j0 + cols) (rows × cols, packed), and with kWrite the
  // streams' J renewed and their max |J| taken into top_.
  template <bool kWrite>
  void sweep(const Streams<S, Cell>& m, Index k, Index j0, Index cols, S inv_n, S* g) {
    const Index rows = m.cell.blocks()[k].rows, streams = Index(m.present.size());
    // Columns per tile as the UORO pass's, which pass_chunk_columns rounds chunks to.
    constexpr int RV = kSlots == 1 ? kOneSlotRows : 1, NC = int(kPassSumColumns);
    const auto band = [&](auto vectors, Index i) {
      constexpr int V = decltype(vectors)::value;
      Index j = j0;
      for (; j + NC <= j0 + cols; j += NC)
        detail::snap_tile<kWrite, kSlots, P, V, NC>(ops_.data(), streams, rows, i, j, inv_n,
                                                    g + (j - j0) * rows + i, rows, lanes_.data());
      for (; j < j0 + cols; ++j)
        detail::snap_tile<kWrite, kSlots, P, V, 1>(ops_.data(), streams, rows, i, j, inv_n,
                                                   g + (j - j0) * rows + i, rows, lanes_.data());
    };
    Index i = 0;
    for (; i + RV * L <= rows; i += RV * L) band(std::integral_constant<int, RV>{}, i);
    for (; i + L <= rows; i += L) band(std::integral_constant<int, 1>{}, i);
    if (i < rows)
      detail::snap_tail<kWrite, kSlots>(ops_.data(), streams, rows, i, j0, cols, inv_n, g, top_.data());
  }

  template <class Fn>
  void for_each_chunk(const Streams<S, Cell>& m, Fn&& fn) {
    for (Index k = 0; k < Cell::kBlocks; ++k) {
      gather(m, k);
      const Block& b = m.cell.blocks()[k];
      for (Index j0 = 0; j0 < b.cols; j0 += chunk_[k])
        fn(k, j0, std::min(chunk_[k], b.cols - j0), b.offset + j0 * b.rows, b.rows);
    }
  }

  // ‖g‖ of the coming step, for clipping: one read-only sweep before the one that writes.
  double gradient_norm(Streams<S, Cell>& m, S inv_n) {
    double total = 0;
    S* g = g_.data();
    for_each_chunk(m, [&](Index k, Index j0, Index cols, Index, Index rows) {
      sweep<false>(m, k, j0, cols, inv_n, g);
      total += double(g_.head(rows * cols).squaredNorm());
    });
    return std::sqrt(total + readout_.norm2(m, g));
  }

  template <bool kAdam>
  void pass(Streams<S, Cell>& m, S inv_n, S* grad_out, bool update) {
    S* __restrict g = g_.data();
    const Index streams = Index(m.present.size());
    std::fill(lanes_.data(), lanes_.data() + streams * L, S(0));
    top_.head(streams).setZero();
    for_each_chunk(m, [&](Index k, Index j0, Index cols, Index off, Index rows) {
      sweep<true>(m, k, j0, cols, inv_n, g);
      const Index len = rows * cols;
      if (grad_out) std::copy(g, g + len, grad_out + off);
      if (update) m.optimizer.template apply<kAdam>(m.theta.data(), off, g, len);
    });
    for (Index p = 0; p < streams; ++p)
      estimators_[m.present[p]].influence_max() =
          std::max(top_(p), Eigen::internal::predux_max(Eigen::internal::ploadu<P>(lanes_.data() + p * L)));
    readout_.template pass<kAdam>(m, g, grad_out, update);
  }

  StreamEstimators<Snap1<S, Cell>> estimators_;
  std::vector<detail::SnapOperands<S>> ops_;  // the present streams' operands of one block
  std::array<Index, Cell::kBlocks> chunk_{};  // columns per chunk of each block
  StreamsReadout<S> readout_;
  Vec<S> g_;      // one chunk of the gradient
  Vec<S> lanes_;  // per present stream, a packet of its max |J| so far
  Vec<S> top_;    // and the same from the rows below a packet
};

}  // namespace uoro
