// Checks lbdeploy::WorkSplit (lbdeploy/kernels/core/plan.h), the cut of a run's tiles and channel
// blocks into parallel work items, on real tile plans of many shapes: every (batch item, tile,
// block) is covered exactly once, an item's tiles are neighbours in one tile row, groups are
// near-equal, the sums buffer holds every item, there are enough items for two threads, and the
// item counts the kernel docs quote (64x64 and 32x32 with AVX-512 tiles) hold.
// Built and run by tests/test_work_split.py:
//   g++ -std=c++17 -I lbdeploy/kernels/core work_split_check.cpp lbdeploy/kernels/core/plan.cc
// Prints "work split check passed" or each failure (exit code 1).
#include <cstdio>
#include <string>
#include <vector>

#include "plan.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    ++failures;
  }
}

// Tile geometry only (the planner reads lanes and shapes; no tile function runs here).
lbdeploy::tile::TileKernel geometry(int lanes, int rows, int width) {
  return {lanes, {{rows, width, nullptr}, {1, 4 * lanes, nullptr}, {1, lanes, nullptr}}, nullptr, nullptr};
}

lbdeploy::WorkSplit check_shape(const lbdeploy::tile::TileKernel& kernel, int64_t batch, int64_t size, int64_t stride,
                                int64_t block_count) {
  lbdeploy::ConvParams params;
  params.kernel_h = params.kernel_w = 3;
  params.pad_top = params.pad_left = params.pad_bottom = params.pad_right = 1;
  params.stride_h = params.stride_w = stride;
  const int64_t out = (size + 2 - 3) / stride + 1;
  const lbdeploy::Shape4 x{batch, 8, size, size};
  const lbdeploy::TilePlan plan = lbdeploy::make_tile_plan(params, x, out, out, kernel);
  const auto split = lbdeploy::WorkSplit::make(plan, batch, block_count);
  const std::string name = std::to_string(kernel.lanes) + " lanes, " + std::to_string(batch) + " x " +
                           std::to_string(size) + "x" + std::to_string(size) + " stride " + std::to_string(stride) +
                           ", " + std::to_string(block_count) + " blocks: ";
  const int64_t tiles = static_cast<int64_t>(plan.tile_starts.size());
  std::vector<int> covered(static_cast<size_t>(batch * tiles * block_count), 0);
  int64_t fewest = tiles, most = 0;
  for (int64_t index = 0; index < split.items; ++index) {
    const lbdeploy::WorkItem item = split.item(index);
    check(item.n >= 0 && item.n < batch, name + "batch item in range");
    check(item.tiles >= 1 && item.block_begin < item.block_end && item.block_end <= block_count, name + "non-empty item");
    check(item.first_tile / split.tiles_per_row == (item.first_tile + item.tiles - 1) / split.tiles_per_row,
          name + "an item's tiles lie in one tile row");
    check(item.tiles * plan.width <= split.sums_row, name + "the sums buffer row holds the item");
    fewest = std::min(fewest, item.tiles);
    most = std::max(most, item.tiles);
    for (int64_t t = item.first_tile; t < item.first_tile + item.tiles; ++t)
      for (int64_t b = item.block_begin; b < item.block_end; ++b) ++covered[static_cast<size_t>((item.n * tiles + t) * block_count + b)];
  }
  bool once = true;
  for (int count : covered) once = once && count == 1;
  check(once, name + "every (batch item, tile, block) is in exactly one item");
  check(most - fewest <= 1, name + "near-equal groups of tiles");
  check(split.block_size >= lbdeploy::tile::kBlock * split.channel_size + 16, name + "blocks one cache line apart");
  const int64_t wanted = plan.layout.lanes > 1 ? lbdeploy::WorkSplit::kMinItems : 2;
  // Blocks are split only as far as needed (and possible) to reach `wanted` items.
  const int64_t tile_items = batch * split.tile_rows * split.groups_per_row;
  check(split.items >= std::min(wanted, tile_items * block_count), name + "enough items for the threads");
  check(split.block_ranges == 1 || (split.block_ranges - 1) * tile_items < wanted, name + "no needless block split");
  return split;
}

}  // namespace

int main() {
  const auto avx512 = geometry(16, 2, 48);
  const auto avx2 = geometry(8, 1, 24);
  const auto neon = geometry(4, 2, 8);
  for (const auto& kernel : {avx512, avx2, neon}) {
    for (int64_t size : {4, 7, 8, 16, 31, 32, 64, 75}) {
      for (int64_t stride : {1, 2}) {
        for (int64_t blocks : {1, 3, 32}) {
          for (int64_t batch : {1, 3}) check_shape(kernel, batch, size, stride, blocks);
        }
      }
    }
  }
  // The figures docs/kernels.md quotes for 128 output channels (32 blocks) on AVX-512.
  const auto at64 = check_shape(avx512, 1, 64, 1, 32);
  check(at64.items == 12 && at64.block_ranges == 1, "64x64: 12 items over all blocks");
  const auto at32 = check_shape(avx512, 1, 32, 1, 32);
  check(at32.items == 4 && at32.block_ranges == 1, "32x32: 4 items of 2-3 tiles");
  const auto at4 = check_shape(avx512, 1, 4, 1, 32);
  check(at4.items == 2 && at4.block_ranges == 2, "4x4: one tile, 2 items of 16 blocks");
  if (failures) return 1;
  std::printf("work split check passed\n");
  return 0;
}
