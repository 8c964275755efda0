// Weight regrouping by joint ternary pattern, the scratch input layout and the tile plan.
// See plan.h for what each piece is; tile_kernel.h for how the tile kernel consumes them.
#include "plan.h"

#include <algorithm>
#include <cstdlib>
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

namespace {

// Column layout: plane j of the channel gets, in padded row r, x[r - pad_top][ox * sW + j * dW - pad_left]
// at column ox < out_w; entries outside the input are never written (they stay zero).
void copy_columns(const ConvParams& params, const InputLayout& layout, const float* src, float* dst) {
  const Shape4& s = layout.input;
  const int64_t sw = params.stride_w;
  for (int64_t j = 0; j < params.kernel_w; ++j) {
    // Output columns [ox_begin, ox_end) read ix = ox * sW + dx inside [0, W).
    const int64_t dx = j * params.dilation_w - params.pad_left;
    const int64_t ox_begin = dx >= 0 ? 0 : (-dx + sw - 1) / sw;
    const int64_t ox_end = std::min(layout.out_w, s.w - dx <= 0 ? 0 : (s.w - dx - 1) / sw + 1);
    if (ox_end <= ox_begin) continue;
    float* plane = dst + j * layout.plane_stride + params.pad_top * layout.row_stride;
    if (sw == 1 && layout.row_stride == s.w) {
      // Rows as long as the input's: one shifted copy of the whole image, then zero the columns
      // that picked up a neighbouring row's values.
      const int64_t shift = std::abs(dx);
      if (shift >= s.w) continue;
      const float* from = dx >= 0 ? src + dx : src;
      float* to = dx >= 0 ? plane : plane + shift;
      std::memcpy(to, from, static_cast<size_t>(s.h * s.w - shift) * sizeof(float));
      for (int64_t iy = 0; iy < s.h; ++iy) {
        float* row = plane + iy * layout.row_stride;
        for (int64_t ox = 0; ox < ox_begin; ++ox) row[ox] = 0.0f;
        for (int64_t ox = ox_end; ox < layout.out_w; ++ox) row[ox] = 0.0f;
      }
      continue;
    }
    for (int64_t iy = 0; iy < s.h; ++iy) {
      const float* in = src + iy * s.w + dx;
      float* out = plane + iy * layout.row_stride;
      if (sw == 1) {
        std::memcpy(out + ox_begin, in + ox_begin, static_cast<size_t>(ox_end - ox_begin) * sizeof(float));
      } else {
        for (int64_t ox = ox_begin; ox < ox_end; ++ox) out[ox] = in[ox * sw];
      }
    }
  }
}

// The column layout of x (see plan.h); tile_floats: the most a tile reads past its start.
InputLayout make_column_layout(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w, int lanes,
                               int64_t tile_floats) {
  InputLayout l;
  l.input = x;
  l.out_h = out_h;
  l.out_w = out_w;
  l.columns = true;
  l.lane_rows = out_h;
  l.hl = x.h + params.pad_top + params.pad_bottom;
  l.wq = out_w;  // the epilogue maps position f to (f / wq, f % wq)
  l.row_stride = out_w;
  l.plane_stride = (l.hl * out_w + lanes - 1) / lanes * lanes;
  l.channel_stride = params.kernel_w * l.plane_stride;
  l.batch_stride = x.c * l.channel_stride;
  if (l.batch_stride > std::numeric_limits<int32_t>::max() / 2) {
    throw KernelError("TernaryConv input is too large for the optimized kernel (more than 2^30 padded floats per "
                      "batch item); set LBDEPLOY_KERNEL=reference");
  }
  // The last tile may read up to one tile past the last position of the last plane.
  l.buffer_floats = static_cast<size_t>(x.n * l.batch_stride + tile_floats);
  return l;
}

}  // namespace

