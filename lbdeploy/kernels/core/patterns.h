// The joint ternary patterns of a block of output channels, shared by the weight planner
// (plan.cc) and the tile kernels (tile_kernel.h). A pattern is kBlock digits in {-1, 0, +1},
// not all zero, whose first non-zero digit is +1; its negation is the same pattern with sign -1.
// Changing kBlock changes the pattern count (3^kBlock - 1) / 2 and the tile code size.
#pragma once

#include <cstdint>

namespace lbdeploy {
namespace tile {

constexpr int kBlock = 4;
constexpr int kPatterns = 40;  // (3^4 - 1) / 2

struct PatternTable {
  int8_t digit[kPatterns][kBlock];
  // index[code] = pattern index, sign[code] = +1 / -1 / 0 for code = sum_o (digit_o + 1) * 3^o.
  int8_t index[81];
  int8_t sign[81];
};

constexpr PatternTable make_pattern_table() {
  PatternTable table{};
  int count = 0;
  for (int code = 0; code < 81; ++code) {
    int digits[kBlock] = {};
    int rest = code;
    int first = 0;
    for (int o = 0; o < kBlock; ++o) {
      digits[o] = rest % 3 - 1;
      rest /= 3;
      if (first == 0) first = digits[o];
    }
    table.index[code] = -1;
    table.sign[code] = 0;
    if (first == 1) {
      for (int o = 0; o < kBlock; ++o) table.digit[count][o] = static_cast<int8_t>(digits[o]);
      table.index[code] = static_cast<int8_t>(count);
      table.sign[code] = 1;
      ++count;
    }
  }
  // The negation of pattern code c has code 80 - c.
  for (int code = 0; code < 81; ++code) {
    if (table.sign[80 - code] == 1) {
      table.index[code] = table.index[80 - code];
      table.sign[code] = -1;
    }
  }
  return table;
}

constexpr PatternTable kPatternTable = make_pattern_table();

}  // namespace tile
}  // namespace lbdeploy
