// ONNX Runtime custom-op library for ai.lbdeploy::TernaryConv (version 1), a thin wrapper over
// lbdeploy/kernels/core. Load it with SessionOptions.register_custom_ops_library(path).
// RegisterCustomOps also adds ai.lbdeploy::QTernaryConv (qternary_conv_op.cc) to the same domain.
//
// Inputs: X float32 [N,C,H,W]; W packed uint8 [Cout, ceil(K/4)] or int8 [Cout, C/group, kH, kW];
// scale, bias float32 [Cout]. Attributes as docs/ops/TernaryConv.md (plugin_version and
// plugin_namespace are accepted and ignored). When W is a constant initializer the weights are
// checked and pre-processed once per kernel instance; otherwise on every run. Threads come from
// ONNX Runtime's intra-op pool (KernelContext_ParallelFor), so intra_op_num_threads applies.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "op_common.h"
#include "ternary_conv.h"

namespace {

using lbdeploy::ort::ort_parallel_for;
using lbdeploy::ort::read_params;

constexpr const char* kDomain = "ai.lbdeploy";
constexpr const char* kOpType = "TernaryConv";

// Builds the core kernel from a W tensor (packed uint8 or int8).
lbdeploy::TernaryConv make_conv(const lbdeploy::ConvParams& params, const Ort::ConstValue& w) {
  const auto info = w.GetTensorTypeAndShapeInfo();
  const auto shape = info.GetShape();
  switch (info.GetElementType()) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      if (shape.size() != 2) throw lbdeploy::KernelError("packed uint8 TernaryConv W must be 2-D [Cout, ceil(K/4)]");
      return lbdeploy::TernaryConv::from_packed(params, w.GetTensorData<uint8_t>(), shape[0], shape[1]);
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      if (shape.size() != 4 || shape[2] != params.kernel_h || shape[3] != params.kernel_w) {
        throw lbdeploy::KernelError("int8 TernaryConv W must be [Cout, C/group, kH, kW] with kH, kW = kernel_shape");
      }
      return lbdeploy::TernaryConv::from_int8(params, w.GetTensorData<int8_t>(), shape[0], shape[1]);
    default:
      throw lbdeploy::KernelError("TernaryConv W must be uint8 (packed) or int8 (unpacked)");
  }
}

struct TernaryConvKernel {
  TernaryConvKernel(const OrtApi& api, const OrtKernelInfo* info) : api_(api), params_(read_params(api, info)) {
    int is_constant = 0;
    Ort::ConstValue w = Ort::ConstKernelInfo(info).GetTensorConstantInput(1, &is_constant);
    if (is_constant) constant_ = std::make_unique<lbdeploy::TernaryConv>(make_conv(params_, w));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      const auto x = context.GetInput(0);
      const auto x_shape = x.GetTensorTypeAndShapeInfo().GetShape();
      if (x_shape.size() != 4) throw lbdeploy::KernelError("TernaryConv X must be 4-D [N, C, H, W]");
      std::unique_ptr<lbdeploy::TernaryConv> per_run;
      if (!constant_) per_run = std::make_unique<lbdeploy::TernaryConv>(make_conv(params_, context.GetInput(1)));
      const lbdeploy::TernaryConv& conv = constant_ ? *constant_ : *per_run;
      const auto scale = context.GetInput(2);
      const auto bias = context.GetInput(3);
      for (const auto* v : {&scale, &bias}) {
        if (v->GetTensorTypeAndShapeInfo().GetElementCount() != static_cast<size_t>(conv.out_channels())) {
          throw lbdeploy::KernelError("TernaryConv scale and bias must have Cout = " +
                                      std::to_string(conv.out_channels()) + " values");
        }
      }
      const lbdeploy::Shape4 xs{x_shape[0], x_shape[1], x_shape[2], x_shape[3]};
      const lbdeploy::Shape4 ys = conv.output_shape(xs);
      auto y = context.GetOutput(0, {ys.n, ys.c, ys.h, ys.w});
      const lbdeploy::ParallelFor parallel_for = ort_parallel_for(context);
      conv.run(x.GetTensorData<float>(), xs, scale.GetTensorData<float>(), bias.GetTensorData<float>(),
               y.GetTensorMutableData<float>(), parallel_for);
      return nullptr;
    } catch (const lbdeploy::KernelError& e) {
      return api_.CreateStatus(ORT_INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
      return api_.CreateStatus(ORT_FAIL, e.what());
    }
  }

 private:
  const OrtApi& api_;
  lbdeploy::ConvParams params_;
  std::unique_ptr<lbdeploy::TernaryConv> constant_;
};

struct TernaryConvOp : Ort::CustomOpBase<TernaryConvOp, TernaryConvKernel, true> {
  TernaryConvOp() { start_ver_ = 1; }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new TernaryConvKernel(api, info);
      return nullptr;
    } catch (const lbdeploy::KernelError& e) {
      return api.CreateStatus(ORT_INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, e.what());
    }
  }

  const char* GetName() const { return kOpType; }
  size_t GetInputTypeCount() const { return 4; }
  // W (input 1) may be uint8 or int8; the kernel checks which.
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// Domains handed to sessions must outlive them: keep every one ever created.
std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain>& domains() {
  static std::vector<Ort::CustomOpDomain> list;
  return list;
}

}  // namespace

#define LBDEPLOY_STRINGIFY(x) #x
#define LBDEPLOY_TO_STRING(x) LBDEPLOY_STRINGIFY(x)

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // The runtime is older than the headers this library was built with; API 1 is always served.
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "the lbdeploy TernaryConv library needs ONNX Runtime C API version " LBDEPLOY_TO_STRING(
                      ORT_API_VERSION) " or newer; upgrade onnxruntime or rebuild against older headers");
  }
  Ort::InitApi(api);
  static TernaryConvOp op;
  try {
    Ort::CustomOpDomain domain{kDomain};
    domain.Add(&op);
    domain.Add(lbdeploy::ort::qternary_conv_op());
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    domains().push_back(std::move(domain));
    return nullptr;
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
}
