/*
 * TensorRT IPluginV3 plugin for ai.lbdeploy::TernaryConv (plugin name "TernaryConv", version "1").
 *
 * The plugin wraps the CUDA kernel of ../cuda/ternary_conv.cuh. Inputs: X [N,C,H,W] (float32 or
 * float16); W, the packed 2-bit weights, either as int32 words [Cout, ceil(ceil(K/4)/4)] (each row's
 * packed bytes padded to whole words, little-endian: what ARTIFACT/tensorrt/model.onnx carries, because
 * TensorRT constants cannot be uint8) or as uint8 bytes [Cout, ceil(K/4)]; scale [Cout] and bias [Cout]
 * (float32). Output Y [N,Cout,OH,OW] with X's type. K = C/group*kH*kW. Attributes arrive
 * as plugin fields named like the ONNX attributes (kernel_shape, strides, pads, dilations, group,
 * activation); unknown fields (plugin_version, plugin_namespace) are ignored.
 *
 * The weights are a constant input: onShapeChange allocates a device buffer for the kernel's tap
 * lists, the first enqueue of an execution context fills it (lbd_ternary_conv_prepare), later
 * enqueues only run the conv. No enqueue allocates, so one may be captured into a CUDA graph.
 *
 * The creator is offered under two namespaces: "" (what the node's plugin_namespace attribute says)
 * and "ai.lbdeploy" (TensorRT >= 10.10's ONNX parser also reads the namespace from the node domain),
 * so the same library serves both lookups. To add an attribute: add it to TernaryConvAttrs, parse it
 * in TernaryConvAttrs::fromFields, serialize it in TernaryConvPlugin::getFieldsToSerialize and list it
 * in TernaryConvPluginCreator's field names.
 */
#ifndef LBDEPLOY_TERNARY_CONV_PLUGIN_H
#define LBDEPLOY_TERNARY_CONV_PLUGIN_H

#include "NvInferRuntime.h"

#include "../cuda/ternary_conv.cuh"

#include <array>
#include <string>
#include <vector>

namespace lbdeploy {

constexpr char const* kPluginName = "TernaryConv";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";
constexpr char const* kDomainNamespace = "ai.lbdeploy";

//! Log through the logger TensorRT handed to setLoggerFinder (stderr when there is none).
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

//! The op's attributes (ONNX Conv conventions), parsed from and written to plugin fields.
struct TernaryConvAttrs {
    std::array<int32_t, 2> kernelShape{0, 0};
    std::array<int32_t, 2> strides{1, 1};
    std::array<int32_t, 4> pads{0, 0, 0, 0};  // top, left, bottom, right
    std::array<int32_t, 2> dilations{1, 1};
    int32_t group{1};
    int32_t activation{0};  // LbdActivation

    //! Parse fields; returns an empty string or the reason they are invalid.
    std::string fromFields(nvinfer1::PluginFieldCollection const* fc);
};

class TernaryConvPlugin : public nvinfer1::IPluginV3,
                          public nvinfer1::IPluginV3OneCore,
                          public nvinfer1::IPluginV3OneBuild,
                          public nvinfer1::IPluginV3OneRuntime {
public:
    TernaryConvPlugin(TernaryConvAttrs const& attrs, std::string pluginNamespace);
    TernaryConvPlugin(TernaryConvPlugin const& other);
    TernaryConvPlugin& operator=(TernaryConvPlugin const&) = delete;
    ~TernaryConvPlugin() override;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Checks W, scale and bias shapes against X's channels; returns an empty string or the reason.
    std::string checkShapes(nvinfer1::Dims const& x, nvinfer1::Dims const& w, nvinfer1::DataType wType,
        nvinfer1::Dims const& scale, nvinfer1::Dims const& bias) const;
    void refreshSerializedFields();
    //! Allocates the tap-list buffer for geometry `g` (kept while the list size stays the same).
    int32_t reserveTapLists(LbdTernaryConvGeometry const& g) noexcept;
    //! Builds the tap lists of `weights` once (again only when the weight buffer or dtype changes).
    int32_t prepareTapLists(LbdTernaryConvGeometry const& g, int32_t dtype, void const* weights,
        int32_t rowStride, cudaStream_t stream) noexcept;

    TernaryConvAttrs mAttrs;
    std::string mNamespace;
    std::string mActivationName;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    // Device tap lists of the (constant) weight input, per execution context; never copied by clone().
    void* mTapLists{nullptr};
    int64_t mTapListBytes{0};
    void const* mPreparedWeights{nullptr};
    int32_t mPreparedType{-1};
};

class TernaryConvPluginCreator : public nvinfer1::IPluginCreatorV3One {
public:
    explicit TernaryConvPluginCreator(char const* pluginNamespace);

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::string mNamespace;
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldNameCollection{};
};

}  // namespace lbdeploy

#endif  // LBDEPLOY_TERNARY_CONV_PLUGIN_H
