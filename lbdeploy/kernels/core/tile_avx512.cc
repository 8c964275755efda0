// AVX-512F tile kernel (x86-64; built with -mavx512f, run only where the CPU reports AVX-512F).
// Tiles of 2 rows x 4 vectors of 16 floats: 16 of the 32 zmm registers hold pattern sums.
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

using Impl = TileImpl<VecAvx512, 4, 2>;

}  // namespace

TileKernel avx512_kernel() { return {Impl::kRows, Impl::kWidth, Impl::kLanes, &Impl::run}; }

}  // namespace tile
}  // namespace lbdeploy
