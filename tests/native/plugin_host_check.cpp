// Host-only check of libternary_trt.so's TensorRT glue, without TensorRT's library or a GPU:
// dlopen the plugin library, take its creators through getCreators() (as IPluginRegistry::loadLibrary
// does) and drive the IPluginV3 build/runtime interfaces the way the builder would, through
// TensorRT's own header-defined interfaces. Prints "plugin host check passed" or the first failure.
//
// Build: g++ -std=c++17 -isystem <TensorRT include> -isystem <CUDA include> plugin_host_check.cpp -ldl
// Run:   ./plugin_host_check path/to/libternary_trt.so DEVICE
//   DEVICE 1: a CUDA device is present, so onShapeChange's tap-list allocation must succeed; 0: none is,
//   so it must fail with the plugin's cudaMalloc message (the shapes having passed its checks).
#include "NvInferRuntime.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

int gFailures = 0;

void check(bool ok, char const* what)
{
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++gFailures;
    }
}

// Keeps the plugin's last log message (it logs through the logger TensorRT hands to setLoggerFinder).
class LastMessage : public ILogger, public ILoggerFinder {
public:
    void log(Severity /*severity*/, AsciiChar const* msg) noexcept override { text = msg; }
    ILogger* findLogger() override { return this; }
    std::string text;
};

Dims dims(std::vector<int64_t> const& values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
        d.d[i] = values[i];
    }
    return d;
}

struct Fields {
    int32_t kernel[2]{3, 3};
    int32_t strides[2]{2, 2};
    int32_t pads[4]{1, 1, 1, 1};
    int32_t dilations[2]{1, 1};
    int64_t group{2};  // the ONNX parser may hand ints as INT64
    std::string activation{"relu"};
    std::string version{"1"};
    std::vector<PluginField> list;
    PluginFieldCollection fc{};

    PluginFieldCollection const* collection(bool withKernel = true)
    {
        list.clear();
        if (withKernel) {
            list.emplace_back("kernel_shape", kernel, PluginFieldType::kINT32, 2);
        }
        list.emplace_back("strides", strides, PluginFieldType::kINT32, 2);
        list.emplace_back("pads", pads, PluginFieldType::kINT32, 4);
        list.emplace_back("dilations", dilations, PluginFieldType::kINT32, 2);
        list.emplace_back("group", &group, PluginFieldType::kINT64, 1);
        list.emplace_back("activation", activation.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(activation.size()));
        list.emplace_back("plugin_version", version.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(version.size()));
        fc.nbFields = static_cast<int32_t>(list.size());
        fc.fields = list.data();
        return &fc;
    }
};

