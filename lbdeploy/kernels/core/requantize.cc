// QTernaryConv requantization (see requantize.h).
#include "requantize.h"

#include <algorithm>

namespace lbdeploy {

Requantizer::Requantizer(const Quantization& q, const float* scale, const float* bias, int64_t cout, bool relu)
    : m_(static_cast<size_t>(cout)), b_(static_cast<size_t>(cout)), zero_point_(q.y_zero_point) {
  if (!(q.x_scale > 0.0f) || !(q.y_scale > 0.0f)) {
    throw KernelError("QTernaryConv x_scale and y_scale must be positive, got " + std::to_string(q.x_scale) +
                      " and " + std::to_string(q.y_scale));
  }
  for (int64_t o = 0; o < cout; ++o) {
    m_[static_cast<size_t>(o)] = scale[o] * q.x_scale / q.y_scale;
    b_[static_cast<size_t>(o)] = bias[o] / q.y_scale;
  }
  // Below -y_zero_point - 1 every value saturates to 0: clamping there changes no output and keeps
  // |v| small enough for the rounding trick below.
  low_ = relu ? 0.0f : -zero_point_ - 1.0f;
}

void Requantizer::row(int64_t o, const int32_t* acc, int64_t count, uint8_t* out) const {
  // Adding and subtracting 1.5 * 2^23 rounds a float32 of magnitude < 2^22 to the nearest
  // integer, ties to even (the default rounding mode), in plain arithmetic that vectorizes.
  constexpr float kRound = 12582912.0f;
  const float m = m_[static_cast<size_t>(o)], b = b_[static_cast<size_t>(o)];
  const float low = low_, high = 256.0f - zero_point_, zp = zero_point_;
  for (int64_t i = 0; i < count; ++i) {
    float v = m * static_cast<float>(acc[i]) + b;
    v = std::min(std::max(v, low), high);
    const float r = (v + kRound) - kRound + zp;
    out[i] = static_cast<uint8_t>(std::min(std::max(r, 0.0f), 255.0f));
  }
}

}  // namespace lbdeploy
