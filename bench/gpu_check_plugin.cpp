// Drives the TernaryConv TensorRT plugin's enqueue directly, without TensorRT's library (bench/gpu_check.py).
//
// dlopens libternary_trt.so, takes the creator of namespace "" from getCreators(), creates the plugin from
// the op's fields (runtime phase, as engine deserialization does), calls onShapeChange, then enqueues:
//   1. first enqueue under CUDA graph capture (cudaStreamCaptureModeGlobal), the graph launched -> y_capture
//   2. an eager enqueue                                                                         -> y_eager
//   3. the captured graph launched again                                                        -> y_replay
// and writes the three outputs. Exit code 0 when every call succeeded.
//
// Build: g++ -std=c++17 -isystem <TensorRT include> -isystem <CUDA include> gpu_check_plugin.cpp -ldl -lcudart
// Run:   prog LIB DTYPE(0 float32|1 float16) N C H W COUT OH OW KH KW SH SW PT PL PB PR DH DW GROUP ACTIVATION
//             WORDS_PER_ROW X W SCALE BIAS OUT_PREFIX
//   X: raw X in DTYPE; W: int32 weight words [COUT][WORDS_PER_ROW] (what tensorrt/model.onnx carries);
//   SCALE, BIAS: float32 [COUT]; writes OUT_PREFIX{capture,eager,replay}.bin in DTYPE.
#include "NvInferRuntime.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

std::vector<char> readFile(char const* path)
{
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool ok(cudaError_t status, char const* what)
{
    if (status != cudaSuccess) {
        std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(status));
        return false;
    }
    return true;
}

Dims dims(std::vector<int64_t> const& values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
        d.d[i] = values[i];
    }
    return d;
}

void* upload(std::vector<char> const& bytes)
{
    void* ptr = nullptr;
    if (!ok(cudaMalloc(&ptr, bytes.size() + 16), "cudaMalloc")
        || !ok(cudaMemcpy(ptr, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "cudaMemcpy")) {
        std::exit(1);
    }
    return ptr;
}

bool save(void const* device, size_t bytes, std::string const& path)
{
    std::vector<char> host(bytes);
    if (!ok(cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy back")) {
        return false;
    }
    std::ofstream(path, std::ios::binary).write(host.data(), static_cast<std::streamsize>(bytes));
    return true;
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 28) {
        std::fprintf(stderr, "expected 27 arguments, got %d (see the header of gpu_check_plugin.cpp)\n", argc - 1);
        return 2;
    }
    int v[19];
    for (int i = 0; i < 19; ++i) {
        v[i] = std::atoi(argv[2 + i]);
    }
    int const dtype = v[0];
    int const n = v[1], c = v[2], h = v[3], w = v[4], cout = v[5], oh = v[6], ow = v[7];
    int32_t kernel[2] = {v[8], v[9]}, strides[2] = {v[10], v[11]}, pads[4] = {v[12], v[13], v[14], v[15]};
    int32_t dilations[2] = {v[16], v[17]}, group = v[18];
    std::string const activation = argv[21];
    int const wordsPerRow = std::atoi(argv[22]);

    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators == nullptr ? nullptr : getCreators(nbCreators);
    IPluginCreatorV3One* creator = nullptr;
    for (int32_t i = 0; i < nbCreators; ++i) {
        auto* candidate = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(candidate->getPluginNamespace(), "") == 0) {
            creator = candidate;
        }
    }
    if (creator == nullptr) {
        std::fprintf(stderr, "no TernaryConv creator with namespace \"\"\n");
        return 1;
    }
    std::vector<PluginField> fields = {
        PluginField("kernel_shape", kernel, PluginFieldType::kINT32, 2),
        PluginField("strides", strides, PluginFieldType::kINT32, 2),
        PluginField("pads", pads, PluginFieldType::kINT32, 4),
        PluginField("dilations", dilations, PluginFieldType::kINT32, 2),
        PluginField("group", &group, PluginFieldType::kINT32, 1),
        PluginField("activation", activation.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(activation.size())),
    };
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    IPluginV3* plugin = creator->createPlugin("gpu_check", &fc, TensorRTPhase::kRUNTIME);
    if (plugin == nullptr) {
        std::fprintf(stderr, "createPlugin refused the fields\n");
        return 1;
    }
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

    DataType const xType = dtype == 1 ? DataType::kHALF : DataType::kFLOAT;
    PluginTensorDesc in[4]{};
    PluginTensorDesc out{};
    in[0].dims = dims({n, c, h, w});
    in[0].type = xType;
    in[1].dims = dims({cout, wordsPerRow});
    in[1].type = DataType::kINT32;
    in[2].dims = dims({cout});
    in[2].type = DataType::kFLOAT;
    in[3] = in[2];
    out.dims = dims({n, cout, oh, ow});
    out.type = xType;
    for (PluginTensorDesc* d : {&in[0], &in[1], &in[2], &in[3], &out}) {
        d->format = TensorFormat::kLINEAR;
    }
    if (runtime->onShapeChange(in, 4, &out, 1) != 0) {
        std::fprintf(stderr, "onShapeChange failed\n");
        return 1;
    }

    void const* inputs[4] = {upload(readFile(argv[23])), upload(readFile(argv[24])), upload(readFile(argv[25])),
        upload(readFile(argv[26]))};
    size_t const yBytes = static_cast<size_t>(n) * cout * oh * ow * (dtype == 1 ? 2 : 4);
    void* y = nullptr;
    if (!ok(cudaMalloc(&y, yBytes), "cudaMalloc y")) {
        return 1;
    }
    void* outputs[1] = {y};
    cudaStream_t stream = nullptr;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::string const prefix = argv[27];
    bool good = ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate")
        && ok(cudaMemsetAsync(y, 0, yBytes, stream), "memset") && ok(cudaStreamSynchronize(stream), "sync");
    // 1. The plugin's first enqueue is under capture: it must neither allocate nor synchronize.
    good = good && ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    int32_t const captured = good ? runtime->enqueue(in, &out, inputs, outputs, nullptr, stream) : -1;
    good = good && ok(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture") && captured == 0;
    good = good && ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate")
        && ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch") && ok(cudaStreamSynchronize(stream), "sync")
        && save(y, yBytes, prefix + "capture.bin");
    std::printf("enqueue under capture: %s\n", good ? "ok" : "FAILED");
    // 2. Eager.
    good = good && ok(cudaMemset(y, 0, yBytes), "memset") && runtime->enqueue(in, &out, inputs, outputs, nullptr, stream) == 0
        && ok(cudaStreamSynchronize(stream), "sync") && save(y, yBytes, prefix + "eager.bin");
    std::printf("eager enqueue: %s\n", good ? "ok" : "FAILED");
    // 3. The graph again.
    good = good && ok(cudaMemset(y, 0, yBytes), "memset") && ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch")
        && ok(cudaStreamSynchronize(stream), "sync") && save(y, yBytes, prefix + "replay.bin");
    std::printf("graph replay: %s\n", good ? "ok" : "FAILED");
    delete plugin;
    return good ? 0 : 1;
}
