// QTernaryConv forward on the CPU: ai.lbdeploy::QTernaryConv (docs/ops/QTernaryConv.md), the
// quantized TernaryConv, in the runtime-independent core next to TernaryConv.
//
//   acc = sum W * (Xpad - x_zero_point)   exact, in integers (Xpad padded with x_zero_point)
//   m[o] = fl32(fl32(scale[o] * x_scale) / y_scale),  b[o] = fl32(bias[o] / y_scale)
//   v   = fl32(m[o] * acc + b[o]) (one rounding: fused multiply-add)
//   v   = max(v, 0) for relu;  Y = saturate_uint8(round_half_to_even(v) + y_zero_point)
//
// Only integer additions and subtractions touch the weights: the optimized path (qtile_kernel.h)
// adds 16-bit lanes over the same pattern program as the float kernel (plan.h) and widens each
// step's sums to 32 bits before 128 taps can overflow 16 bits; the only multiply is m[o] in the
// requantization. Limits (kernels reject larger): K = C/group * kH * kW <= kQMaxK and
// kH * kW <= kQMaxKernelTaps. Kernel choice: env LBDEPLOY_KERNEL as for TernaryConv (ternary_conv.h).
#pragma once

#include <cstdint>
#include <memory>

#include "ternary_conv.h"

namespace lbdeploy {

// |acc| <= kQMaxK * 255 < 2^24: exact in int32 and in the float32 of the requantization.
constexpr int64_t kQMaxK = 65536;
// One input channel's taps must fit in one step of at most 128 taps of 255 (int16 lanes).
constexpr int64_t kQMaxKernelTaps = 128;

// The scalar quantization inputs of one run.
struct Quantization {
  float x_scale = 1.0f;
  uint8_t x_zero_point = 0;
  float y_scale = 1.0f;
  uint8_t y_zero_point = 0;
};

class QTernaryConvImpl;

// One QTernaryConv node; safe to run from several threads at once.
class QTernaryConv {
 public:
  // Packed uint8 weights [cout][row_bytes] (TernaryConv's 2-bit layout; code 3 is rejected here);
  // channels_last: X and Y are NHWC (shapes are still passed as Shape4 {n, c, h, w}).
  static QTernaryConv from_packed(const ConvParams& params, const uint8_t* data, int64_t cout, int64_t row_bytes,
                                  bool channels_last = false);

  QTernaryConv(QTernaryConv&&) noexcept;
  QTernaryConv& operator=(QTernaryConv&&) noexcept;
  ~QTernaryConv();

  int64_t out_channels() const;
  // Output shape for input shape x; throws KernelError if x does not fit these weights or limits.
  Shape4 output_shape(const Shape4& x) const;
  // y[N, Cout, OH, OW] (uint8; NHWC memory order when channels_last) from x (uint8, likewise);
  // scale and bias have out_channels() values. Throws KernelError for degenerate scales.
  void run(const uint8_t* x, const Shape4& x_shape, const Quantization& q, const float* scale, const float* bias,
           uint8_t* y, const ParallelFor& parallel_for) const;

 private:
  explicit QTernaryConv(std::unique_ptr<QTernaryConvImpl> impl);
  std::unique_ptr<QTernaryConvImpl> impl_;
};

}  // namespace lbdeploy
