// Pre-processing for the optimized TernaryConv path:
//   * PatternProgram: the weights regrouped, once per node, into per-block tap lists sorted by
//     joint ternary pattern (the input of tile::TileImpl);
//   * InputLayout: how an input of a given shape is laid out in the zero-padded, stride-split
//     scratch buffer, so that every tap of every output tile reads contiguous floats;
//   * TilePlan: the program's taps turned into buffer offsets, and the output tiles, per shape.
#pragma once

#include <cstdint>
#include <vector>

#include "ternary_conv.h"

namespace lbdeploy {

struct PatternProgram {
  int64_t cout = 0, cin_per_group = 0, blocks_per_group = 0;
  std::vector<int32_t> counts;        // [block][pattern][+/-] list lengths
  std::vector<int32_t> taps;          // tap ids (c_global * kH + i) * kW + j, in list order
  std::vector<size_t> block_start;    // first entry of each block in taps; size blocks + 1

  int64_t blocks() const { return static_cast<int64_t>(block_start.size()) - 1; }
};

// weights: int8 [cout][cin_per_group * kH * kW], values in {-1, 0, +1}.
PatternProgram build_pattern_program(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout,
                                     int64_t cin_per_group);

// Scratch layout: per batch item, per channel, sH*sW planes of hq x wq floats where plane
// (a, b) holds padded input rows a, a+sH, ... and columns b, b+sW, ... .
struct InputLayout {
  Shape4 input{};
  int64_t out_h = 0, out_w = 0;
  int64_t hq = 0, wq = 0;
  int64_t plane_stride = 0, channel_stride = 0, batch_stride = 0;
  size_t buffer_floats = 0;  // including read slack past the last tile

  bool same_input(const Shape4& x) const {
    return x.n == input.n && x.c == input.c && x.h == input.h && x.w == input.w;
  }
};

InputLayout make_layout(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w, int tile_width);

// Copies batch item n of x into its (already zero-padded) place in buffer.
void copy_input(const ConvParams& params, const InputLayout& layout, const float* x, int64_t n, int64_t c,
                float* buffer);

struct TilePlan {
  InputLayout layout;
  std::vector<int32_t> offsets;      // program taps as offsets into one batch item of the buffer
  std::vector<int64_t> tile_starts;  // first flat output index f = oy * wq + ox of each tile
};

TilePlan make_tile_plan(const ConvParams& params, const PatternProgram& program, const Shape4& x, int64_t out_h,
                        int64_t out_w, int tile_width);

}  // namespace lbdeploy
