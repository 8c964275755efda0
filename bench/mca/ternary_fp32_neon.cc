// Hot loops of the float TernaryConv NEON tile kernel (lbdeploy/kernels/core/tile_neon.cc, its
// 2 x 2-vector tile), wrapped as plain functions so bench/llvm_mca.py can cut them out of the
// compiler's assembly: the tap loop (one list of taps into the pattern sums, TileImpl::sum_list)
// and the combine step (a pattern sum added into the 4 channels' totals).
#include "tile_neon.cc"

using lbdeploy::tile::Impl;
using lbdeploy::tile::VecNeon;

extern "C" void mca_tap_loop(const float* base, int64_t row_stride, const int32_t* offsets, int count, float* out) {
  Impl::Reg sums[1][Impl::kVectors];
  #pragma GCC unroll 8
  for (int v = 0; v < Impl::kVectors; ++v) sums[0][v] = VecNeon::load(out + 4 * v);
  Impl::sum_list<true>(base, row_stride, offsets, count, sums);
  #pragma GCC unroll 8
  for (int v = 0; v < Impl::kVectors; ++v) VecNeon::store(out + 4 * v, sums[0][v]);
}

extern "C" void mca_combine_loop(const float* pattern_sums, int count, float* out) {
  Impl::Reg total[4][Impl::kVectors];
  #pragma GCC unroll 8
  for (int o = 0; o < 4; ++o)
    #pragma GCC unroll 8
    for (int v = 0; v < Impl::kVectors; ++v) total[o][v] = VecNeon::load(out + 4 * (o * Impl::kVectors + v));
  for (int i = 0; i < count; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < Impl::kVectors; ++v) {
      const Impl::Reg sum = VecNeon::load(pattern_sums + 4 * (i * Impl::kVectors + v));
#pragma GCC unroll 4
      for (int o = 0; o < 4; ++o) total[o][v] = VecNeon::add(total[o][v], sum);
    }
  }
  #pragma GCC unroll 8
  for (int o = 0; o < 4; ++o)
    #pragma GCC unroll 8
    for (int v = 0; v < Impl::kVectors; ++v) VecNeon::store(out + 4 * (o * Impl::kVectors + v), total[o][v]);
}
