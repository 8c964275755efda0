// Weight regrouping by joint ternary pattern, the scratch input layout and the tile plan.
// See plan.h for what each piece is; tile_kernel.h for how the tile kernel consumes them.
#include "plan.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "patterns.h"

namespace lbdeploy {

PatternProgram build_pattern_program(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout,
                                     int64_t cin_per_group) {
  using tile::kBlock;
  using tile::kPatterns;
  const int64_t taps_per_channel = params.kernel_h * params.kernel_w;
  const int64_t k = cin_per_group * taps_per_channel;
  const int64_t cout_g = cout / params.group;
  PatternProgram program;
  program.cout = cout;
  program.cin_per_group = cin_per_group;
  program.blocks_per_group = (cout_g + kBlock - 1) / kBlock;
  program.block_start.push_back(0);
  std::vector<std::vector<int32_t>> lists(2 * kPatterns);
  for (int64_t g = 0; g < params.group; ++g) {
    const int64_t tap_base = g * cin_per_group * taps_per_channel;
    for (int64_t b = 0; b < program.blocks_per_group; ++b) {
      for (auto& list : lists) list.clear();
      const int64_t first = g * cout_g + b * kBlock;
      const int64_t valid = std::min<int64_t>(kBlock, cout_g - b * kBlock);
      for (int64_t t = 0; t < k; ++t) {
        int code = 0, power = 1;
        for (int o = 0; o < kBlock; ++o, power *= 3) {
          const int digit = o < valid ? weights[static_cast<size_t>((first + o) * k + t)] : 0;
          code += (digit + 1) * power;
        }
        const int sign = tile::kPatternTable.sign[code];
        if (sign == 0) continue;
        const int index = tile::kPatternTable.index[code];
        lists[2 * index + (sign > 0 ? 0 : 1)].push_back(static_cast<int32_t>(tap_base + t));
      }
      for (const auto& list : lists) {
        program.counts.push_back(static_cast<int32_t>(list.size()));
        program.taps.insert(program.taps.end(), list.begin(), list.end());
      }
      program.block_start.push_back(program.taps.size());
    }
  }
  return program;
}

InputLayout make_layout(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w, int tile_width) {
  InputLayout layout;
  layout.input = x;
  layout.out_h = out_h;
  layout.out_w = out_w;
  const int64_t hp = x.h + params.pad_top + params.pad_bottom;
  const int64_t wp = x.w + params.pad_left + params.pad_right;
  layout.hq = (hp + params.stride_h - 1) / params.stride_h;
  layout.wq = (wp + params.stride_w - 1) / params.stride_w;
  layout.plane_stride = layout.hq * layout.wq;
  layout.channel_stride = params.stride_h * params.stride_w * layout.plane_stride;
  layout.batch_stride = x.c * layout.channel_stride;
  if (layout.batch_stride > std::numeric_limits<int32_t>::max() / 2) {
    throw KernelError("TernaryConv input is too large for the optimized kernel (more than 2^30 padded floats per "
                      "batch item); set LBDEPLOY_KERNEL=reference");
  }
  // A tile may read up to one tile width and one row past the data of the last batch item.
  layout.buffer_floats = static_cast<size_t>(x.n * layout.batch_stride + 2 * (tile_width + layout.wq));
  return layout;
}

void copy_input(const ConvParams& params, const InputLayout& layout, const float* x, int64_t n, int64_t c,
                float* buffer) {
  const Shape4& s = layout.input;
  const float* src = x + ((n * s.c + c) * s.h) * s.w;
  float* dst = buffer + n * layout.batch_stride + c * layout.channel_stride;
  for (int64_t y = 0; y < s.h; ++y) {
    const int64_t r = y + params.pad_top;
    float* row_base = dst + ((r % params.stride_h) * params.stride_w) * layout.plane_stride + (r / params.stride_h) * layout.wq;
    const float* src_row = src + y * s.w;
    if (params.stride_w == 1) {
      std::memcpy(row_base + params.pad_left, src_row, static_cast<size_t>(s.w) * sizeof(float));
      continue;
    }
    for (int64_t xx = 0; xx < s.w; ++xx) {
      const int64_t m = xx + params.pad_left;
      row_base[(m % params.stride_w) * layout.plane_stride + m / params.stride_w] = src_row[xx];
    }
  }
}

TilePlan make_tile_plan(const ConvParams& params, const PatternProgram& program, const Shape4& x, int64_t out_h,
                        int64_t out_w, int tile_width) {
  TilePlan plan;
  plan.layout = make_layout(params, x, out_h, out_w, tile_width);
  const InputLayout& l = plan.layout;
  const int64_t kh = params.kernel_h, kw = params.kernel_w;
  std::vector<int32_t> tap_offset(static_cast<size_t>(x.c * kh * kw));
  for (int64_t c = 0; c < x.c; ++c) {
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t dy = i * params.dilation_h, dx = j * params.dilation_w;
        const int64_t plane = (dy % params.stride_h) * params.stride_w + dx % params.stride_w;
        const int64_t offset = c * l.channel_stride + plane * l.plane_stride + (dy / params.stride_h) * l.wq +
                               dx / params.stride_w;
        tap_offset[static_cast<size_t>((c * kh + i) * kw + j)] = static_cast<int32_t>(offset);
      }
    }
  }
  plan.offsets.reserve(program.taps.size());
  for (int32_t tap : program.taps) plan.offsets.push_back(tap_offset[static_cast<size_t>(tap)]);
  // Tiles either follow output rows (no waste when out_w is a multiple of the tile width) or run
  // across rows over the flat index f = oy * wq + ox (better for narrow outputs); take the fewer.
  const int64_t per_row = (out_w + tile_width - 1) / tile_width;
  const int64_t flat_count = ((out_h - 1) * l.wq + out_w + tile_width - 1) / tile_width;
  if (per_row * out_h <= flat_count) {
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t t = 0; t < per_row; ++t) plan.tile_starts.push_back(oy * l.wq + t * tile_width);
  } else {
    for (int64_t t = 0; t < flat_count; ++t) plan.tile_starts.push_back(t * tile_width);
  }
  return plan;
}

}  // namespace lbdeploy
