// TernaryConv forward on the CPU: the runtime-independent core of lbdeploy's kernel libraries.
//
// Implements ai.lbdeploy::TernaryConv exactly as docs/ops/TernaryConv.md defines it (float32,
// NCHW, any kernel size / stride / pads / dilation / group, fused scale, bias and activation).
// Weights are only ever added or subtracted; the only multiply is the per-channel scale applied
// once to each finished sum.
//
// This header has no dependency on any runtime: a runtime wrapper (lbdeploy/kernels/ort/) owns
// the threads and hands them in as a ParallelFor. To add a runtime, wrap TernaryConv the same way.
//
// Kernel choice (read once per TernaryConv object): env LBDEPLOY_KERNEL =
//   "optimized" (default: the best vector code this CPU runs), "reference" (plain loops),
//   or a forced vector variant: "avx512", "avx2", "neon", "scalar".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lbdeploy {

// Invalid weights, shapes or options; the message says what to fix.
class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Activation { kNone, kRelu, kSigmoid };

// Parses "none" | "relu" | "sigmoid"; throws KernelError otherwise.
Activation parse_activation(const std::string& name);

// Convolution geometry and fused activation (ONNX Conv conventions).
struct ConvParams {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t group = 1;
  Activation activation = Activation::kNone;

  // Throws KernelError when a value is out of range (kernel/stride/dilation/group < 1, pads < 0).
  void validate() const;
};

// Runs body(i) for every i in [0, count), possibly on several threads; returns when all are done.
using ParallelFor = std::function<void(size_t count, const std::function<void(size_t)>& body)>;

struct Shape4 {
  int64_t n, c, h, w;
};

class TernaryConvImpl;

// One TernaryConv node: holds its weights and, once the input channel count is known, a
// pre-processed form of them. Safe to run from several threads at once.
class TernaryConv {
 public:
  // Packed uint8 weights [cout][row_bytes] (2-bit codes; code 3 is rejected here).
  static TernaryConv from_packed(const ConvParams& params, const uint8_t* data, int64_t cout, int64_t row_bytes);
  // Unpacked int8 weights [cout][cin_per_group][kernel_h][kernel_w] (values -1, 0, +1 only).
  static TernaryConv from_int8(const ConvParams& params, const int8_t* data, int64_t cout, int64_t cin_per_group);

  TernaryConv(TernaryConv&&) noexcept;
  TernaryConv& operator=(TernaryConv&&) noexcept;
  ~TernaryConv();

  int64_t out_channels() const;
  // Output shape for input shape x; throws KernelError if x does not fit these weights.
  Shape4 output_shape(const Shape4& x) const;
  // y[N, Cout, OH, OW] = act(scale * conv(x, W) + bias); scale and bias have out_channels() values.
  void run(const float* x, const Shape4& x_shape, const float* scale, const float* bias, float* y,
           const ParallelFor& parallel_for) const;

 private:
  explicit TernaryConv(std::unique_ptr<TernaryConvImpl> impl);
  std::unique_ptr<TernaryConvImpl> impl_;
};

}  // namespace lbdeploy
