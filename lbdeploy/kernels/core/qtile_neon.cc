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

// The epilogue's 4 float / int32 lanes (fused multiply-add and rounding to nearest even are base
// aarch64).
struct EpilogueNeon {
  using FReg = float32x4_t;
  using IReg = int32x4_t;
  static constexpr int kLanes = 4;
  static IReg load(const int32_t* p) { return vld1q_s32(p); }
  static void store(int32_t* p, IReg a) { vst1q_s32(p, a); }
  static FReg to_float(IReg a) { return vcvtq_f32_s32(a); }
  static FReg fma(FReg m, FReg x, FReg b) { return vfmaq_f32(b, m, x); }
  static FReg min(FReg a, FReg b) { return vminq_f32(a, b); }
  static FReg max(FReg a, FReg b) { return vmaxq_f32(a, b); }
  static IReg round(FReg a) { return vcvtnq_s32_f32(a); }
  static IReg add(IReg a, IReg b) { return vaddq_s32(a, b); }
  static FReg set1(float a) { return vdupq_n_f32(a); }
  static IReg set1i(int32_t a) { return vdupq_n_s32(a); }
  static IReg shift_or(IReg a, IReg b, int bits) { return vorrq_s32(a, vshlq_s32(b, vdupq_n_s32(bits))); }
  static void store_bytes(uint8_t* p, IReg a) {  // values in [0, 255]
    const uint16x4_t words = vmovn_u32(vreinterpretq_u32_s32(a));
    const uint8x8_t bytes = vmovn_u16(vcombine_u16(words, words));
    vst1_lane_u32(reinterpret_cast<uint32_t*>(p), vreinterpret_u32_u8(bytes), 0);
  }
};

using Large = TileImpl<QVecNeon, 2, 2>;
using Medium = TileImpl<QVecNeon, 4, 1>;
using Small = TileImpl<QVecNeon, 1, 1, 4>;

}  // namespace

QTileKernel neon_qkernel() { return make_qtile_kernel<Large, Medium, Small, EpilogueNeon>(); }

}  // namespace tile
}  // namespace lbdeploy
