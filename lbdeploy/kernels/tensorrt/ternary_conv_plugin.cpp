/*
 * IPluginV3 implementation of ai.lbdeploy::TernaryConv (see ternary_conv_plugin.h).
 *
 * Build-time work: output shape expressions, type/format negotiation (X/Y float32 or float16 in
 * linear NCHW, W int32 words or uint8 bytes, scale/bias float32) and shape checks. Run-time work:
 * onShapeChange allocates the tap-list buffer for the shape (so no enqueue allocates: an enqueue may
 * be captured into a CUDA graph); the first eager enqueue builds the weights' tap lists in it (again
 * only if the weight buffer or the dtype changes), then each enqueue is one call to
 * lbd_ternary_conv_run; no workspace. An enqueue under capture before any eager one records the
 * list building into the graph too.
 */
#include "ternary_conv_plugin.h"

#include <cuda_runtime_api.h>

#include <exception>
#include <string>
#include <utility>

namespace lbdeploy {
namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimensionOperation;
using nvinfer1::IDimensionExpr;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;

constexpr int32_t kNbInputs = 4;  // X, W, scale, bias
constexpr int32_t kNbOutputs = 1;
constexpr char const* kActivationNames[] = {"none", "relu", "sigmoid"};

// Copies the N integers of an INT32/INT64 field into `out`; returns false on a type or length mismatch.
template <size_t N>
bool readInts(PluginField const& field, std::array<int32_t, N>& out)
{
    if (field.length != static_cast<int32_t>(N) || field.data == nullptr) {
        return false;
    }
    for (size_t i = 0; i < N; ++i) {
        if (field.type == PluginFieldType::kINT32) {
            out[i] = static_cast<int32_t const*>(field.data)[i];
        } else if (field.type == PluginFieldType::kINT64) {
            out[i] = static_cast<int32_t>(static_cast<int64_t const*>(field.data)[i]);
        } else {
            return false;
        }
    }
    return true;
}

std::string fieldString(PluginField const& field)
{
    std::string text(static_cast<char const*>(field.data), static_cast<size_t>(field.length));
    return text.substr(0, text.find('\0'));
}

int64_t knownOrMinusOne(Dims const& dims, int32_t index)
{
    return index < dims.nbDims ? dims.d[index] : -1;
}

LbdTernaryConvGeometry makeGeometry(TernaryConvAttrs const& attrs, Dims const& x, Dims const& y)
{
    LbdTernaryConvGeometry g{};
    g.n = static_cast<int32_t>(x.d[0]);
    g.c = static_cast<int32_t>(x.d[1]);
    g.h = static_cast<int32_t>(x.d[2]);
    g.w = static_cast<int32_t>(x.d[3]);
    g.cout = static_cast<int32_t>(y.d[1]);
    g.oh = static_cast<int32_t>(y.d[2]);
    g.ow = static_cast<int32_t>(y.d[3]);
    g.kh = attrs.kernelShape[0];
    g.kw = attrs.kernelShape[1];
    g.stride_h = attrs.strides[0];
    g.stride_w = attrs.strides[1];
    g.pad_top = attrs.pads[0];
    g.pad_left = attrs.pads[1];
    g.dilation_h = attrs.dilations[0];
    g.dilation_w = attrs.dilations[1];
    g.group = attrs.group;
    g.activation = attrs.activation;
    return g;
}

}  // namespace

