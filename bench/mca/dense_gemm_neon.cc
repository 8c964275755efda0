// Dense GEMM micro-kernels (the inner K loop) for comparison with the ternary tiles, written the
// way optimized NEON conv/GEMM libraries do for these cores:
//   mca_dense_fp32: 16 positions x 4 channels (the float ternary tile's 16 positions), one k per
//     iteration: 4 loads of inputs, 1 of weights, 16 FMAs by lane.
//   mca_dense_int8: 4 positions x 4 channels, 16 k per iteration, without the dot-product
//     extension (Cortex-A72/A57): SMULL + SMLAL2 (int8 x int8 -> int16 pairs) + SADALP into int32.
//   mca_dense_int8_sdot (built with +dotprod; Cortex-A55, Neoverse-N1): 16 positions x 4 channels,
//     4 k per iteration, 16 SDOT by lane.
#include <arm_neon.h>
#include <cstdint>

extern "C" void mca_dense_fp32(const float* a, const float* b, int k, float* out) {
  float32x4_t acc[4][4];
  #pragma GCC unroll 8
  for (int c = 0; c < 4; ++c)
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) acc[c][v] = vld1q_f32(out + 4 * (c * 4 + v));
  for (int i = 0; i < k; ++i) {
    float32x4_t x[4];
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) x[v] = vld1q_f32(a + 16 * i + 4 * v);
    const float32x4_t w = vld1q_f32(b + 4 * i);
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) {
      acc[0][v] = vfmaq_laneq_f32(acc[0][v], x[v], w, 0);
      acc[1][v] = vfmaq_laneq_f32(acc[1][v], x[v], w, 1);
      acc[2][v] = vfmaq_laneq_f32(acc[2][v], x[v], w, 2);
      acc[3][v] = vfmaq_laneq_f32(acc[3][v], x[v], w, 3);
    }
  }
  #pragma GCC unroll 8
  for (int c = 0; c < 4; ++c)
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) vst1q_f32(out + 4 * (c * 4 + v), acc[c][v]);
}

extern "C" void mca_dense_int8(const int8_t* a, const int8_t* b, int k16, int32_t* out) {
  int32x4_t acc[4][4];
  #pragma GCC unroll 8
  for (int p = 0; p < 4; ++p)
    #pragma GCC unroll 8
    for (int c = 0; c < 4; ++c) acc[p][c] = vld1q_s32(out + 4 * (p * 4 + c));
  for (int i = 0; i < k16; ++i) {
    int8x16_t w[4];
    #pragma GCC unroll 8
    for (int c = 0; c < 4; ++c) w[c] = vld1q_s8(b + 64 * i + 16 * c);
    #pragma GCC unroll 8
    for (int p = 0; p < 4; ++p) {
      const int8x16_t x = vld1q_s8(a + 64 * i + 16 * p);
      #pragma GCC unroll 8
      for (int c = 0; c < 4; ++c) {
        int16x8_t t = vmull_s8(vget_low_s8(x), vget_low_s8(w[c]));
        t = vmlal_high_s8(t, x, w[c]);
        acc[p][c] = vpadalq_s16(acc[p][c], t);
      }
    }
  }
  #pragma GCC unroll 8
  for (int p = 0; p < 4; ++p)
    #pragma GCC unroll 8
    for (int c = 0; c < 4; ++c) vst1q_s32(out + 4 * (p * 4 + c), acc[p][c]);
}

#if defined(__ARM_FEATURE_DOTPROD)
extern "C" void mca_dense_int8_sdot(const int8_t* a, const int8_t* b, int k4, int32_t* out) {
  int32x4_t acc[4][4];
  #pragma GCC unroll 8
  for (int c = 0; c < 4; ++c)
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) acc[c][v] = vld1q_s32(out + 4 * (c * 4 + v));
  for (int i = 0; i < k4; ++i) {
    int8x16_t x[4];
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) x[v] = vld1q_s8(a + 64 * i + 16 * v);
    const int8x16_t w = vld1q_s8(b + 16 * i);
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) {
      acc[0][v] = vdotq_laneq_s32(acc[0][v], x[v], w, 0);
      acc[1][v] = vdotq_laneq_s32(acc[1][v], x[v], w, 1);
      acc[2][v] = vdotq_laneq_s32(acc[2][v], x[v], w, 2);
      acc[3][v] = vdotq_laneq_s32(acc[3][v], x[v], w, 3);
    }
  }
  #pragma GCC unroll 8
  for (int c = 0; c < 4; ++c)
    #pragma GCC unroll 8
    for (int v = 0; v < 4; ++v) vst1q_s32(out + 4 * (c * 4 + v), acc[c][v]);
}
#endif
