// The inner loop of the optimized QTernaryConv: tile_kernel.h's TileImpl (the same pattern
// program, tile shapes and register blocking as the float kernel) instantiated over integer
// vectors of 16-bit lanes. The input is a scratch copy of X - x_zero_point as int16 (|value| <= 255,
// padding 0); a call sums one step (one block of 4 output channels over one chunk of input
// channels, chosen so that no channel has more than kQMaxKernelTaps = 128 non-zero weights in it;
// every total and pattern sum is then a sum of at most 128 values of magnitude <= 255, exact in 16
// bits: 128 * 255 = 32640) and widens its totals to int32 into the output, adding to it after the
// first chunk. Only additions and subtractions; no multiply, so no dot-product extension is needed.
//
// One variant per instruction set, each in its own translation unit (qtile_avx512.cc needs
// AVX-512BW, qtile_avx2.cc, qtile_neon.cc, qtile_scalar.cc). To add one, define a vector type with
// In = int16_t, Out = int32_t, kWidening and finish() (see Totals in tile_kernel.h), instantiate
// three TileImpl shapes, define the epilogue's vector type (qepilogue_kernel.h) and list the file in
// build.py.
#pragma once

#include <cstdint>

#include "qepilogue_kernel.h"
#include "tile_kernel.h"

namespace lbdeploy {
namespace tile {

// out[(o * rows + r) * out_row + k] (+)= sum over the listed taps of +-base[r * row_stride + offset + k]
// (TileFn's contract on int16 inputs and int32 outputs).
using QTileFn = void (*)(const int16_t* base, int64_t row_stride, const int32_t* counts, const int32_t* offsets,
                         int32_t* out, int64_t out_row, bool accumulate);

struct QTileShape {
  int rows;   // output rows per tile
  int width;  // elements per tile row (a multiple of the vector width)
  QTileFn fn;
};

struct QTileKernel {
  int lanes;                       // int16 values per vector
  QTileShape shapes[kTileShapes];  // widest first, as TileKernel's
  QRequantizeFn requantize;        // the epilogue (qepilogue_kernel.h) at this instruction set

  // The tile geometry for make_tile_plan (which reads only lanes and shapes; the quantized path
  // plans with flat_only, so lanes only weighs the tile shapes' costs in vectors).
  TileKernel geometry() const {
    TileKernel g{};
    g.lanes = lanes;
    for (int k = 0; k < kTileShapes; ++k) g.shapes[k] = {shapes[k].rows, shapes[k].width, nullptr};
    return g;
  }
};

QTileKernel avx512bw_qkernel();
QTileKernel avx2_qkernel();
QTileKernel neon_qkernel();
QTileKernel scalar_qkernel();

// The epilogue alone, for the reference path (qtile_scalar.cc).
QRequantizeFn scalar_requantize();

template <class Large, class Medium, class Small, class Epilogue>
static QTileKernel make_qtile_kernel() {
  return {Large::kLanes,
          {{Large::kRows, Large::kWidth, &Large::run},
           {Medium::kRows, Medium::kWidth, &Medium::run},
           {Small::kRows, Small::kWidth, &Small::run}},
          &RequantizeImpl<Epilogue>::run};
}

}  // namespace tile
}  // namespace lbdeploy