void copy_input(const ConvParams& params, const InputLayout& layout, tile::GatherFn gather, const float* x, int64_t n,
                int64_t c, float* buffer) {
  const Shape4& s = layout.input;
  const int64_t sh = params.stride_h, sw = params.stride_w;
  const float* src = x + ((n * s.c + c) * s.h) * s.w;
  float* dst = buffer + n * layout.batch_stride + c * layout.channel_stride;
  if (layout.columns) {
    copy_columns(params, layout, src, dst);
    return;
  }
  if (layout.lanes == 1 && sh == 1 && sw == 1) {
    const int64_t count = std::max<int64_t>(0, std::min(s.w, layout.wq - params.pad_left));
    for (int64_t iy = 0; iy < s.h && iy + params.pad_top < layout.hl; ++iy) {
      std::memcpy(dst + (iy + params.pad_top) * layout.row_stride + params.pad_left, src + iy * s.w,
                  static_cast<size_t>(count) * sizeof(float));
    }
    return;
  }
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

namespace {

// Flat layout: tiles of `rows` x `width` either cover `rows` output rows (no waste when out_w is a
// multiple of the width) or run across rows over the flat index f = oy * wq + ox (better for
// narrow outputs, where each tile row continues the previous one); whichever needs fewer tiles.
void flat_tiles(const InputLayout& l, int rows, int width, TilePlan& plan) {
  plan.rows = rows;
  plan.width = width;
  plan.tile_starts.clear();
  const int64_t per_row = (l.out_w + width - 1) / width;
  const int64_t row_tiles = per_row * ((l.out_h + rows - 1) / rows);
  const int64_t flat_tile = static_cast<int64_t>(rows) * width;
  const int64_t flat_count = ((l.out_h - 1) * l.wq + l.out_w + flat_tile - 1) / flat_tile;
  if (row_tiles <= flat_count) {
    plan.row_stride = l.row_stride;
    for (int64_t oy = 0; oy < l.out_h; oy += rows)
      for (int64_t t = 0; t < per_row; ++t) plan.tile_starts.push_back(oy * l.wq + t * width);
  } else {
    plan.row_stride = width;
    for (int64_t t = 0; t < flat_count; ++t) plan.tile_starts.push_back(t * flat_tile);
  }
}

}  // namespace

TilePlan make_tile_plan(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w,
                        const tile::TileKernel& kernel, bool flat_only) {
  TilePlan plan;
  const tile::TileShape& widest = kernel.shapes[0];
  // The lane layout needs enough output rows to fill the lanes without much halo overhead.
  const int used_lanes = !flat_only && out_h >= 2 * kernel.lanes ? kernel.lanes : 1;
  // The layout's read slack covers the widest tiles, which also cover the narrower ones.
  plan.layout = make_layout(params, x, out_h, out_w, widest.rows, widest.width, used_lanes);
  const InputLayout& l = plan.layout;
  const int64_t reach_rows = (params.kernel_h - 1) * params.dilation_h / params.stride_h;
  const int64_t reach_cols = (params.kernel_w - 1) * params.dilation_w / params.stride_w;
  const int64_t planes = params.stride_h * params.stride_w;
  if (l.lanes > 1) {
    plan.rows = widest.rows;
    plan.width = widest.width;
    plan.row_stride = l.row_stride;
    const int64_t columns = widest.width / l.lanes;
    for (int64_t yl = 0; yl < l.lane_rows; yl += widest.rows)
      for (int64_t ox = 0; ox < out_w; ox += columns) plan.tile_starts.push_back(yl * l.row_stride + ox * l.lanes);
    plan.channel_floats = planes * (widest.rows + reach_rows) * (widest.width + reach_cols * l.lanes);
    return plan;
  }
  // Flat layout: the tile shape that loads the fewest vectors, each tile also paying kTapCost
  // vectors' worth per tap (its offset load and loop, and merging split sums). The column layout
  // (stride 1 in height) instead when its best shape costs no more: it copies the input kW times,
  // but its tiles hold no padding columns, and its loads are aligned when out_w is a multiple of
  // the vector width (16x16 on AVX-512: 0.72x -> 0.54x of dense at density 0.5).
  constexpr double kTapCost = 0.25;
  const auto cost = [&](size_t tiles, const tile::TileShape& shape) {
    return static_cast<double>(tiles) * (shape.rows * shape.width / kernel.lanes + kTapCost);
  };
  const int64_t positions = out_h * out_w;
  double flat_cost = 0.0, column_cost = 0.0;
  int column_shape = 0;
  for (int k = 0; k < tile::kTileShapes; ++k) {
    const tile::TileShape& shape = kernel.shapes[k];
    TilePlan candidate;
    flat_tiles(l, shape.rows, shape.width, candidate);
    if (k == 0 || cost(candidate.tile_starts.size(), shape) < flat_cost) {
      flat_cost = cost(candidate.tile_starts.size(), shape);
      plan.shape = k;
      plan.rows = candidate.rows;
      plan.width = candidate.width;
      plan.row_stride = candidate.row_stride;
      plan.tile_starts = std::move(candidate.tile_starts);
    }
    const int64_t floats = static_cast<int64_t>(shape.rows) * shape.width;
    const double c = cost(static_cast<size_t>((positions + floats - 1) / floats), shape);
    if (k == 0 || c < column_cost) {
      column_cost = c;
      column_shape = k;
    }
  }
  if (!flat_only && params.stride_h == 1 && column_cost <= flat_cost) {
    const tile::TileShape& shape = kernel.shapes[column_shape];
    const int64_t floats = static_cast<int64_t>(shape.rows) * shape.width;
    plan.layout = make_column_layout(params, x, out_h, out_w, kernel.lanes, floats);
    plan.shape = column_shape;
    plan.rows = shape.rows;
    plan.width = shape.width;
    plan.row_stride = shape.width;
    plan.tile_starts.clear();
    for (int64_t t = 0; t * floats < positions; ++t) plan.tile_starts.push_back(t * floats);
    plan.channel_floats = params.kernel_w * (floats + (params.kernel_h - 1) * params.dilation_h * out_w);
    return plan;
  }
  plan.channel_floats =
      planes * ((plan.rows - 1) * plan.row_stride + plan.width + reach_rows * l.row_stride + reach_cols);
  return plan;
}

void set_tap_offsets(const ConvParams& params, const PatternProgram& program, TilePlan& plan) {
  const InputLayout& l = plan.layout;
  const int64_t kh = params.kernel_h, kw = params.kernel_w;
  std::vector<int32_t> tap_offset(static_cast<size_t>(l.input.c * kh * kw));
  for (int64_t c = 0; c < l.input.c; ++c) {
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t dy = i * params.dilation_h, dx = j * params.dilation_w;
        const int64_t plane = (dy % params.stride_h) * params.stride_w + dx % params.stride_w;
        const int64_t offset =
            l.columns ? c * l.channel_stride + j * l.plane_stride + dy * l.row_stride
                   : c * l.channel_stride + plane * l.plane_stride + (dy / params.stride_h) * l.row_stride +
                         (dx / params.stride_w) * l.lanes;
        tap_offset[static_cast<size_t>((c * kh + i) * kw + j)] = static_cast<int32_t>(offset);
      }
    }
  }
  plan.offsets.clear();
  plan.offsets.reserve(program.taps.size());
  for (int32_t tap : program.taps) plan.offsets.push_back(tap_offset[static_cast<size_t>(tap)]);
}

