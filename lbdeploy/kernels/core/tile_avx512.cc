// AVX-512F tile kernel (x86-64; built with -mavx512f, run only where the CPU reports AVX-512F).
// Tiles of 2 rows x 3 vectors of 16 floats: 30 of the 32 zmm registers hold totals (24) and pattern
// sums (6); fast 16 x 16 lane transposes for the input copy and the epilogue.
// Narrower shapes for small maps: 1 row x 4 vectors, and 1 vector with 4 partial sums.
#include <immintrin.h>

#include "tile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct VecAvx512 {
  using Reg = __m512;
  static constexpr int kWidth = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static void store(float* p, Reg a) { _mm512_storeu_ps(p, a); }
};

using Impl = TileImpl<VecAvx512, 3, 2>;

// The zero-masked intrinsics below use this all-ones mask: they are then the plain instructions
// (whose intrinsics trip GCC 12's -Wmaybe-uninitialized through _mm512_undefined_ps).
constexpr __mmask16 kAll = 0xFFFF;

// In-register transpose of 16 vectors of 16 floats (r[i][j] becomes r[j][i]).
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_maskz_unpacklo_ps(kAll, r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_maskz_unpackhi_ps(kAll, r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_maskz_shuffle_ps(kAll, t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_maskz_shuffle_ps(kAll, t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_maskz_shuffle_ps(kAll, t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_maskz_shuffle_ps(kAll, t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 4; ++i) {
      t[8 * h + i] = _mm512_maskz_shuffle_f32x4(kAll, u[8 * h + i], u[8 * h + 4 + i], 0x88);
      t[8 * h + 4 + i] = _mm512_maskz_shuffle_f32x4(kAll, u[8 * h + i], u[8 * h + 4 + i], 0xDD);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_maskz_shuffle_f32x4(kAll, t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_maskz_shuffle_f32x4(kAll, t[i], t[8 + i], 0xDD);
  }
}

void gather16(const float* const* rows, int64_t count, float* dst) {
  for (int64_t m0 = 0; m0 < count; m0 += 16) {
    const int64_t n = count - m0 < 16 ? count - m0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1);
    __m512 r[16];
    for (int lane = 0; lane < 16; ++lane)
      r[lane] = rows[lane] ? _mm512_maskz_loadu_ps(mask, rows[lane] + m0) : _mm512_setzero_ps();
    transpose16(r);
    for (int64_t m = 0; m < n; ++m) _mm512_storeu_ps(dst + (m0 + m) * 16, r[m]);
  }
}

void scatter16(const float* src, int64_t count, float* const* rows, float scale, float bias, bool relu) {
  const __m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
  for (int64_t m0 = 0; m0 < count; m0 += 16) {
    const int64_t n = count - m0 < 16 ? count - m0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1);
    __m512 r[16];
    for (int64_t m = 0; m < 16; ++m) {
      r[m] = m < n ? _mm512_add_ps(_mm512_mul_ps(s, _mm512_loadu_ps(src + (m0 + m) * 16)), b) : zero;
      if (relu) r[m] = _mm512_maskz_max_ps(kAll, r[m], zero);
    }
    transpose16(r);
    for (int lane = 0; lane < 16; ++lane)
      if (rows[lane]) _mm512_mask_storeu_ps(rows[lane] + m0, mask, r[lane]);
  }
}

using MediumImpl = TileImpl<VecAvx512, 4, 1>;
using SmallImpl = TileImpl<VecAvx512, 1, 1, 4>;

}  // namespace

TileKernel avx512_kernel() { return make_tile_kernel<Impl, MediumImpl, SmallImpl>(&gather16, &scatter16); }

}  // namespace tile
}  // namespace lbdeploy
