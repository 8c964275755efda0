// QTernaryConv requantization constants (see requantize.h).
#include "requantize.h"

#include <cmath>
#include <string>

namespace lbdeploy {

Requantizer::Requantizer(const Quantization& q, const float* scale, const float* bias, int64_t cout, bool relu)
    : constants_(static_cast<size_t>(cout)) {
  if (!(std::isfinite(q.x_scale) && q.x_scale > 0.0f && std::isfinite(q.y_scale) && q.y_scale > 0.0f)) {
    throw KernelError("QTernaryConv x_scale and y_scale must be finite and positive, got " +
                      std::to_string(q.x_scale) + " and " + std::to_string(q.y_scale));
  }
  const float zero_point = q.y_zero_point;
  for (int64_t o = 0; o < cout; ++o) {
    // Two separate roundings, in this order (a product then a quotient: nothing to contract).
    const float scaled = scale[o] * q.x_scale;
    const float m = scaled / q.y_scale;
    const float b = bias[o] / q.y_scale;
    if (!std::isfinite(m) || !std::isfinite(b)) {
      throw KernelError("QTernaryConv scale and bias must be finite, and so must scale * x_scale / y_scale and "
                        "bias / y_scale in float32 (output channel " + std::to_string(o) + ")");
    }
    constants_[static_cast<size_t>(o)] = {m, b, relu ? 0.0f : -zero_point, 255.0f - zero_point, q.y_zero_point};
  }
}

}  // namespace lbdeploy