std::string TernaryConvAttrs::fromFields(nvinfer1::PluginFieldCollection const* fc)
{
    if (fc == nullptr) {
        return "no plugin fields given";
    }
    bool haveKernel = false;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& field = fc->fields[i];
        std::string const name = field.name == nullptr ? "" : field.name;
        bool ok = true;
        if (name == "kernel_shape") {
            ok = readInts(field, kernelShape);
            haveKernel = ok;
        } else if (name == "strides") {
            ok = readInts(field, strides);
        } else if (name == "pads") {
            ok = readInts(field, pads);
        } else if (name == "dilations") {
            ok = readInts(field, dilations);
        } else if (name == "group") {
            std::array<int32_t, 1> value{};
            ok = readInts(field, value);
            group = value[0];
        } else if (name == "activation") {
            ok = field.type == PluginFieldType::kCHAR && field.data != nullptr;
            std::string const text = ok ? fieldString(field) : "";
            activation = -1;
            for (int32_t a = 0; a < 3; ++a) {
                if (text == kActivationNames[a]) {
                    activation = a;
                }
            }
            if (ok && activation < 0) {
                return "activation must be none, relu or sigmoid, got '" + text + "'";
            }
        }
        if (!ok) {
            return "plugin field '" + name + "' has the wrong type or length";
        }
    }
    if (!haveKernel) {
        return "the kernel_shape field (2 ints) is required";
    }
    for (int32_t v : {kernelShape[0], kernelShape[1], strides[0], strides[1], dilations[0], dilations[1], group}) {
        if (v < 1) {
            return "kernel_shape, strides, dilations and group must all be >= 1";
        }
    }
    for (int32_t p : pads) {
        if (p < 0) {
            return "pads must be >= 0";
        }
    }
    return "";
}

TernaryConvPlugin::TernaryConvPlugin(TernaryConvAttrs const& attrs, std::string pluginNamespace)
    : mAttrs(attrs)
    , mNamespace(std::move(pluginNamespace))
{
    refreshSerializedFields();
}

TernaryConvPlugin::TernaryConvPlugin(TernaryConvPlugin const& other)
    : mAttrs(other.mAttrs)
    , mNamespace(other.mNamespace)
{
    refreshSerializedFields();
}

TernaryConvPlugin::~TernaryConvPlugin()
{
    if (mTapLists != nullptr) {
        cudaFree(mTapLists);
    }
}

int32_t TernaryConvPlugin::reserveTapLists(LbdTernaryConvGeometry const& g) noexcept
{
    int64_t const bytes = lbd_ternary_conv_tap_list_bytes(&g);
    if (bytes <= 0) {
        return -1;
    }
    if (bytes == mTapListBytes && mTapLists != nullptr) {
        return 0;
    }
    if (mTapLists != nullptr) {
        cudaFree(mTapLists);
        mTapLists = nullptr;
    }
    mTapListBytes = 0;
    mPreparedWeights = nullptr;
    cudaError_t const status = cudaMalloc(&mTapLists, static_cast<size_t>(bytes));
    if (status != cudaSuccess) {
        mTapLists = nullptr;
        logMessage(nvinfer1::ILogger::Severity::kERROR, std::string("TernaryConv: cudaMalloc of ")
                + std::to_string(bytes) + " bytes of tap lists failed: " + cudaGetErrorString(status));
        return static_cast<int32_t>(status);
    }
    mTapListBytes = bytes;
    return 0;
}

int32_t TernaryConvPlugin::prepareTapLists(LbdTernaryConvGeometry const& g, int32_t dtype, void const* weights,
    int32_t rowStride, cudaStream_t stream) noexcept
{
    if (mTapLists == nullptr || lbd_ternary_conv_tap_list_bytes(&g) != mTapListBytes) {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "TernaryConv: enqueue before onShapeChange reserved the tap lists for this shape");
        return -1;
    }
    if (weights == mPreparedWeights && dtype == mPreparedType) {
        return 0;
    }
    // Under stream capture the prepare kernel goes into the graph, so every replay prepares (the lists
    // are not written before the graph runs); only an eager prepare is remembered.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
        return -1;
    }
    int32_t const status
        = lbd_ternary_conv_prepare(&g, dtype, static_cast<uint8_t const*>(weights), rowStride, mTapLists, stream);
    bool const remembered = status == 0 && capture == cudaStreamCaptureStatusNone;
    mPreparedWeights = remembered ? weights : nullptr;
    mPreparedType = remembered ? dtype : -1;
    return status;
}