WorkSplit WorkSplit::make(const TilePlan& plan, int64_t batch, int64_t block_count) {
  WorkSplit s;
  const InputLayout& layout = plan.layout;
  const bool lanes = layout.lanes > 1;
  const int64_t tile_count = static_cast<int64_t>(plan.tile_starts.size());
  s.block_count = block_count;
  s.tile_rows = lanes ? (layout.lane_rows + plan.rows - 1) / plan.rows : 1;
  s.tiles_per_row = tile_count / s.tile_rows;
  s.groups_per_row = lanes ? std::min(s.tiles_per_row, std::max((s.tiles_per_row + kGroupTiles - 1) / kGroupTiles,
                                                                (kMinItems + s.tile_rows - 1) / s.tile_rows))
                           : (s.tiles_per_row + kGroupTiles - 1) / kGroupTiles;
  const int64_t tile_items = batch * s.tile_rows * s.groups_per_row;
  const int64_t min_items = lanes ? kMinItems : 2;
  s.block_ranges = std::min(block_count, (min_items + tile_items - 1) / tile_items);
  s.items_per_batch = s.tile_rows * s.groups_per_row * s.block_ranges;
  s.items = batch * s.items_per_batch;
  const int64_t group_tiles = (s.tiles_per_row + s.groups_per_row - 1) / s.groups_per_row;
  s.sums_row = group_tiles * plan.width;
  s.channel_size = plan.rows * s.sums_row;
  s.block_size = tile::kBlock * s.channel_size + 16;
  return s;
}

WorkItem WorkSplit::item(int64_t index) const {
  WorkItem w;
  w.n = index / items_per_batch;
  const int64_t in_batch = index % items_per_batch;
  const int64_t range = in_batch % block_ranges;
  const int64_t group = in_batch / block_ranges % groups_per_row;
  w.tile_row = in_batch / block_ranges / groups_per_row;
  w.block_begin = range * block_count / block_ranges;
  w.block_end = (range + 1) * block_count / block_ranges;
  w.column = group * tiles_per_row / groups_per_row;
  w.tiles = (group + 1) * tiles_per_row / groups_per_row - w.column;
  w.first_tile = w.tile_row * tiles_per_row + w.column;
  return w;
}

int64_t steps_per_pass(const TilePlan& plan, const PatternProgram& program) {
  constexpr size_t kListBytes = 128 * 1024;
  return plan.offsets.size() * sizeof(int32_t) > kListBytes ? program.blocks_per_group : program.steps();
}

}  // namespace lbdeploy
