// NEON tile kernel (aarch64, where NEON is always present).
// 4 vectors of 4 floats per tile: 16 accumulators + 8 pattern sums of the 32 q registers.
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

using Impl = TileImpl<VecNeon, 4>;

}  // namespace

TileKernel neon_kernel() { return {"neon", Impl::kWidth, &Impl::run}; }

}  // namespace tile
}  // namespace lbdeploy
