// QTernaryConv public API (qternary_conv.h): limits, weight checks, kernel choice, the run loop
// and the requantizing epilogue.
#include "qternary_conv.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "conv_common.h"
#include "requantize.h"

namespace lbdeploy {

class QTernaryConvImpl {
 public:
  ConvParams params;
  int64_t cout = 0;
  std::vector<uint8_t> packed;
  int64_t row_bytes = 0;
  bool reference = false;

  QTernaryConvImpl(const ConvParams& p, int64_t out_channels) : params(p), cout(out_channels) {
    params.validate();
    if (params.activation == Activation::kSigmoid) {
      throw KernelError("QTernaryConv activation must be none or relu; keep a sigmoid layer as float TernaryConv");
    }
    if (cout < 1 || cout % params.group) {
      throw KernelError("QTernaryConv needs a positive number of output channels divisible by group (" +
                        std::to_string(params.group) + "), got " + std::to_string(cout));
    }
    if (params.kernel_h * params.kernel_w > kQMaxKernelTaps) {
      throw KernelError("QTernaryConv kernels accept kH * kW <= " + std::to_string(kQMaxKernelTaps) + ", got " +
                        std::to_string(params.kernel_h) + "x" + std::to_string(params.kernel_w) +
                        "; export this layer as float TernaryConv");
    }
    reference = wanted_kernel() == "reference";
  }

  // Decoded int8 weights [cout][K] for cin_per_group input channels per group (cached).
  std::shared_ptr<const std::vector<int8_t>> weights_for(int64_t cin_per_group) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!weights_ || cin_per_group_ != cin_per_group) {
      weights_ = std::make_shared<const std::vector<int8_t>>(decode_packed(packed, cout, row_bytes, cin_per_group, params));
      cin_per_group_ = cin_per_group;
    }
    return weights_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<const std::vector<int8_t>> weights_;
  int64_t cin_per_group_ = 0;
};

namespace {

// Exact sums acc[oy][ox] = sum W * (x - zp) over the in-bounds taps of output channel o (padding
// is real 0), one add or subtract per non-zero weight.
void reference_sums(const ConvParams& p, const std::vector<int8_t>& weights, int64_t cout, const uint8_t* x,
                    const Shape4& xs, const Shape4& ys, int zp, int64_t n, int64_t o, int32_t* acc) {
  const int64_t cin_g = xs.c / p.group;
  const int64_t g = o / (cout / p.group);
  const int8_t* w = weights.data() + o * cin_g * p.kernel_h * p.kernel_w;
  for (int64_t oy = 0; oy < ys.h; ++oy) {
    for (int64_t ox = 0; ox < ys.w; ++ox) {
      int32_t sum = 0;
      for (int64_t c = 0; c < cin_g; ++c) {
        const uint8_t* plane = x + ((n * xs.c + g * cin_g + c) * xs.h) * xs.w;
        for (int64_t i = 0; i < p.kernel_h; ++i) {
          const int64_t iy = oy * p.stride_h + i * p.dilation_h - p.pad_top;
          if (iy < 0 || iy >= xs.h) continue;
          for (int64_t j = 0; j < p.kernel_w; ++j) {
            const int64_t ix = ox * p.stride_w + j * p.dilation_w - p.pad_left;
            if (ix < 0 || ix >= xs.w) continue;
            const int8_t weight = w[(c * p.kernel_h + i) * p.kernel_w + j];
            const int32_t value = static_cast<int32_t>(plane[iy * xs.w + ix]) - zp;
            if (weight > 0) sum += value;
            if (weight < 0) sum -= value;
          }
        }
      }
      acc[oy * ys.w + ox] = sum;
    }
  }
}

}  // namespace

QTernaryConv::QTernaryConv(std::unique_ptr<QTernaryConvImpl> impl) : impl_(std::move(impl)) {}
QTernaryConv::QTernaryConv(QTernaryConv&&) noexcept = default;
QTernaryConv& QTernaryConv::operator=(QTernaryConv&&) noexcept = default;
QTernaryConv::~QTernaryConv() = default;

QTernaryConv QTernaryConv::from_packed(const ConvParams& params, const uint8_t* data, int64_t cout,
                                       int64_t row_bytes) {
  auto impl = std::make_unique<QTernaryConvImpl>(params, cout);
  if (row_bytes < 1) throw KernelError("packed QTernaryConv weights need at least one byte per output channel");
  check_code_bytes(data, cout, row_bytes);
  impl->packed.assign(data, data + cout * row_bytes);
  impl->row_bytes = row_bytes;
  return QTernaryConv(std::move(impl));
}

int64_t QTernaryConv::out_channels() const { return impl_->cout; }

Shape4 QTernaryConv::output_shape(const Shape4& x) const {
  const ConvParams& p = impl_->params;
  const Shape4 y = conv_output_shape(p, x, impl_->cout, "QTernaryConv");
  const int64_t k = x.c / p.group * p.kernel_h * p.kernel_w;
  if (k > kQMaxK) {
    throw KernelError("QTernaryConv kernels accept K = C/group * kH * kW <= " + std::to_string(kQMaxK) +
                      " (exact sums), got " + std::to_string(k) + "; split the layer or keep it float");
  }
  return y;
}

void QTernaryConv::run(const uint8_t* x, const Shape4& xs, const Quantization& q, const float* scale,
                       const float* bias, uint8_t* y, const ParallelFor& parallel_for) const {
  QTernaryConvImpl& impl = *impl_;
  const ConvParams& p = impl.params;
  const Shape4 ys = output_shape(xs);
  const auto weights = impl.weights_for(xs.c / p.group);
  const Requantizer requantizer(q, scale, bias, ys.c, p.activation == Activation::kRelu);
  const int64_t plane = ys.h * ys.w;
  parallel_for(static_cast<size_t>(ys.n * ys.c), [&](size_t item) {
    const int64_t n = static_cast<int64_t>(item) / ys.c, o = static_cast<int64_t>(item) % ys.c;
    thread_local std::vector<int32_t> acc;
    acc.resize(static_cast<size_t>(plane));
    reference_sums(p, *weights, ys.c, x, xs, ys, q.x_zero_point, n, o, acc.data());
    requantizer.row(o, acc.data(), plane, y + (n * ys.c + o) * plane);
  });
}

}  // namespace lbdeploy
