// NEON tile kernel (aarch64, where NEON is always present).
// Tiles of 2 rows x 2 vectors of 4 floats: 20 of the 32 q registers hold totals and pattern sums; the
// rest take the loads (aarch64 adds have no memory operands).
// Narrower shapes for small maps: 1 row x 4 vectors, and 1 vector with 4 partial sums.
#include <arm_neon.h>

#include "tile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct VecNeon {
  using Reg = float32x4_t;
  static constexpr int kWidth = 4;
  static Reg zero() { return vdupq_n_f32(0.0f); }
  static Reg load(const float* p) { return vld1q_f32(p); }
  static Reg add(Reg a, Reg b) { return vaddq_f32(a, b); }
  static Reg sub(Reg a, Reg b) { return vsubq_f32(a, b); }
  static void store(float* p, Reg a) { vst1q_f32(p, a); }
};

using Impl = TileImpl<VecNeon, 2, 2>;

using MediumImpl = TileImpl<VecNeon, 4, 1>;
using SmallImpl = TileImpl<VecNeon, 1, 1, 4>;

}  // namespace

TileKernel neon_kernel() { return make_tile_kernel<Impl, MediumImpl, SmallImpl>(); }

}  // namespace tile
}  // namespace lbdeploy
