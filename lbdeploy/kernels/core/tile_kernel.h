// The inner loop of the optimized TernaryConv: one tile of output pixels for a block of
// kBlock output channels over one chunk of input channels, written once as a template over a
// small vector type and compiled once per instruction set (tile_avx512.cc, tile_avx2.cc,
// tile_neon.cc, tile_scalar.cc).
//
// Idea (sharing sums across output channels): for kBlock output channels, every input tap
// (c, i, j) has a joint ternary pattern, e.g. (+1, 0, -1, +1). Taps whose patterns are equal up
// to sign are summed once into S (taps with the opposite sign are subtracted), and S is then
// added to or subtracted from each channel where the pattern is non-zero. With kBlock = 4 there
// are 40 patterns up to sign; at density 0.5 this needs about half the additions and half the
// input loads of a per-channel pass (270 instead of 576 taps per output channel). The patterns
// are enumerated in a fixed order so the combine step is straight-line code; the weights arrive
// pre-sorted by pattern (see plan.cc).
//
// Cache and register blocking: a tile is small (AVX-512: 2 x 3 vectors) so that the kBlock
// channel totals of the tile stay in registers through a whole call and the combine step touches
// no memory; a call covers one chunk of input channels, whose tile input (~24 KiB) the caller
// keeps in L1 while every channel block runs over it.
//
// ISA files include only this header and their intrinsics header: no standard library code is
// instantiated here, so nothing compiled with wider vector flags can leak into shared code.
#pragma once

#include <cstdint>
#include <utility>

#include "patterns.h"