void TernaryConvPlugin::refreshSerializedFields()
{
    mActivationName = kActivationNames[mAttrs.activation];
    mFields = {
        PluginField("kernel_shape", mAttrs.kernelShape.data(), PluginFieldType::kINT32, 2),
        PluginField("strides", mAttrs.strides.data(), PluginFieldType::kINT32, 2),
        PluginField("pads", mAttrs.pads.data(), PluginFieldType::kINT32, 4),
        PluginField("dilations", mAttrs.dilations.data(), PluginFieldType::kINT32, 2),
        PluginField("group", &mAttrs.group, PluginFieldType::kINT32, 1),
        PluginField("activation", mActivationName.c_str(), PluginFieldType::kCHAR,
            static_cast<int32_t>(mActivationName.size())),
    };
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

nvinfer1::IPluginCapability* TernaryConvPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* TernaryConvPlugin::clone() noexcept
{
    try {
        return new TernaryConvPlugin(*this);
    } catch (std::exception const& e) {
        logMessage(nvinfer1::ILogger::Severity::kERROR, std::string("TernaryConv clone failed: ") + e.what());
        return nullptr;
    }
}

char const* TernaryConvPlugin::getPluginName() const noexcept { return kPluginName; }
char const* TernaryConvPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
char const* TernaryConvPlugin::getPluginNamespace() const noexcept { return mNamespace.c_str(); }
int32_t TernaryConvPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

std::string TernaryConvPlugin::checkShapes(
    Dims const& x, Dims const& w, DataType wType, Dims const& scale, Dims const& bias) const
{
    if (x.nbDims != 4) {
        return "X must be 4-D NCHW";
    }
    if (w.nbDims != 2) {
        return "W must be the packed 2-D weights (uint8 [Cout, ceil(K/4)] or int32 words) written by lbdeploy export";
    }
    int64_t const channels = knownOrMinusOne(x, 1);
    int64_t const cout = knownOrMinusOne(w, 0);
    if (channels > 0 && channels % mAttrs.group != 0) {
        return "X's channels are not divisible by group";
    }
    if (cout > 0 && cout % mAttrs.group != 0) {
        return "the output channels (W rows) are not divisible by group";
    }
    int64_t const rowElements = knownOrMinusOne(w, 1);
    if (channels > 0 && rowElements > 0) {
        int64_t const k = channels / mAttrs.group * mAttrs.kernelShape[0] * mAttrs.kernelShape[1];
        int64_t const packedBytes = (k + 3) / 4;
        int64_t const expected = wType == DataType::kINT32 ? (packedBytes + 3) / 4 : packedBytes;
        if (rowElements != expected) {
            return "W rows hold " + std::to_string(rowElements) + " elements but C/group*kH*kW = " + std::to_string(k)
                + " packed weights need " + std::to_string(expected);
        }
    }
    for (Dims const* v : {&scale, &bias}) {
        if (v->nbDims != 1 || (cout > 0 && v->d[0] > 0 && v->d[0] != cout)) {
            return "scale and bias must be 1-D with one value per output channel";
        }
    }
    return "";
}

int32_t TernaryConvPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "TernaryConv takes 4 inputs (X, W, scale, bias) and 1 output");
        return -1;
    }
    std::string const problem
        = checkShapes(in[0].desc.dims, in[1].desc.dims, in[1].desc.type, in[2].desc.dims, in[3].desc.dims);
    if (!problem.empty()) {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "TernaryConv: " + problem);
        return -1;
    }
    return 0;
}

int32_t TernaryConvPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != kNbOutputs || nbInputs != kNbInputs) {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t TernaryConvPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[0].nbDims != 4 || inputs[1].nbDims != 2) {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "TernaryConv needs X [N,C,H,W] and packed W [Cout, ceil(K/4)] (4 inputs, 1 output)");
        return -1;
    }
    // OUT = (IN + pad_begin + pad_end - dilation*(k-1) - 1) // stride + 1, as ONNX Conv.
    auto spatial = [&](IDimensionExpr const* size, int32_t axis) -> IDimensionExpr const* {
        int32_t const shrink = mAttrs.pads[axis] + mAttrs.pads[axis + 2]
            - mAttrs.dilations[axis] * (mAttrs.kernelShape[axis] - 1) - 1;
        IDimensionExpr const* padded = exprBuilder.operation(DimensionOperation::kSUM, *size, *exprBuilder.constant(shrink));
        IDimensionExpr const* steps
            = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *padded, *exprBuilder.constant(mAttrs.strides[axis]));
        return exprBuilder.operation(DimensionOperation::kSUM, *steps, *exprBuilder.constant(1));
    };
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[1].d[0];
    outputs[0].d[2] = spatial(inputs[0].d[2], 0);
    outputs[0].d[3] = spatial(inputs[0].d[3], 1);
    return 0;
}

