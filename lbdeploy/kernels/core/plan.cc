// Weight regrouping by joint ternary pattern, the scratch input layout and the tile plan.
// See plan.h for what each piece is; tile_kernel.h for how the tile kernel consumes them.
#include "plan.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "patterns.h"

namespace lbdeploy {

PatternProgram build_pattern_program(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout,
                                     int64_t cin_per_group, int64_t chunk_channels) {
  using tile::kBlock;
  using tile::kPatterns;
  const int64_t taps_per_channel = params.kernel_h * params.kernel_w;
  const int64_t k = cin_per_group * taps_per_channel;
  const int64_t cout_g = cout / params.group;
  PatternProgram program;
  program.cout = cout;
  program.cin_per_group = cin_per_group;
  program.blocks_per_group = (cout_g + kBlock - 1) / kBlock;
  program.block_count = params.group * program.blocks_per_group;
  // Near-equal chunks of at most chunk_channels (a short last chunk would mean short tap lists).
  const int64_t limit = std::max<int64_t>(1, chunk_channels);
  const int64_t chunks = (cin_per_group + limit - 1) / limit;
  program.chunk_channels = (cin_per_group + chunks - 1) / chunks;
  program.step_start.push_back(0);
  std::vector<std::vector<int32_t>> lists(2 * kPatterns);
  for (int64_t g = 0; g < params.group; ++g) {
    const int64_t tap_base = g * cin_per_group * taps_per_channel;
    for (int64_t c0 = 0; c0 < cin_per_group; c0 += program.chunk_channels) {
      const int64_t t_begin = c0 * taps_per_channel;
      const int64_t t_end = std::min(cin_per_group, c0 + program.chunk_channels) * taps_per_channel;
      for (int64_t b = 0; b < program.blocks_per_group; ++b) {
        for (auto& list : lists) list.clear();
        const int64_t first = g * cout_g + b * kBlock;
        const int64_t valid = std::min<int64_t>(kBlock, cout_g - b * kBlock);
        for (int64_t t = t_begin; t < t_end; ++t) {
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
        program.step_start.push_back(program.taps.size());
        program.step_block.push_back(static_cast<int32_t>(g * program.blocks_per_group + b));
        program.step_first.push_back(c0 == 0 ? 1 : 0);
      }
    }
  }
  return program;
}

namespace {

InputLayout make_layout(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w, int tile_rows,
                        int tile_width, int lanes) {
  InputLayout l;
  l.input = x;
  l.out_h = out_h;
  l.out_w = out_w;
  l.lanes = lanes;
  const int64_t hp = x.h + params.pad_top + params.pad_bottom;
  const int64_t wp = x.w + params.pad_left + params.pad_right;
  if (lanes == 1) {
    l.lane_rows = out_h;
    l.hl = (hp + params.stride_h - 1) / params.stride_h;
    l.wq = (wp + params.stride_w - 1) / params.stride_w;
  } else {
    // Only what tiles read: whole tiles of rows and columns plus the kernel's reach.
    const int64_t columns = tile_width / lanes;
    l.lane_rows = (out_h + lanes - 1) / lanes;
    l.hl = (l.lane_rows + tile_rows - 1) / tile_rows * tile_rows + (params.kernel_h - 1) * params.dilation_h / params.stride_h;
    l.wq = (out_w + columns - 1) / columns * columns + (params.kernel_w - 1) * params.dilation_w / params.stride_w;
  }
  l.row_stride = l.wq * lanes;
  l.plane_stride = l.hl * l.row_stride;
  l.channel_stride = params.stride_h * params.stride_w * l.plane_stride;
  l.batch_stride = x.c * l.channel_stride;
  if (l.batch_stride > std::numeric_limits<int32_t>::max() / 2) {
    throw KernelError("TernaryConv input is too large for the optimized kernel (more than 2^30 padded floats per "
                      "batch item); set LBDEPLOY_KERNEL=reference");
  }
  // Flat layout: the last tile may read up to tile_rows rows and one tile width past the end.
  l.buffer_floats = static_cast<size_t>(x.n * l.batch_stride + (tile_rows + 1) * (l.row_stride + tile_width));
  return l;
}

}  // namespace

void copy_input(const ConvParams& params, const InputLayout& layout, tile::GatherFn gather, const float* x, int64_t n,
                int64_t c, float* buffer) {
  const Shape4& s = layout.input;
  const int64_t sh = params.stride_h, sw = params.stride_w;
  const float* src = x + ((n * s.c + c) * s.h) * s.w;
  float* dst = buffer + n * layout.batch_stride + c * layout.channel_stride;
  // Lane L's plane row rr of phase a is padded input row (L * lane_rows + rr) * sH + a. With
  // stride 1 the lanes of a row are one transpose (gather); otherwise columns go in chunks of 16
  // positions so each chunk's lanes are filled while it sits in L1.
  constexpr int64_t kChunk = 16;
  std::vector<const float*> lane_rows(static_cast<size_t>(layout.lanes));
  for (int64_t a = 0; a < sh; ++a) {
    for (int64_t rr = 0; rr < layout.hl; ++rr) {
      bool any = false;
      for (int64_t lane = 0; lane < layout.lanes; ++lane) {
        const int64_t y = (lane * layout.lane_rows + rr) * sh + a - params.pad_top;
        const bool used = lane * layout.lane_rows < layout.out_h && y >= 0 && y < s.h;
        lane_rows[static_cast<size_t>(lane)] = used ? src + y * s.w : nullptr;
        any = any || used;
      }
      if (!any) continue;
      float* row = dst + a * sw * layout.plane_stride + rr * layout.row_stride;
      if (sw == 1 && layout.lanes == 1) {
        const int64_t count = std::max<int64_t>(0, std::min(s.w, layout.wq - params.pad_left));
        std::memcpy(row + params.pad_left, lane_rows[0], static_cast<size_t>(count) * sizeof(float));
        continue;
      }
      if (sw == 1) {
        const int64_t count = std::max<int64_t>(0, std::min(s.w, layout.wq - params.pad_left));
        gather(lane_rows.data(), count, row + params.pad_left * layout.lanes);
        continue;
      }
      for (int64_t m0 = 0; m0 < params.pad_left + s.w; m0 += kChunk) {
        const int64_t m_end = std::min(m0 + kChunk, params.pad_left + s.w);
        for (int64_t lane = 0; lane < layout.lanes; ++lane) {
          const float* src_row = lane_rows[static_cast<size_t>(lane)];
          if (src_row == nullptr) continue;
          for (int64_t m = std::max(m0, params.pad_left); m < m_end && m / sw < layout.wq; ++m) {
            row[(m % sw) * layout.plane_stride + (m / sw) * layout.lanes + lane] = src_row[m - params.pad_left];
          }
        }
      }
    }
  }
}

TilePlan make_tile_plan(const ConvParams& params, const PatternProgram& program, const Shape4& x, int64_t out_h,
                        int64_t out_w, int tile_rows, int tile_width, int lanes) {
  TilePlan plan;
  // The lane layout needs enough output rows to fill the lanes without much halo overhead.
  const int used_lanes = out_h >= 2 * lanes ? lanes : 1;
  plan.layout = make_layout(params, x, out_h, out_w, tile_rows, tile_width, used_lanes);
  const InputLayout& l = plan.layout;
  const int64_t kh = params.kernel_h, kw = params.kernel_w;
  std::vector<int32_t> tap_offset(static_cast<size_t>(x.c * kh * kw));
  for (int64_t c = 0; c < x.c; ++c) {
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t dy = i * params.dilation_h, dx = j * params.dilation_w;
        const int64_t plane = (dy % params.stride_h) * params.stride_w + dx % params.stride_w;
        const int64_t offset = c * l.channel_stride + plane * l.plane_stride + (dy / params.stride_h) * l.row_stride +
                               (dx / params.stride_w) * l.lanes;
        tap_offset[static_cast<size_t>((c * kh + i) * kw + j)] = static_cast<int32_t>(offset);
      }
    }
  }
  plan.offsets.reserve(program.taps.size());
  for (int32_t tap : program.taps) plan.offsets.push_back(tap_offset[static_cast<size_t>(tap)]);
  plan.row_stride = l.row_stride;
  if (l.lanes > 1) {
    const int64_t columns = tile_width / l.lanes;
    for (int64_t yl = 0; yl < l.lane_rows; yl += tile_rows)
      for (int64_t ox = 0; ox < out_w; ox += columns) plan.tile_starts.push_back(yl * l.row_stride + ox * l.lanes);
    return plan;
  }
  // Flat layout: tiles either cover tile_rows output rows (no waste when out_w is a multiple of
  // the tile width) or run across rows over the flat index f = oy * wq + ox (better for narrow
  // outputs, where each tile row continues the previous one); take whichever needs fewer tiles.
  const int64_t per_row = (out_w + tile_width - 1) / tile_width;
  const int64_t row_tiles = per_row * ((out_h + tile_rows - 1) / tile_rows);
  const int64_t flat_tile = static_cast<int64_t>(tile_rows) * tile_width;
  const int64_t flat_tiles = ((out_h - 1) * l.wq + out_w + flat_tile - 1) / flat_tile;
  if (row_tiles <= flat_tiles) {
    for (int64_t oy = 0; oy < out_h; oy += tile_rows)
      for (int64_t t = 0; t < per_row; ++t) plan.tile_starts.push_back(oy * l.wq + t * tile_width);
  } else {
    plan.row_stride = tile_width;
    for (int64_t t = 0; t < flat_tiles; ++t) plan.tile_starts.push_back(t * flat_tile);
  }
  return plan;
}

}  // namespace lbdeploy