namespace lbdeploy {
namespace tile {

// Computes out[(o * rows + r) * out_row + k] (+)= sum over the listed taps of
// +-base[r * row_stride + offset + k] for o < kBlock, r < rows and k < width, where the program
// (counts, offsets) lists for each pattern in kPatternTable order the offsets of its + taps then
// its - taps (counts: both lengths). With accumulate the sums are added to out, else they
// overwrite it.
using TileFn = void (*)(const float* base, int64_t row_stride, const int32_t* counts, const int32_t* offsets,
                        float* out, int64_t out_row, bool accumulate);

// Lane transposes between `lanes` rows of plain floats and positions of `lanes` floats (the lane
// layout of plan.h), for m < count. gather: dst[m * lanes + L] = rows[L][m] (0 where rows[L] is
// null). scatter, with the fused epilogue: rows[L][m] = v or max(v, 0) (relu) for
// v = scale * src[m * lanes + L] + bias (row L skipped where null).
using GatherFn = void (*)(const float* const* rows, int64_t count, float* dst);
using ScatterFn = void (*)(const float* src, int64_t count, float* const* rows, float scale, float bias, bool relu);

// One instantiation of the tile loop.
struct TileShape {
  int rows;   // output rows per tile
  int width;  // floats per tile row (a multiple of the vector width)
  TileFn fn;
};

// shapes[0] is the widest (the lane layout's); the narrower ones serve small maps, where wide
// tiles would mostly cover padding (see make_tile_plan).
constexpr int kTileShapes = 3;

struct TileKernel {
  int lanes;  // floats per vector
  TileShape shapes[kTileShapes];
  GatherFn gather;
  ScatterFn scatter;
};

// One variant per instruction set (each defined in its own translation unit).
TileKernel avx512_kernel();
TileKernel avx2_kernel();
TileKernel neon_kernel();
TileKernel scalar_kernel();

// Plain-loop lane transposes, for instruction sets without a faster variant (static: each ISA
// file gets its own copy, so none compiled with wider vector flags is shared).
template <int kLanes>
static void gather_lanes(const float* const* rows, int64_t count, float* dst) {
  for (int lane = 0; lane < kLanes; ++lane) {
    const float* row = rows[lane];
    for (int64_t m = 0; m < count; ++m) dst[m * kLanes + lane] = row ? row[m] : 0.0f;
  }
}

template <int kLanes>
static void scatter_lanes(const float* src, int64_t count, float* const* rows, float scale, float bias, bool relu) {
  for (int lane = 0; lane < kLanes; ++lane) {
    float* row = rows[lane];
    if (row == nullptr) continue;
    for (int64_t m = 0; m < count; ++m) {
      const float v = scale * src[m * kLanes + lane] + bias;
      row[m] = relu && v < 0.0f ? 0.0f : v;
    }
  }
}

// The element types of a vector type V and how a tile starts and stores its channel totals.
// Float vectors (the default) keep a running total in the output buffer: a call loads it
// (accumulate) and stores it back. Integer vectors (V::kWidening, for QTernaryConv) add 16-bit
// lanes, which hold one step's sums exactly but not a whole conv's: each call starts its totals
// at zero and V::finish widens them to 32 bits into the output (adding to it with accumulate).
template <class V, class = void>
struct Totals {
  using In = float;
  using Out = float;
  static typename V::Reg begin(const Out* p, bool accumulate) { return accumulate ? V::load(p) : V::zero(); }
  static void finish(Out* p, typename V::Reg total, bool) { V::store(p, total); }
};

template <class V>
struct Totals<V, decltype(void(V::kWidening))> {
  using In = typename V::In;
  using Out = typename V::Out;
  static typename V::Reg begin(const Out*, bool) { return V::zero(); }
  static void finish(Out* p, typename V::Reg total, bool accumulate) { V::finish(p, total, accumulate); }
};

// Keeps a running sum in its vector register: an empty asm that reads and writes it there, so the
// compiler neither reassociates the add chain nor moves the sum to another register each tap
// (GCC 12 did both: 6 register copies per 6 adds in the AVX-512 tap loop, bench/tap_loop.py).
// Plain C++ register types (the scalar kernels: V::kPlain) are left alone.
template <class V, class = void>
struct Pin {
  static inline __attribute__((always_inline)) void keep(typename V::Reg& r) {
#if defined(__aarch64__)
    asm("" : "+w"(r));
#else
    asm("" : "+v"(r));
#endif
  }
};

template <class V>
struct Pin<V, decltype(void(V::kPlain))> {
  static inline __attribute__((always_inline)) void keep(typename V::Reg&) {}
};

// V: vector type with Reg, kWidth, zero(), load(p), add(a, b), sub(a, b) and store(p, a) (float)
// or finish(p, a, accumulate) with In / Out element types and kWidening (integer; see Totals).
// Pc vectors per tile row, R rows. Registers: kBlock * R * Pc channel totals plus Split * R * Pc
// pattern sums. With Split == 1 each pattern sum is one add chain (plus and minus taps go into the
// same sums; a second set of sums to break the chains cost a remainder branch per list and was
// slower for 6-vector tiles). Small tiles (1 vector) have too few chains to hide the add latency,
// so they spread each pattern's taps round-robin over Split partial sums, merged once per pattern.
template <class V, int Pc, int R, int Split = 1>
struct TileImpl {
  using Reg = typename V::Reg;
  using In = typename Totals<V>::In;
  using Out = typename Totals<V>::Out;
  static constexpr int kWidth = V::kWidth * Pc;
  static constexpr int kRows = R;
  static constexpr int kLanes = V::kWidth;
  static constexpr int kVectors = Pc * R;

  // Vector v of a tap at `offset`: one load addressed as row pointer + offset + constant (no
  // address arithmetic per tap beyond reading the offset).
  template <bool kAdd>
  static inline __attribute__((always_inline)) Reg tap(Reg sum, const In* const (&rows)[R], int64_t offset, int v) {
    const Reg x = V::load(rows[v / Pc] + offset + (v % Pc) * V::kWidth);
    Reg r = kAdd ? V::add(sum, x) : V::sub(sum, x);
    Pin<V>::keep(r);
    return r;
  }

  // Adds (kAdd) or subtracts one list of taps to the pattern sums. Two taps per iteration with
  // Split == 1: the loop-carried sums then stay in their registers (one tap per iteration made GCC
  // 12 write each sum to a fresh register and copy it back, 6 copies per 6 adds).
  template <bool kAdd>
  static inline __attribute__((always_inline)) void sum_list(const In* base, int64_t row_stride,
                                                             const int32_t* offsets, int count,
                                                             Reg (&sum)[Split][kVectors]) {
    const In* rows[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) rows[r] = base + r * row_stride;
    constexpr int kStep = Split > 1 ? Split : 2;
    int t = 0;
    for (; t + kStep <= count; t += kStep) {
#pragma GCC unroll 8
      for (int s = 0; s < kStep; ++s) {
        const int64_t offset = offsets[t + s];
#pragma GCC unroll 32
        for (int v = 0; v < kVectors; ++v) sum[s % Split][v] = tap<kAdd>(sum[s % Split][v], rows, offset, v);
      }
    }
    for (; t < count; ++t) {
      const int64_t offset = offsets[t];
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) sum[0][v] = tap<kAdd>(sum[0][v], rows, offset, v);
    }
  }