DynamicPluginTensorDesc desc(DataType type, Dims const& d)
{
    DynamicPluginTensorDesc t{};
    t.desc.type = type;
    t.desc.format = TensorFormat::kLINEAR;
    t.desc.dims = d;
    t.min = d;
    t.max = d;
    t.opt = d;
    return t;
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s libternary_trt.so DEVICE(0|1)\n", argv[0]);
        return 2;
    }
    bool const device = std::strcmp(argv[2], "1") == 0;
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    check(getCreators != nullptr && setLoggerFinder != nullptr, "library exports getCreators and setLoggerFinder");
    if (getCreators == nullptr) {
        return 1;
    }
    LastMessage messages;
    setLoggerFinder(&messages);

    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    check(nbCreators == 2, "two creators (namespace \"\" and \"ai.lbdeploy\")");
    std::set<std::string> namespaces;
    for (int32_t i = 0; i < nbCreators; ++i) {
        check(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is IPluginCreatorV3One");
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        check(std::strcmp(creator->getPluginName(), "TernaryConv") == 0, "creator name TernaryConv");
        check(std::strcmp(creator->getPluginVersion(), "1") == 0, "creator version 1");
        namespaces.insert(creator->getPluginNamespace());
        check(creator->getFieldNames()->nbFields == 6, "six field names");
    }
    check(namespaces == std::set<std::string>{"", "ai.lbdeploy"}, "namespaces are \"\" and ai.lbdeploy");

    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    Fields fields;
    IPluginV3* plugin = creator->createPlugin("conv0", fields.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin with valid fields");
    if (plugin == nullptr) {
        return 1;
    }
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(std::strcmp(core->getPluginName(), "TernaryConv") == 0, "plugin name");
    check(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0, "core capability");
    check(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0, "build capability");
    check(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0, "runtime capability");
    check(build->getNbOutputs() == 1, "one output");

    DataType inTypes[4] = {DataType::kHALF, DataType::kUINT8, DataType::kFLOAT, DataType::kFLOAT};
    DataType outType = DataType::kFLOAT;
    check(build->getOutputDataTypes(&outType, 1, inTypes, 4) == 0 && outType == DataType::kHALF, "output type follows X");

    // C=16, group 2 -> K = 8*3*3 = 72 weights -> 18 bytes per row; Cout = 8.
    Dims const x = dims({1, 16, 9, 10});
    Dims const y = dims({1, 8, 5, 5});
    DynamicPluginTensorDesc io[5] = {desc(DataType::kFLOAT, x), desc(DataType::kUINT8, dims({8, 18})),
        desc(DataType::kFLOAT, dims({8})), desc(DataType::kFLOAT, dims({8})), desc(DataType::kFLOAT, y)};
    check(build->supportsFormatCombination(0, io, 4, 1), "X float32 linear accepted");
    io[0].desc.type = DataType::kHALF;
    check(build->supportsFormatCombination(0, io, 4, 1), "X float16 linear accepted");
    check(!build->supportsFormatCombination(4, io, 4, 1), "Y float32 refused when X is float16");
    io[4].desc.type = DataType::kHALF;
    check(build->supportsFormatCombination(4, io, 4, 1), "Y float16 accepted when X is float16");
    io[0].desc.type = DataType::kINT8;
    check(!build->supportsFormatCombination(0, io, 4, 1), "X int8 refused");
    check(build->supportsFormatCombination(1, io, 4, 1), "W uint8 accepted");
    io[1].desc.type = DataType::kINT8;
    check(!build->supportsFormatCombination(1, io, 4, 1), "W int8 refused");
    io[1].desc.type = DataType::kINT32;
    check(build->supportsFormatCombination(1, io, 4, 1), "W int32 words accepted");
    io[1].desc.type = DataType::kUINT8;
    io[2].desc.format = TensorFormat::kHWC8;
    check(!build->supportsFormatCombination(2, io, 4, 1), "non-linear format refused");
    io[2].desc.format = TensorFormat::kLINEAR;

    check(build->configurePlugin(io, 4, io + 4, 1) == 0, "configurePlugin accepts matching uint8 rows");
    io[1].desc.dims = dims({8, 17});
    check(build->configurePlugin(io, 4, io + 4, 1) != 0, "configurePlugin rejects a wrong packed row size");
    io[1].desc.type = DataType::kINT32;
    io[1].desc.dims = dims({8, 5});  // 18 bytes -> 5 words
    check(build->configurePlugin(io, 4, io + 4, 1) == 0, "configurePlugin accepts matching int32 word rows");
    io[1].desc.dims = dims({8, 18});
    check(build->configurePlugin(io, 4, io + 4, 1) != 0, "configurePlugin rejects byte-sized rows as int32");
    io[1].desc.type = DataType::kUINT8;
    io[2].desc.dims = dims({7});
    check(build->configurePlugin(io, 4, io + 4, 1) != 0, "configurePlugin rejects a scale of the wrong length");

    PluginTensorDesc in[4] = {io[0].desc, io[1].desc, io[2].desc, io[3].desc};
    in[2].dims = dims({8});
    in[0].dims = dims({1, 15, 9, 10});
    check(runtime->onShapeChange(in, 4, &io[4].desc, 1) != 0 && messages.text.find("group") != std::string::npos,
        "onShapeChange rejects channels that group does not divide");
    in[0].dims = x;
    messages.text.clear();
    int32_t const reserved = runtime->onShapeChange(in, 4, &io[4].desc, 1);
    if (device) {
        check(reserved == 0, "onShapeChange accepts the real shapes and allocates the tap lists");
    } else {
        check(reserved != 0 && messages.text.find("cudaMalloc of") != std::string::npos,
            "onShapeChange accepts the real shapes, then allocates the tap lists (no device here: cudaMalloc fails)");
    }

    // Serialize -> recreate in the runtime phase (what engine deserialization does).
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    check(saved != nullptr && saved->nbFields == 6, "six serialized fields");
    IPluginV3* restored = creator->createPlugin("conv0", saved, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, "plugin recreated from its serialized fields");
    if (restored != nullptr) {
        auto* restoredRuntime
            = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* again = restoredRuntime->getFieldsToSerialize();
        bool same = again->nbFields == saved->nbFields;
        for (int32_t i = 0; same && i < again->nbFields; ++i) {
            PluginField const& a = again->fields[i];
            PluginField const& b = saved->fields[i];
            size_t const bytes = a.type == PluginFieldType::kCHAR ? 1 : 4;
            same = std::strcmp(a.name, b.name) == 0 && a.type == b.type && a.length == b.length
                && std::memcmp(a.data, b.data, bytes * static_cast<size_t>(a.length)) == 0;
        }
        check(same, "serialized fields round-trip");
        delete restored;
    }
    IPluginV3* copy = plugin->clone();
    check(copy != nullptr, "clone");
    delete copy;
    delete plugin;

    fields.activation = "tanh";
    check(creator->createPlugin("bad", fields.collection(), TensorRTPhase::kBUILD) == nullptr, "unknown activation refused");
    fields.activation = "none";
    check(creator->createPlugin("bad", fields.collection(false), TensorRTPhase::kBUILD) == nullptr, "missing kernel_shape refused");
    fields.strides[0] = 0;
    check(creator->createPlugin("bad", fields.collection(), TensorRTPhase::kBUILD) == nullptr, "stride 0 refused");

    if (gFailures != 0) {
        std::fprintf(stderr, "%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("plugin host check passed\n");
    return 0;
}