bool TernaryConvPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs) {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR) {
        return false;
    }
    switch (pos) {
    case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    case 1: return desc.type == DataType::kINT32 || desc.type == DataType::kUINT8;
    case 2:
    case 3: return desc.type == DataType::kFLOAT;
    default: return desc.type == inOut[0].desc.type;
    }
}

int32_t TernaryConvPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        return -1;
    }
    std::string problem = checkShapes(in[0].dims, in[1].dims, in[1].type, in[2].dims, in[3].dims);
    if (problem.empty()) {
        LbdTernaryConvGeometry const g = makeGeometry(mAttrs, in[0].dims, out[0].dims);
        char const* reason = lbd_ternary_conv_check_geometry(&g);
        problem = reason == nullptr ? "" : reason;
        if (problem.empty()) {
            // Allocated here, not on the first enqueue, which may be under CUDA graph capture.
            return reserveTapLists(g);
        }
    }
    logMessage(nvinfer1::ILogger::Severity::kERROR, "TernaryConv: " + problem);
    return -1;
}

int32_t TernaryConvPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    LbdTernaryConvGeometry const g = makeGeometry(mAttrs, inputDesc[0].dims, outputDesc[0].dims);
    int32_t const dtype = inputDesc[0].type == DataType::kHALF ? LBD_FLOAT16 : LBD_FLOAT32;
    int32_t const elementBytes = inputDesc[1].type == DataType::kINT32 ? 4 : 1;
    int32_t const rowStride = static_cast<int32_t>(inputDesc[1].dims.d[1]) * elementBytes;
    int32_t status = prepareTapLists(g, dtype, inputs[1], rowStride, stream);
    if (status == 0) {
        status = lbd_ternary_conv_run(&g, dtype, inputs[0], mTapLists, static_cast<float const*>(inputs[2]),
            static_cast<float const*>(inputs[3]), outputs[0], stream);
    }
    if (status != 0) {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "TernaryConv kernel launch failed with status " + std::to_string(status));
    }
    return status;
}

nvinfer1::IPluginV3* TernaryConvPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* TernaryConvPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

TernaryConvPluginCreator::TernaryConvPluginCreator(char const* pluginNamespace)
    : mNamespace(pluginNamespace)
{
    mFieldNames = {
        PluginField("kernel_shape", nullptr, PluginFieldType::kINT32, 2),
        PluginField("strides", nullptr, PluginFieldType::kINT32, 2),
        PluginField("pads", nullptr, PluginFieldType::kINT32, 4),
        PluginField("dilations", nullptr, PluginFieldType::kINT32, 2),
        PluginField("group", nullptr, PluginFieldType::kINT32, 1),
        PluginField("activation", nullptr, PluginFieldType::kCHAR, 0),
    };
    mFieldNameCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldNameCollection.fields = mFieldNames.data();
}

nvinfer1::IPluginV3* TernaryConvPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try {
        TernaryConvAttrs attrs;
        std::string const problem = attrs.fromFields(fc);
        if (!problem.empty()) {
            logMessage(nvinfer1::ILogger::Severity::kERROR,
                std::string("TernaryConv node '") + (name == nullptr ? "" : name) + "': " + problem);
            return nullptr;
        }
        return new TernaryConvPlugin(attrs, mNamespace);
    } catch (std::exception const& e) {
        logMessage(nvinfer1::ILogger::Severity::kERROR, std::string("TernaryConv createPlugin failed: ") + e.what());
        return nullptr;
    }
}

nvinfer1::PluginFieldCollection const* TernaryConvPluginCreator::getFieldNames() noexcept
{
    return &mFieldNameCollection;
}

char const* TernaryConvPluginCreator::getPluginName() const noexcept { return kPluginName; }
char const* TernaryConvPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
char const* TernaryConvPluginCreator::getPluginNamespace() const noexcept { return mNamespace.c_str(); }

}  // namespace lbdeploy
