// AVX2 tile kernel (x86-64; built with -mavx2, run only where the CPU reports AVX2).
// Tiles of 1 row x 3 vectors of 8 floats: 15 of the 16 ymm registers hold totals (12) and
// pattern sums (3).
// Narrower shapes for small maps: 1 row x 2 vectors (2 partial sums), 1 vector (4 partial sums).
#include <immintrin.h>

#include "tile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct VecAvx2 {
  using Reg = __m256;
  static constexpr int kWidth = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static void store(float* p, Reg a) { _mm256_storeu_ps(p, a); }
};

using Impl = TileImpl<VecAvx2, 3, 1>;

using MediumImpl = TileImpl<VecAvx2, 2, 1, 2>;
using SmallImpl = TileImpl<VecAvx2, 1, 1, 4>;

}  // namespace

TileKernel avx2_kernel() { return make_tile_kernel<Impl, MediumImpl, SmallImpl>(); }

}  // namespace tile
}  // namespace lbdeploy
