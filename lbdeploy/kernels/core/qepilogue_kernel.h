// The requantizing epilogue of QTernaryConv (docs/ops/QTernaryConv.md, "Requantization"): int32
// sums of one tile row to uint8, fused into the tile loop's work item. Written once as a template
// over a small vector type and compiled per instruction set next to the tile kernels
// (qtile_avx512.cc, qtile_avx2.cc, qtile_neon.cc, qtile_scalar.cc), so every path runs the same
// operations in the same order:
//
//   v = fma(m, float(acc), b)              one rounding (acc is exact in float32: |acc| < 2^24)
//   v = min(max(v, low), high)             low = 0 (relu) or -y_zero_point, high = 255 - y_zero_point
//   Y = round_half_to_even(v) + y_zero_point   (in [0, 255]: the bounds are integers)
//
// Clamping before rounding equals saturating after it (rounding is monotone and keeps integers).
// Like tile_kernel.h, this header instantiates no standard library code.
#pragma once

#include <cstdint>

namespace lbdeploy {
namespace tile {

// The requantization constants of one output channel (requantize.h computes them).
struct QEpilogue {
  float m, b, low, high;
  int32_t zero_point;
};

// Y of `channels` (1 .. kBlock) output channels over `count` pixels: the sum acc[c * acc_stride + k]
// goes to out[c * channel_step + k * pixel_step] (NCHW: pixel_step 1; NHWC: channel_step 1).
using QRequantizeFn = void (*)(const int32_t* acc, int64_t acc_stride, const QEpilogue* epilogue, int channels,
                               int64_t count, uint8_t* out, int64_t channel_step, int64_t pixel_step);

// F: kLanes, FReg / IReg, load(const int32_t*), store(int32_t*, IReg), to_float, fma(m, x, b) (one
// rounding), min, max, round (to nearest, ties to even), add, set1 (float and int32), shift_or(a, b, bits)
// = a | b << bits, and store_bytes(uint8_t*, IReg) (kLanes values in [0, 255]).
template <class F>
struct RequantizeImpl {
  static constexpr int L = F::kLanes;

  // Y of min(n, L) sums as int32 lanes (lanes past n hold Y of a zero sum).
  static inline __attribute__((always_inline)) typename F::IReg quantize(const int32_t* acc, int64_t n,
                                                                         const QEpilogue& e) {
    typename F::IReg sums;
    if (n >= L) {
      sums = F::load(acc);
    } else {
      int32_t part[L] = {};
      for (int64_t k = 0; k < n; ++k) part[k] = acc[k];
      sums = F::load(part);
    }
    typename F::FReg v = F::fma(F::set1(e.m), F::to_float(sums), F::set1(e.b));
    v = F::min(F::max(v, F::set1(e.low)), F::set1(e.high));
    return F::add(F::round(v), F::set1i(e.zero_point));
  }

  static void run(const int32_t* acc, int64_t acc_stride, const QEpilogue* epilogue, int channels, int64_t count,
                  uint8_t* out, int64_t channel_step, int64_t pixel_step) {
    if (pixel_step == 1) {  // channel rows: vector stores
      for (int c = 0; c < channels; ++c) {
        const int32_t* row = acc + c * acc_stride;
        uint8_t* dst = out + c * channel_step;
        int64_t k = 0;
        for (; k + L <= count; k += L) F::store_bytes(dst + k, quantize(row + k, L, epilogue[c]));
        if (k < count) {
          uint8_t bytes[L];
          F::store_bytes(bytes, quantize(row + k, count - k, epilogue[c]));
          for (int64_t i = 0; k + i < count; ++i) dst[k + i] = bytes[i];
        }
      }
      return;
    }
    // Channels last: the (up to 4) channels of a pixel are neighbours; pack them into one 32-bit
    // word per pixel (little endian) and store it, or its first `channels` bytes.
    for (int64_t k = 0; k < count; k += L) {
      typename F::IReg word = quantize(acc + k, count - k, epilogue[0]);
      for (int c = 1; c < channels; ++c) {
        word = F::shift_or(word, quantize(acc + c * acc_stride + k, count - k, epilogue[c]), 8 * c);
      }
      int32_t words[L];
      F::store(words, word);
      const int64_t n = count - k < L ? count - k : L;
      uint8_t* dst = out + k * pixel_step;
      if (channels == 4) {
        for (int64_t i = 0; i < n; ++i) __builtin_memcpy(dst + i * pixel_step, &words[i], 4);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          for (int c = 0; c < channels; ++c) dst[i * pixel_step + c] = static_cast<uint8_t>(words[i] >> (8 * c));
        }
      }
    }
  }
};

}  // namespace tile
}  // namespace lbdeploy
