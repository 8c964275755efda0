// Runs lbdeploy's CUDA TernaryConv kernel source on the CPU (see cuda_emulation/) for one test case.
//
// Build (the test does this): copy ternary_conv.cu to ternary_conv_emulated.cu with its <<<...>>> launch
// rewritten to emulateLaunch(...), then
//   g++ -std=c++20 -O2 -pthread -I cuda_emulation -I <kernel dir> -I <copy dir> kernel_cpu_emulation.cpp
// Run: prog DTYPE ROW_STRIDE N C H W COUT OH OW KH KW SH SW PT PL DH DW GROUP ACT X W SCALE BIAS Y_OUT
//   DTYPE 0 = float32, 1 = float16; X, W, SCALE, BIAS are raw little-endian files; Y_OUT is written.
#include "cuda_runtime.h"

#include "ternary_conv_emulated.cu"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <vector>

namespace {

std::vector<char> readFile(char const* path)
{
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 25) {
        std::fprintf(stderr, "expected 24 arguments, got %d\n", argc - 1);
        return 2;
    }
    int32_t values[19];
    for (int i = 0; i < 19; ++i) {
        values[i] = std::atoi(argv[1 + i]);
    }
    LbdTernaryConvGeometry g{values[2], values[3], values[4], values[5], values[6], values[7], values[8], values[9],
        values[10], values[11], values[12], values[13], values[14], values[15], values[16], values[17], values[18]};
    std::vector<char> x = readFile(argv[20]);
    std::vector<char> w = readFile(argv[21]);
    std::vector<char> scale = readFile(argv[22]);
    std::vector<char> bias = readFile(argv[23]);
    size_t const elementBytes = values[0] == LBD_FLOAT16 ? 2 : 4;
    std::vector<char> y(static_cast<size_t>(g.n) * g.cout * g.oh * g.ow * elementBytes);
    int32_t const status = lbd_ternary_conv_launch(&g, values[0], x.data(), reinterpret_cast<uint8_t const*>(w.data()),
        values[1], reinterpret_cast<float const*>(scale.data()), reinterpret_cast<float const*>(bias.data()), y.data(),
        nullptr);
    if (status != 0) {
        std::fprintf(stderr, "lbd_ternary_conv_launch returned %d\n", status);
        return 1;
    }
    std::ofstream(argv[24], std::ios::binary).write(y.data(), static_cast<std::streamsize>(y.size()));
    return 0;
}
