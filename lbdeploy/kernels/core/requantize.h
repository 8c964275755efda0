// The requantization constants of one QTernaryConv run (docs/ops/QTernaryConv.md, "Requantization"):
//   m[o] = fl32(fl32(scale[o] * x_scale) / y_scale),  b[o] = fl32(bias[o] / y_scale)
// with the clamp bounds of the epilogue (qepilogue_kernel.h, which applies them per tile row).
// Degenerate inputs are refused: x_scale and y_scale must be finite and positive, every scale,
// bias, m and b finite.
#pragma once

#include <cstdint>
#include <vector>

#include "qepilogue_kernel.h"
#include "qternary_conv.h"

namespace lbdeploy {

class Requantizer {
 public:
  // Throws KernelError for degenerate scales (see above).
  Requantizer(const Quantization& q, const float* scale, const float* bias, int64_t cout, bool relu);

  // The constants of output channels o, o + 1, ...
  const tile::QEpilogue* channel(int64_t o) const { return constants_.data() + o; }

 private:
  std::vector<tile::QEpilogue> constants_;
};

}  // namespace lbdeploy