  // Pattern I: the sum of its listed taps, added to or subtracted from each output channel's total
  // as the pattern's digit for that channel says.
  template <int I>
  static inline __attribute__((always_inline)) void pattern(const In* base, int64_t row_stride,
                                                            const int32_t* counts, const int32_t*& offsets,
                                                            Reg (&total)[kBlock][kVectors]) {
    const int n_plus = counts[2 * I], n_minus = counts[2 * I + 1];
    if (n_plus + n_minus > 0) {
      Reg parts[Split][kVectors];
#pragma GCC unroll 8
      for (int s = 0; s < Split; ++s) {
#pragma GCC unroll 32
        for (int v = 0; v < kVectors; ++v) parts[s][v] = V::zero();
      }
      sum_list<true>(base, row_stride, offsets, n_plus, parts);
      sum_list<false>(base, row_stride, offsets + n_plus, n_minus, parts);
      offsets += n_plus + n_minus;
      Reg sum[kVectors];
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) {
        sum[v] = parts[0][v];
#pragma GCC unroll 8
        for (int s = 1; s < Split; ++s) sum[v] = V::add(sum[v], parts[s][v]);
      }
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) {
#pragma GCC unroll 8
        for (int o = 0; o < kBlock; ++o) {
          if (kPatternTable.digit[I][o] > 0) total[o][v] = V::add(total[o][v], sum[v]);
          if (kPatternTable.digit[I][o] < 0) total[o][v] = V::sub(total[o][v], sum[v]);
        }
      }
    }
  }

  // Every pattern in order, each body once (a fold, not pattern<I> calling pattern<I + 1>: with the
  // recursion GCC optimized each pattern<I> with its whole inlined tail before inlining it, 820
  // pattern bodies for 40, and compiling a tile file took 2.5x longer for the same code).
  template <int... I>
  static inline __attribute__((always_inline)) void all_patterns(const In* base, int64_t row_stride,
                                                                 const int32_t* counts, const int32_t*& offsets,
                                                                 Reg (&total)[kBlock][kVectors],
                                                                 std::integer_sequence<int, I...>) {
    (pattern<I>(base, row_stride, counts, offsets, total), ...);
  }

  static void run(const In* base, int64_t row_stride, const int32_t* counts, const int32_t* offsets, Out* out,
                  int64_t out_row, bool accumulate) {
    Reg total[kBlock][kVectors];
#pragma GCC unroll 32
    for (int o = 0; o < kBlock; ++o) {
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) {
        const Out* p = out + (o * R + v / Pc) * out_row + (v % Pc) * V::kWidth;
        total[o][v] = Totals<V>::begin(p, accumulate);
      }
    }
    all_patterns(base, row_stride, counts, offsets, total, std::make_integer_sequence<int, kPatterns>{});
#pragma GCC unroll 32
    for (int o = 0; o < kBlock; ++o) {
#pragma GCC unroll 32
      for (int v = 0; v < kVectors; ++v) {
        Totals<V>::finish(out + (o * R + v / Pc) * out_row + (v % Pc) * V::kWidth, total[o][v], accumulate);
      }
    }
  }
};

// The kernel of one instruction set from its three tile shapes (large, medium, small); lane
// transposes default to the plain loops at the large shape's vector width.
template <class Large, class Medium, class Small>
static TileKernel make_tile_kernel(GatherFn gather = &gather_lanes<Large::kLanes>,
                                   ScatterFn scatter = &scatter_lanes<Large::kLanes>) {
  return {Large::kLanes,
          {{Large::kRows, Large::kWidth, &Large::run},
           {Medium::kRows, Medium::kWidth, &Medium::run},
           {Small::kRows, Small::kWidth, &Small::run}},
          gather,
          scatter};
}

}  // namespace tile
}  // namespace lbdeploy
