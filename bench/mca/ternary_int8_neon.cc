// Hot loops of the QTernaryConv NEON tile kernel (lbdeploy/kernels/core/qtile_neon.cc, its
// 2 x 2-vector tile of int16 lanes), as in ternary_fp32_neon.cc: the tap loop and the combine step.
#include "qtile_neon.cc"

using lbdeploy::tile::Large;
using lbdeploy::tile::QVecNeon;
using lbdeploy::tile::EpilogueNeon;

extern "C" void mca_tap_loop(const int16_t* base, int64_t row_stride, const int32_t* offsets, int count, int16_t* out) {
  Large::Reg sums[1][Large::kVectors];
  #pragma GCC unroll 8
  for (int v = 0; v < Large::kVectors; ++v) sums[0][v] = QVecNeon::load(out + 8 * v);
  Large::sum_list<true>(base, row_stride, offsets, count, sums);
  #pragma GCC unroll 8
  for (int v = 0; v < Large::kVectors; ++v) vst1q_s16(out + 8 * v, sums[0][v]);
}

extern "C" void mca_combine_loop(const int16_t* pattern_sums, int count, int16_t* out) {
  Large::Reg total[4][Large::kVectors];
  #pragma GCC unroll 8
  for (int o = 0; o < 4; ++o)
    #pragma GCC unroll 8
    for (int v = 0; v < Large::kVectors; ++v) total[o][v] = QVecNeon::load(out + 8 * (o * Large::kVectors + v));
  for (int i = 0; i < count; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < Large::kVectors; ++v) {
      const Large::Reg sum = QVecNeon::load(pattern_sums + 8 * (i * Large::kVectors + v));
#pragma GCC unroll 4
      for (int o = 0; o < 4; ++o) total[o][v] = QVecNeon::add(total[o][v], sum);
    }
  }
  #pragma GCC unroll 8
  for (int o = 0; o < 4; ++o)
    #pragma GCC unroll 8
    for (int v = 0; v < Large::kVectors; ++v) vst1q_s16(out + 8 * (o * Large::kVectors + v), total[o][v]);
}

// The requantize epilogue over one channel row (qepilogue_kernel.h, NEON): 4 outputs per iteration.
extern "C" void mca_requantize_loop(const int32_t* acc, int64_t count, uint8_t* out) {
  const lbdeploy::tile::QEpilogue e{0.01f, 3.0f, -10.0f, 245.0f, 10};
  lbdeploy::tile::RequantizeImpl<lbdeploy::tile::EpilogueNeon>::run(acc, 0, &e, 1, count, out, 0, 1);
}
