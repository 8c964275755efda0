// The inner loop of the optimized TernaryConv: one tile of output pixels for a block of
// kBlock output channels, written once as a template over a small vector type and compiled
// once per instruction set (tile_avx512.cc, tile_avx2.cc, tile_neon.cc, tile_scalar.cc).
//
// Idea (sharing sums across output channels): for kBlock output channels, every input tap
// (c, i, j) has a joint ternary pattern, e.g. (+1, 0, -1, +1). Taps whose patterns are equal up
// to sign are summed once into S (taps with the opposite sign are subtracted), and S is then
// added to or subtracted from each channel where the pattern is non-zero. With kBlock = 4 there
// are 40 patterns up to sign; at density 0.5 this needs about half the additions and a quarter
// of the input loads of a per-channel pass. The patterns are enumerated in a fixed order so the
// combine step is straight-line code; the weights arrive pre-sorted by pattern (see plan.cc).
//
// ISA files include only this header and their intrinsics header: no standard library code is
// instantiated here, so nothing compiled with wider vector flags can leak into shared code.
#pragma once

#include <cstdint>

#include "patterns.h"

namespace lbdeploy {
namespace tile {

// Computes out[o][k] = sum over the block's taps of +-base[offset + k] for o < kBlock and
// k < width, where the program (counts, offsets) lists for each pattern in kPatternTable order
// the offsets of its + taps then its - taps (counts holds the two lengths per pattern).
using TileFn = void (*)(const float* base, const int32_t* counts, const int32_t* offsets, float* out);

struct TileKernel {
  const char* name;
  int width;  // output pixels per tile (a multiple of the vector width)
  TileFn fn;
};

// One variant per instruction set (each defined in its own translation unit).
TileKernel avx512_kernel();
TileKernel avx2_kernel();
TileKernel neon_kernel();
TileKernel scalar_kernel();

// V: vector type with Reg, kWidth, zero(), load(p), add(a, b), sub(a, b), store(p, a).
// P: vectors per tile row (registers: kBlock*P accumulators + 2*P pattern sums).
template <class V, int P>
struct TileImpl {
  using Reg = typename V::Reg;
  static constexpr int kWidth = V::kWidth * P;

  template <int I>
  static inline __attribute__((always_inline)) void pattern(const float* base, const int32_t* counts,
                                                            const int32_t*& offsets, Reg (&acc)[kBlock][P]) {
    Reg plus[P], minus[P];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      plus[p] = V::zero();
      minus[p] = V::zero();
    }
    const int n_plus = counts[2 * I], n_minus = counts[2 * I + 1];
    for (int t = 0; t < n_plus; ++t) {
      const float* src = base + offsets[t];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) plus[p] = V::add(plus[p], V::load(src + p * V::kWidth));
    }
    offsets += n_plus;
    for (int t = 0; t < n_minus; ++t) {
      const float* src = base + offsets[t];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) minus[p] = V::add(minus[p], V::load(src + p * V::kWidth));
    }
    offsets += n_minus;
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const Reg sum = V::sub(plus[p], minus[p]);
#pragma GCC unroll 8
      for (int o = 0; o < kBlock; ++o) {
        if (kPatternTable.digit[I][o] > 0) acc[o][p] = V::add(acc[o][p], sum);
        if (kPatternTable.digit[I][o] < 0) acc[o][p] = V::sub(acc[o][p], sum);
      }
    }
    if constexpr (I + 1 < kPatterns) pattern<I + 1>(base, counts, offsets, acc);
  }

  static void run(const float* base, const int32_t* counts, const int32_t* offsets, float* out) {
    Reg acc[kBlock][P];
#pragma GCC unroll 16
    for (int o = 0; o < kBlock; ++o)
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) acc[o][p] = V::zero();
    pattern<0>(base, counts, offsets, acc);
#pragma GCC unroll 16
    for (int o = 0; o < kBlock; ++o)
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) V::store(out + o * kWidth + p * V::kWidth, acc[o][p]);
  }
};

}  // namespace tile
}  // namespace lbdeploy
