// Shared types of the uoro core: Eigen aliases, parameter blocks, the sign RNG.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace uoro {

// Flushes subnormal floats to zero while it lives and restores the caller's
// floating-point mode after. Saturated gates and decaying sensitivities produce values
// below 1e-38 (float32) that the FPU handles in slow microcode: late in a long GRU
// stream they slowed learning steps markedly. As zeros they change nothing a learner
// computes visibly. (x86 only; elsewhere the mode is left as it is.)
class FlushSubnormals {
 public:
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;
#if defined(__SSE__) || defined(_M_X64)
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  unsigned saved_;
#else
  FlushSubnormals() = default;
#endif
};

using Index = Eigen::Index;

template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
template <class S>
using MatMap = Eigen::Map<Mat<S>>;
template <class S>
using ConstMatMap = Eigen::Map<const Mat<S>>;

// One block of the flat parameter vector: a column-major (rows, cols) matrix at
// theta[offset]. Every cell's parameter-VJP is, block by block, an outer product
// u ⊗ v of a cotangent factor u (rows) and an input factor v (cols), so gradients,
// θ̃ and optimizer updates can be produced column by column in one streaming pass.
struct Block {
  Index offset;
  Index rows;
  Index cols;
  Index size() const { return rows * cols; }
};

template <class S>
ConstMatMap<S> block_matrix(const S* theta, const Block& b) {
  return ConstMatMap<S>(theta + b.offset, b.rows, b.cols);
}

template <class S>
using VecRef = Eigen::Ref<Vec<S>>;
template <class S>
using ConstVecRef = Eigen::Ref<const Vec<S>>;

// xoshiro256** (Blackman & Vigna): small, fast, with a 256-bit state that is easy to
// checkpoint, and identical on every platform, so sign sequences are reproducible.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    // splitmix64 expands the seed so nearby seeds give unrelated streams.
    for (auto& word : state_) {
      seed += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      word = z ^ (z >> 31);
    }
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Fills `out` (a vector, a column of a matrix or a whole matrix: contiguous) with
  // independent random signs ±1: element i takes bit i % 64 of the (i / 64)-th draw.
  template <class Derived>
  void fill_signs(Eigen::MatrixBase<Derived>& out) {
    using S = typename Derived::Scalar;
    S* __restrict p = out.derived().data();
    const Index n = out.size();
    for (Index i = 0; i < n; i += 64) {
      const std::uint64_t bits = next();
      const Index end = std::min<Index>(64, n - i);
      for (Index j = 0; j < end; ++j) p[i + j] = S(2 * int((bits >> j) & 1u) - 1);  // branch-free
    }
  }

  const std::array<std::uint64_t, 4>& state() const { return state_; }
  void set_state(const std::array<std::uint64_t, 4>& s) {
    if (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0)
      throw std::invalid_argument("rng state must not be all zeros");
    state_ = s;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<std::uint64_t, 4> state_{};
};

}  // namespace uoro
