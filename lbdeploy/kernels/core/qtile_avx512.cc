// AVX-512BW QTernaryConv tile kernel (x86-64; built with -mavx512f -mavx512bw, run only where the
// CPU reports AVX-512BW). 32 int16 lanes per zmm; tiles of 2 rows x 3 vectors (24 totals + 6 sums
// of the 32 registers; the adds take their tap straight from memory), 1 x 4, and 1 vector with 4
// partial sums.
#include <immintrin.h>

#include "qtile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

// All-ones mask: the zero-masked intrinsics below are then the plain instructions (whose intrinsics
// trip GCC 12's -Wmaybe-uninitialized, as in tile_avx512.cc).
constexpr __mmask16 kAll = 0xFFFF;

struct QVecAvx512 {
  using Reg = __m512i;
  using In = int16_t;
  using Out = int32_t;
  static constexpr bool kWidening = true;
  static constexpr int kWidth = 32;
  static Reg zero() { return _mm512_setzero_si512(); }
  static Reg load(const int16_t* p) { return _mm512_loadu_si512(p); }
  static Reg add(Reg a, Reg b) { return _mm512_add_epi16(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_epi16(a, b); }
  static void finish(int32_t* p, Reg total, bool accumulate) {
    __m512i low = _mm512_maskz_cvtepi16_epi32(kAll, _mm512_maskz_extracti64x4_epi64(0xFF, total, 0));
    __m512i high = _mm512_maskz_cvtepi16_epi32(kAll, _mm512_maskz_extracti64x4_epi64(0xFF, total, 1));
    if (accumulate) {
      low = _mm512_add_epi32(low, _mm512_loadu_si512(p));
      high = _mm512_add_epi32(high, _mm512_loadu_si512(p + 16));
    }
    _mm512_storeu_si512(p, low);
    _mm512_storeu_si512(p + 16, high);
  }
};

// The epilogue's 16 float / int32 lanes (FMA is part of AVX-512F).
struct EpilogueAvx512 {
  using FReg = __m512;
  using IReg = __m512i;
  static constexpr int kLanes = 16;
  static IReg load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static void store(int32_t* p, IReg a) { _mm512_storeu_si512(p, a); }
  static FReg to_float(IReg a) { return _mm512_maskz_cvtepi32_ps(kAll, a); }
  static FReg fma(FReg m, FReg x, FReg b) { return _mm512_fmadd_ps(m, x, b); }
  static FReg min(FReg a, FReg b) { return _mm512_maskz_min_ps(kAll, a, b); }
  static FReg max(FReg a, FReg b) { return _mm512_maskz_max_ps(kAll, a, b); }
  static IReg round(FReg a) { return _mm512_maskz_cvtps_epi32(kAll, a); }  // MXCSR: to nearest, ties to even
  static IReg add(IReg a, IReg b) { return _mm512_add_epi32(a, b); }
  static FReg set1(float a) { return _mm512_set1_ps(a); }
  static IReg set1i(int32_t a) { return _mm512_set1_epi32(a); }
  static IReg shift_or(IReg a, IReg b, int bits) { return _mm512_or_si512(a, _mm512_maskz_sll_epi32(kAll, b, _mm_cvtsi32_si128(bits))); }
  static void store_bytes(uint8_t* p, IReg a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_maskz_cvtepi32_epi8(kAll, a)); }
};

using Large = TileImpl<QVecAvx512, 3, 2>;
using Medium = TileImpl<QVecAvx512, 4, 1>;
using Small = TileImpl<QVecAvx512, 1, 1, 4>;

}  // namespace

QTileKernel avx512bw_qkernel() { return make_qtile_kernel<Large, Medium, Small, EpilogueAvx512>(); }

}  // namespace tile
}  // namespace lbdeploy
