// Shared by the ONNX Runtime wrappers of the lbdeploy ops (ternary_conv_op.cc, qternary_conv_op.cc):
// attribute readers, the conv geometry attributes of docs/ops/TernaryConv.md, ONNX Runtime's
// intra-op pool as a core ParallelFor, and the QTernaryConv op that RegisterCustomOps adds.
#pragma once

#include <functional>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include "ternary_conv.h"

namespace lbdeploy {
namespace ort {

inline std::vector<int64_t> ints_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name,
                                           std::vector<int64_t> fallback, bool required = false) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    if (required) throw lbdeploy::KernelError(std::string("TernaryConv attribute '") + name + "' is required");
    return fallback;
  }
  std::vector<int64_t> values(size);
  Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, values.data(), &size));
  return values;
}

inline int64_t int_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = fallback;
  OrtStatus* status = api.KernelInfoGetAttribute_int64(info, name, &value);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    return fallback;
  }
  return value;
}

inline std::string string_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, const std::string& fallback) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    return fallback;
  }
  std::string value(size, '\0');
  Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, name, value.data(), &size));
  value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  return value;
}

inline void expect_size(const std::vector<int64_t>& values, size_t size, const char* name) {
  if (values.size() != size) {
    throw lbdeploy::KernelError(std::string("TernaryConv attribute '") + name + "' must have " +
                                std::to_string(size) + " values, got " + std::to_string(values.size()));
  }
}

// The conv attributes of a node: kernel_shape (required), strides, pads, dilations, group, activation.
inline lbdeploy::ConvParams read_params(const OrtApi& api, const OrtKernelInfo* info) {
  const auto kernel = ints_attribute(api, info, "kernel_shape", {}, true);
  const auto strides = ints_attribute(api, info, "strides", {1, 1});
  const auto pads = ints_attribute(api, info, "pads", {0, 0, 0, 0});
  const auto dilations = ints_attribute(api, info, "dilations", {1, 1});
  expect_size(kernel, 2, "kernel_shape");
  expect_size(strides, 2, "strides");
  expect_size(pads, 4, "pads");
  expect_size(dilations, 2, "dilations");
  lbdeploy::ConvParams p;
  p.kernel_h = kernel[0];
  p.kernel_w = kernel[1];
  p.stride_h = strides[0];
  p.stride_w = strides[1];
  p.pad_top = pads[0];
  p.pad_left = pads[1];
  p.pad_bottom = pads[2];
  p.pad_right = pads[3];
  p.dilation_h = dilations[0];
  p.dilation_w = dilations[1];
  p.group = int_attribute(api, info, "group", 1);
  p.activation = lbdeploy::parse_activation(string_attribute(api, info, "activation", "none"));
  p.validate();
  return p;
}

// Adapts a std::function body to the C callback of KernelContext::ParallelFor.
struct ParallelForCall {
  const std::function<void(size_t)>* body;
  static void invoke(void* self, size_t index) { (*static_cast<ParallelForCall*>(self)->body)(index); }
};

// ONNX Runtime's intra-op thread pool of this kernel call, as the core's ParallelFor.
inline lbdeploy::ParallelFor ort_parallel_for(Ort::KernelContext& context) {
  return [&context](size_t count, const std::function<void(size_t)>& body) {
    ParallelForCall call{&body};
    context.ParallelFor(&ParallelForCall::invoke, count, 0, &call);
  };
}

// The ai.lbdeploy::QTernaryConv custom op (a static instance; defined in qternary_conv_op.cc).
const OrtCustomOp* qternary_conv_op();

}  // namespace ort
}  // namespace lbdeploy
