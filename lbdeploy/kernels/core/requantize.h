// The requantizing epilogue of QTernaryConv (docs/ops/QTernaryConv.md): int32 sums to uint8.
//   v = m[o] * acc + b[o] (float32), v = max(v, 0) for relu, Y = saturate_uint8(rint(v) + y_zero_point)
// with round-half-to-even. Shared by every QTernaryConv path; plain loops the compiler vectorizes.
#pragma once

#include <cstdint>
#include <vector>

#include "qternary_conv.h"

namespace lbdeploy {

class Requantizer {
 public:
  // m[o] = scale[o] * x_scale / y_scale and b[o] = bias[o] / y_scale for cout channels.
  Requantizer(const Quantization& q, const float* scale, const float* bias, int64_t cout, bool relu);

  // out[i] = Y of acc[i] for output channel o, i < count.
  void row(int64_t o, const int32_t* acc, int64_t count, uint8_t* out) const;

 private:
  std::vector<float> m_, b_;
  float low_;       // relu: 0 (real 0); else the value below which Y saturates to 0 anyway
  float zero_point_;
};

}  // namespace lbdeploy
