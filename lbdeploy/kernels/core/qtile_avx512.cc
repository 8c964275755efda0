// AVX-512BW QTernaryConv tile kernel (x86-64; built with -mavx512f -mavx512bw, run only where the
// CPU reports AVX-512BW). 32 int16 lanes per zmm; tiles of 2 rows x 3 vectors (24 totals + 6 sums
// of the 32 registers; the adds take their tap straight from memory), 1 x 4, and 1 vector with 4
// partial sums.
#include <immintrin.h>

#include "qtile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

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
    __m512i low = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(total));
    __m512i high = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(total, 1));
    if (accumulate) {
      low = _mm512_add_epi32(low, _mm512_loadu_si512(p));
      high = _mm512_add_epi32(high, _mm512_loadu_si512(p + 16));
    }
    _mm512_storeu_si512(p, low);
    _mm512_storeu_si512(p + 16, high);
  }
};

using Large = TileImpl<QVecAvx512, 3, 2>;
using Medium = TileImpl<QVecAvx512, 4, 1>;
using Small = TileImpl<QVecAvx512, 1, 1, 4>;

}  // namespace

QTileKernel avx512bw_qkernel() { return make_qtile_kernel<Large, Medium, Small>(); }

}  // namespace tile
}  // namespace lbdeploy
