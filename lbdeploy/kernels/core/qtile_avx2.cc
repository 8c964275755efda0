// AVX2 QTernaryConv tile kernel (x86-64; built with -mavx2 -mfma, run only where the CPU reports
// AVX2 and FMA).
// 16 int16 lanes per ymm; tiles of 1 row x 3 vectors (12 totals + 3 sums of the 16 registers),
// 1 x 2 with 2 partial sums, and 1 vector with 4.
#include <immintrin.h>

#include "qtile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct QVecAvx2 {
  using Reg = __m256i;
  using In = int16_t;
  using Out = int32_t;
  static constexpr bool kWidening = true;
  static constexpr int kWidth = 16;
  static Reg zero() { return _mm256_setzero_si256(); }
  static Reg load(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Reg add(Reg a, Reg b) { return _mm256_add_epi16(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_epi16(a, b); }
  static void finish(int32_t* p, Reg total, bool accumulate) {
    __m256i low = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(total));
    __m256i high = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(total, 1));
    __m256i* out = reinterpret_cast<__m256i*>(p);
    if (accumulate) {
      low = _mm256_add_epi32(low, _mm256_loadu_si256(out));
      high = _mm256_add_epi32(high, _mm256_loadu_si256(out + 1));
    }
    _mm256_storeu_si256(out, low);
    _mm256_storeu_si256(out + 1, high);
  }
};

// The epilogue's 8 float / int32 lanes (built with -mfma; run only where the CPU reports FMA).
struct EpilogueAvx2 {
  using FReg = __m256;
  using IReg = __m256i;
  static constexpr int kLanes = 8;
  static IReg load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(int32_t* p, IReg a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
  static FReg to_float(IReg a) { return _mm256_cvtepi32_ps(a); }
  static FReg fma(FReg m, FReg x, FReg b) { return _mm256_fmadd_ps(m, x, b); }
  static FReg min(FReg a, FReg b) { return _mm256_min_ps(a, b); }
  static FReg max(FReg a, FReg b) { return _mm256_max_ps(a, b); }
  static IReg round(FReg a) { return _mm256_cvtps_epi32(a); }  // MXCSR: to nearest, ties to even
  static IReg add(IReg a, IReg b) { return _mm256_add_epi32(a, b); }
  static FReg set1(float a) { return _mm256_set1_ps(a); }
  static IReg set1i(int32_t a) { return _mm256_set1_epi32(a); }
  static IReg shift_or(IReg a, IReg b, int bits) { return _mm256_or_si256(a, _mm256_sll_epi32(b, _mm_cvtsi32_si128(bits))); }
  static void store_bytes(uint8_t* p, IReg a) {  // values in [0, 255]: the saturating packs keep them
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(words, words));
  }
};

using Large = TileImpl<QVecAvx2, 3, 1>;
using Medium = TileImpl<QVecAvx2, 2, 1, 2>;
using Small = TileImpl<QVecAvx2, 1, 1, 4>;

}  // namespace

QTileKernel avx2_qkernel() { return make_qtile_kernel<Large, Medium, Small, EpilogueAvx2>(); }

}  // namespace tile
}  // namespace lbdeploy
