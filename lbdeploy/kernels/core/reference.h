// The simple TernaryConv path (LBDEPLOY_KERNEL=reference): direct loops over the definition in
// docs/ops/TernaryConv.md, one add or subtract per non-zero weight. The optimized path is tested
// against it; it is also the fallback for inputs the optimized layout cannot address.
#pragma once

#include <cstdint>
#include <vector>

#include "ternary_conv.h"

namespace lbdeploy {

// Raw sums acc[n][o][oy][ox] for output channel o (the epilogue is applied by the caller).
// weights: int8 [cout][cin_per_group * kH * kW].
void reference_channel(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout, const float* x,
                       const Shape4& xs, int64_t out_h, int64_t out_w, int64_t n, int64_t o, float* acc);

}  // namespace lbdeploy
