// Pre-processing for the optimized TernaryConv path:
//   * PatternProgram: the weights regrouped, once per node, into steps (one block of output
//     channels over one chunk of input channels), each a set of tap lists sorted by joint ternary
//     pattern (the input of tile::TileImpl);
//   * InputLayout: how an input of a given shape is laid out in the zero-padded, stride-split
//     scratch buffer, so that every tap of every output tile reads contiguous floats;
//   * TilePlan: the program's taps turned into buffer offsets, and the output tiles, per shape.
#pragma once

#include <cstdint>
#include <vector>

#include "ternary_conv.h"
#include "tile_kernel.h"

namespace lbdeploy {

// Steps run group by group, chunk by chunk, and within a chunk block by block, so a tile's input
// for one chunk is reused by every block while it sits in L1.
struct PatternProgram {
  int64_t cout = 0, cin_per_group = 0, blocks_per_group = 0, block_count = 0, chunk_channels = 0;
  std::vector<int32_t> counts;        // [step][pattern][+/-] list lengths
  std::vector<int32_t> taps;          // tap ids (c_global * kH + i) * kW + j, in list order
  std::vector<size_t> step_start;     // first entry of each step in taps; size steps + 1
  std::vector<int32_t> step_block;    // global block index of each step
  std::vector<uint8_t> step_first;    // 1 where the step is its block's first chunk

  int64_t steps() const { return static_cast<int64_t>(step_block.size()); }
};

// weights: int8 [cout][cin_per_group * kH * kW], values in {-1, 0, +1}; chunk_channels: at most
// this many input channels per step (the chunks are made near-equal).
PatternProgram build_pattern_program(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout,
                                     int64_t cin_per_group, int64_t chunk_channels);

// Scratch layout of the (zero-padded) input. The buffer is a grid of "positions", each holding
// `lanes` floats: per batch item, per channel, sH*sW phase planes (plane (a, b) holds padded rows
// a, a+sH, ... and columns b, b+sW, ...) of hl rows x wq columns.
//   * lanes == 1 (flat layout): one plane row is one padded input row; a tile reads vectors of
//     consecutive columns (unaligned loads).
//   * lanes == vector width (lane layout): lane L holds the input of output rows
//     [L*bh, (L+1)*bh) (with their halo rows), so one vector = one position = one aligned cache
//     line and every tap of every tile loads whole lines. Used when the output has enough rows.
//   * column layout (small maps, stride 1 in height, `columns`): per channel, kW planes; plane j
//     holds padded rows of out_w floats, column ox of row r being padded input (r, ox * sW + j * dW).
//     Tap (i, j) of output position p = oy * out_w + ox is then plane j at p + i * dH * out_w, so
//     tiles run over p with no padding columns between output rows (kW copies of the input).
struct InputLayout {
  Shape4 input{};
  int64_t out_h = 0, out_w = 0;
  int64_t lanes = 1;
  bool columns = false;
  int64_t lane_rows = 0;  // bh: output rows per lane
  int64_t hl = 0, wq = 0;
  int64_t row_stride = 0, plane_stride = 0, channel_stride = 0, batch_stride = 0;  // in floats
  size_t buffer_floats = 0;  // including read slack past the last tile

  bool same_input(const Shape4& x) const {
    return x.n == input.n && x.c == input.c && x.h == input.h && x.w == input.w;
  }
};

// Copies channel c of batch item n of x into its place in buffer (padding stays zero); gather is
// the tile kernel's lane transpose.
void copy_input(const ConvParams& params, const InputLayout& layout, tile::GatherFn gather, const float* x, int64_t n,
                int64_t c, float* buffer);

// The output tiles of one input shape and the program's taps as buffer offsets. The lane layout
// uses the kernel's widest tile shape; the flat and column layouts (few output rows) the shape
// that wastes the fewest loads on padding.
struct TilePlan {
  InputLayout layout;
  int shape = 0;                     // index into kernel.shapes
  int rows = 0, width = 0;           // tile geometry: output rows, floats per row
  std::vector<int64_t> tile_starts;  // float offset of each tile's first position in a batch item
  int64_t row_stride = 0;            // float distance between the rows of a tile
  int64_t channel_floats = 0;        // floats one tile reads from one input channel (its cache footprint)
  std::vector<int32_t> offsets;      // program taps as float offsets into one batch item of the buffer
};

// Layout and tiles for input x (no offsets yet: the program depends on the tiles' footprint).
// flat_only: always the flat layout (for a path with neither a lane transpose nor a column copy).
TilePlan make_tile_plan(const ConvParams& params, const Shape4& x, int64_t out_h, int64_t out_w,
                        const tile::TileKernel& kernel, bool flat_only = false);

// Fills plan.offsets from the program's tap ids.
void set_tap_offsets(const ConvParams& params, const PatternProgram& program, TilePlan& plan);

// One parallel work item: neighbouring tiles of one tile row of one batch item, over a range of
// channel blocks.
struct WorkItem {
  int64_t n = 0;                        // batch item
  int64_t tile_row = 0;                 // row of tiles (lane layout; 0 for flat and column layouts)
  int64_t column = 0;                   // the item's first tile within its row
  int64_t first_tile = 0, tiles = 0;    // index of the first tile in plan.tile_starts; tile count
  int64_t block_begin = 0, block_end = 0;
};

// How a run's tiles and channel blocks are cut into work items. Items are up to kGroupTiles
// neighbouring tiles of one tile row (near-equal groups). A lane-layout map with fewer than
// kMinItems items takes smaller groups; then the channel blocks are split into near-equal ranges
// until there are kMinItems items (flat and column layouts: 2), so that two threads both get work
// (each range re-reads its tiles' input, so only as many as needed). An item's sums live in a
// buffer of block_count() blocks of kBlock channels x plan.rows rows x sums_row elements.
struct WorkSplit {
  static constexpr int64_t kGroupTiles = 4;
  static constexpr int64_t kMinItems = 4;

  int64_t tile_rows = 0, tiles_per_row = 0, groups_per_row = 0, block_ranges = 0, block_count = 0;
  int64_t items_per_batch = 0, items = 0;
  int64_t sums_row = 0;       // elements per row of an item's sums (its widest group of tiles)
  int64_t channel_size = 0;   // elements of one channel's sums
  int64_t block_size = 0;     // elements of one block's sums, one cache line (16 x 4 bytes) more

  // The split of `batch` items of `plan` with `block_count` channel blocks.
  static WorkSplit make(const TilePlan& plan, int64_t batch, int64_t block_count);
  // Work item number `index` (< items).
  WorkItem item(int64_t index) const;
};

// List order: how many program steps an item runs over each of its tiles before the next tile.
// Normally all (a tile's chunk input stays in L1 over the blocks), unless the tap lists outgrow
// 128 KiB: then an item goes chunk by chunk (the program's steps come in runs of blocks_per_group,
// one run per chunk) and tile by tile within a chunk, so each chunk's lists are read once per
// item rather than once per tile and the lists and the input need not share L2 (256 -> 128
// channels at 32x32, density 0.5: 2.5 -> 1.4 ms). With small lists the tile-major order is ~3%
// faster (64x64, density 0.1).
int64_t steps_per_pass(const TilePlan& plan, const PatternProgram& program);

}  // namespace lbdeploy
