// ONNX Runtime wrapper of ai.lbdeploy::QTernaryConv (version 1) over lbdeploy/kernels/core
// (qternary_conv.h); registered with TernaryConv by RegisterCustomOps in ternary_conv_op.cc.
//
// Inputs (docs/ops/QTernaryConv.md): X uint8 [N,C,H,W], x_scale float, x_zero_point uint8, W packed
// uint8 [Cout, ceil(K/4)], scale float [Cout], bias float [Cout], y_scale float, y_zero_point uint8;
// output Y uint8. Attribute layout "NCHW" (default) or "NHWC": the memory order of X and Y (the
// channels-last form that ONNX Runtime's channels-last int8 convs feed). When W is a constant
// initializer it is checked once per kernel instance (code 3 fails every run with INVALID_ARGUMENT);
// otherwise on every run.
#include <memory>
#include <string>

#include "op_common.h"
#include "qternary_conv.h"

namespace {

constexpr const char* kOpType = "QTernaryConv";
constexpr int kWeightInput = 3;

lbdeploy::QTernaryConv make_conv(const lbdeploy::ConvParams& params, bool channels_last, const Ort::ConstValue& w) {
  const auto info = w.GetTensorTypeAndShapeInfo();
  const auto shape = info.GetShape();
  if (shape.size() != 2) throw lbdeploy::KernelError("QTernaryConv W must be packed uint8 [Cout, ceil(K/4)]");
  return lbdeploy::QTernaryConv::from_packed(params, w.GetTensorData<uint8_t>(), shape[0], shape[1], channels_last);
}

// The layout attribute: true for "NHWC".
bool read_channels_last(const OrtApi& api, const OrtKernelInfo* info) {
  const std::string layout = lbdeploy::ort::string_attribute(api, info, "layout", "NCHW");
  if (layout != "NCHW" && layout != "NHWC") {
    throw lbdeploy::KernelError("QTernaryConv layout must be NCHW or NHWC, got '" + layout + "'");
  }
  return layout == "NHWC";
}

template <class T>
T scalar_input(const Ort::ConstValue& value, const char* name) {
  if (value.GetTensorTypeAndShapeInfo().GetElementCount() != 1) {
    throw lbdeploy::KernelError(std::string("QTernaryConv ") + name + " must be a scalar (one value)");
  }
  return value.GetTensorData<T>()[0];
}

// A node whose attributes or constant weights the kernels refuse keeps the reason and fails every
// run with INVALID_ARGUMENT: ONNX Runtime turns any error of a custom kernel's creation into
// RUNTIME_EXCEPTION ("Exception during initialization"), which would hide the documented code.
struct QTernaryConvKernel {
  QTernaryConvKernel(const OrtApi& api, const OrtKernelInfo* info) : api_(api) {
    try {
      params_ = lbdeploy::ort::read_params(api, info);
      channels_last_ = read_channels_last(api, info);
      int is_constant = 0;
      Ort::ConstValue w = Ort::ConstKernelInfo(info).GetTensorConstantInput(kWeightInput, &is_constant);
      if (is_constant) {
        constant_ = std::make_unique<lbdeploy::QTernaryConv>(make_conv(params_, channels_last_, w));
      } else if (params_.activation == lbdeploy::Activation::kSigmoid) {
        throw lbdeploy::KernelError("QTernaryConv activation must be none or relu");
      }
    } catch (const lbdeploy::KernelError& e) {
      refused_ = e.what();
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    if (!refused_.empty()) return api_.CreateStatus(ORT_INVALID_ARGUMENT, refused_.c_str());
    try {
      Ort::KernelContext context(raw_context);
      const auto x = context.GetInput(0);
      const auto x_shape = x.GetTensorTypeAndShapeInfo().GetShape();
      if (x_shape.size() != 4) throw lbdeploy::KernelError("QTernaryConv X must be 4-D [N, C, H, W] or [N, H, W, C]");
      std::unique_ptr<lbdeploy::QTernaryConv> per_run;
      if (!constant_) {
        per_run = std::make_unique<lbdeploy::QTernaryConv>(
            make_conv(params_, channels_last_, context.GetInput(kWeightInput)));
      }
      const lbdeploy::QTernaryConv& conv = constant_ ? *constant_ : *per_run;
      const auto scale = context.GetInput(4);
      const auto bias = context.GetInput(5);
      for (const auto* v : {&scale, &bias}) {
        if (v->GetTensorTypeAndShapeInfo().GetElementCount() != static_cast<size_t>(conv.out_channels())) {
          throw lbdeploy::KernelError("QTernaryConv scale and bias must have Cout = " +
                                      std::to_string(conv.out_channels()) + " values");
        }
      }
      lbdeploy::Quantization q;
      q.x_scale = scalar_input<float>(context.GetInput(1), "x_scale");
      q.x_zero_point = scalar_input<uint8_t>(context.GetInput(2), "x_zero_point");
      q.y_scale = scalar_input<float>(context.GetInput(6), "y_scale");
      q.y_zero_point = scalar_input<uint8_t>(context.GetInput(7), "y_zero_point");
      const lbdeploy::Shape4 xs = channels_last_ ? lbdeploy::Shape4{x_shape[0], x_shape[3], x_shape[1], x_shape[2]}
                                                 : lbdeploy::Shape4{x_shape[0], x_shape[1], x_shape[2], x_shape[3]};
      const lbdeploy::Shape4 ys = conv.output_shape(xs);
      auto y = channels_last_ ? context.GetOutput(0, {ys.n, ys.h, ys.w, ys.c}) : context.GetOutput(0, {ys.n, ys.c, ys.h, ys.w});
      conv.run(x.GetTensorData<uint8_t>(), xs, q, scale.GetTensorData<float>(), bias.GetTensorData<float>(),
               y.GetTensorMutableData<uint8_t>(), lbdeploy::ort::ort_parallel_for(context));
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
  bool channels_last_ = false;
  std::unique_ptr<lbdeploy::QTernaryConv> constant_;
  std::string refused_;  // why the kernels refuse this node (empty: they run it)
};

struct QTernaryConvOp : Ort::CustomOpBase<QTernaryConvOp, QTernaryConvKernel, true> {
  QTernaryConvOp() { start_ver_ = 1; }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new QTernaryConvKernel(api, info);
      return nullptr;
    } catch (const lbdeploy::KernelError& e) {
      return api.CreateStatus(ORT_INVALID_ARGUMENT, e.what());
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, e.what());
    }
  }

  const char* GetName() const { return kOpType; }
  size_t GetInputTypeCount() const { return 8; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    switch (index) {
      case 0:
      case 2:
      case 3:
      case 7:
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
      default:
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
};

}  // namespace

namespace lbdeploy {
namespace ort {

const OrtCustomOp* qternary_conv_op() {
  static QTernaryConvOp op;
  return &op;
}

}  // namespace ort
}  // namespace lbdeploy
