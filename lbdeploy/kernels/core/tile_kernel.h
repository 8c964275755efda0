// The inner loop of the optimized TernaryConv: one tile of output pixels for a block of
// kBlock output channels, written once as a template over a small vector type and compiled
// once per instruction set (tile_avx512.cc, tile_avx2.cc, tile_neon.cc, tile_scalar.cc).
//
// Idea (sharing sums across output channels): for kBlock output channels, every input tap
// (c, i, j) has a joint ternary pattern, e.g. (+1, 0, -1, +1). Taps whose patterns are equal up
// to sign are summed once into S (taps with the opposite sign are subtracted), and S is then
// added to or subtracted from each channel where the pattern is non-zero. With kBlock = 4 there
// are 40 patterns up to sign; at density 0.5 this needs about half the additions and half the
// input loads of a per-channel pass (270 instead of 576 taps per output channel). The patterns are enumerated in a fixed order so the
// combine step is straight-line code; the weights arrive pre-sorted by pattern (see plan.cc).
//
// ISA files include only this header and their intrinsics header: no standard library code is
// instantiated here, so nothing compiled with wider vector flags can leak into shared code.
#pragma once

#include <cstdint>

#include "patterns.h"

namespace lbdeploy {
namespace tile {

// Computes out[o][r][k] = sum over the block's taps of +-base[r * row_stride + offset + k] for
// o < kBlock, r < rows and k < width, where the program (counts, offsets) lists for each pattern
// in kPatternTable order the offsets of its + taps then its - taps (counts: both lengths).
using TileFn = void (*)(const float* base, int64_t row_stride, const int32_t* counts, const int32_t* offsets,
                        float* out);

// Upper bound of rows * width of any tile kernel (the caller's tile buffer holds kBlock of these).
constexpr int kMaxTileFloats = 1024;

struct TileKernel {
  int rows;   // output rows per tile
  int width;  // floats per tile row (a multiple of the vector width)
  int lanes;  // floats per vector
  TileFn fn;
};

// One variant per instruction set (each defined in its own translation unit).
TileKernel avx512_kernel();
TileKernel avx2_kernel();
TileKernel neon_kernel();
TileKernel scalar_kernel();

// V: vector type with Reg, kWidth, zero(), load(p), add(a, b), sub(a, b), store(p, a).
// Pc vectors per tile row, R rows: R*Pc independent sums per tap hide the add latency, and
// 2*R*Pc registers hold the + and - sums of the current pattern. The per-channel totals live in
// `out` (L1): they are touched once per pattern, the input once per tap.
template <class V, int Pc, int R>
struct TileImpl {
  using Reg = typename V::Reg;
  static constexpr int kWidth = V::kWidth * Pc;
  static constexpr int kRows = R;
  static constexpr int kLanes = V::kWidth;
  static constexpr int kVectors = Pc * R;
  static_assert(kWidth * R <= kMaxTileFloats, "tile too large for the caller's buffer");

  template <int I>
  static inline __attribute__((always_inline)) void pattern(const float* base, int64_t row_stride,
                                                            const int32_t* counts, const int32_t*& offsets,
                                                            float* out) {
    Reg plus[kVectors], minus[kVectors];
#pragma GCC unroll 32
    for (int v = 0; v < kVectors; ++v) {
      plus[v] = V::zero();
      minus[v] = V::zero();
    }
    const int n_plus = counts[2 * I], n_minus = counts[2 * I + 1];
    for (int t = 0; t < n_plus; ++t) {
      const float* src = base + offsets[t];
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v)
        plus[v] = V::add(plus[v], V::load(src + (v / Pc) * row_stride + (v % Pc) * V::kWidth));
    }
    offsets += n_plus;
    for (int t = 0; t < n_minus; ++t) {
      const float* src = base + offsets[t];
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v)
        minus[v] = V::add(minus[v], V::load(src + (v / Pc) * row_stride + (v % Pc) * V::kWidth));
    }
    offsets += n_minus;
    if (n_plus + n_minus > 0) {
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) {
        const Reg sum = V::sub(plus[v], minus[v]);
#pragma GCC unroll 8
        for (int o = 0; o < kBlock; ++o) {
          float* total = out + (o * R + v / Pc) * kWidth + (v % Pc) * V::kWidth;
          if (kPatternTable.digit[I][o] > 0) V::store(total, V::add(V::load(total), sum));
          if (kPatternTable.digit[I][o] < 0) V::store(total, V::sub(V::load(total), sum));
        }
      }
    }
    if constexpr (I + 1 < kPatterns) pattern<I + 1>(base, row_stride, counts, offsets, out);
  }

  static void run(const float* base, int64_t row_stride, const int32_t* counts, const int32_t* offsets, float* out) {
#pragma GCC unroll 32
    for (int v = 0; v < kBlock * kVectors; ++v) V::store(out + v * V::kWidth, V::zero());
    pattern<0>(base, row_stride, counts, offsets, out);
  }
};

}  // namespace tile
}  // namespace lbdeploy
