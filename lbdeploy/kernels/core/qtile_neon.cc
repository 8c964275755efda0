// NEON QTernaryConv tile kernel (aarch64; plain NEON adds, no dot-product extension, so it runs on
// Cortex-A53/A55/A57/A72 as on newer cores). 8 int16 lanes per q register; tiles of 2 rows x 2
// vectors (16 totals + 4 sums of the 32 registers, the rest take the loads), 1 x 4, and 1 vector
// with 4 partial sums.
#include <arm_neon.h>

#include "qtile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct QVecNeon {
  using Reg = int16x8_t;
  using In = int16_t;
  using Out = int32_t;
  static constexpr bool kWidening = true;
  static constexpr int kWidth = 8;
  static Reg zero() { return vdupq_n_s16(0); }
  static Reg load(const int16_t* p) { return vld1q_s16(p); }
  static Reg add(Reg a, Reg b) { return vaddq_s16(a, b); }
  static Reg sub(Reg a, Reg b) { return vsubq_s16(a, b); }
  static void finish(int32_t* p, Reg total, bool accumulate) {
    int32x4_t low = vmovl_s16(vget_low_s16(total));
    int32x4_t high = vmovl_high_s16(total);
    if (accumulate) {
      low = vaddq_s32(low, vld1q_s32(p));
      high = vaddq_s32(high, vld1q_s32(p + 4));
    }
    vst1q_s32(p, low);
    vst1q_s32(p + 4, high);
  }
};

using Large = TileImpl<QVecNeon, 2, 2>;
using Medium = TileImpl<QVecNeon, 4, 1>;
using Small = TileImpl<QVecNeon, 1, 1, 4>;

}  // namespace

QTileKernel neon_qkernel() { return make_qtile_kernel<Large, Medium, Small>(); }

}  // namespace tile
}  // namespace lbdeploy
