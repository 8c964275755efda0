// CPU stand-in for the parts of cuda_runtime.h that lbdeploy/kernels/cuda/ternary_conv.cu uses, so the
// real kernel source can be compiled with g++ and run on the CPU by kernel_cpu_emulation.cpp.
// A block runs as blockDim threads (std::thread) sharing one shared-memory array; __syncthreads is a
// std::barrier. Only for tests: it checks the kernel's indexing, tiling and decoding, not its speed.
#pragma once

#include <algorithm>
#include <barrier>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__

using std::max;
using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Vector types the kernel loads (16-byte aligned like CUDA's) and the read-only load.
struct alignas(8) int2 {
    int x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline int2 make_int2(int x, int y) { return int2{x, y}; }
template <typename T>
inline T __ldg(const T* p) { return *p; }
// Fast-math intrinsics: exact here (the GPU's are within a few ulp).
inline float __expf(float x) { return std::exp(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }

using cudaStream_t = void*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return 0; }
// Stream-ordered allocation: plain host memory (the emulated kernels run synchronously).
inline cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) { *ptr = std::malloc(bytes); return *ptr ? 0 : 2; }
inline cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) { std::free(ptr); return 0; }

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline std::barrier<>* gBlockBarrier = nullptr;
inline void __syncthreads() { gBlockBarrier->arrive_and_wait(); }

namespace {
// The kernel's `extern __shared__ int4 smem[]` (declared in the same unnamed namespace) binds here.
int4 smem[64 * 1024 / sizeof(int4)];
}  // namespace

// Stands in for kernel<<<grid, block, sharedBytes, stream>>>(args...).
template <typename Kernel, typename... Args>
void emulateLaunch(dim3 grid, dim3 block, size_t sharedBytes, cudaStream_t, Kernel kernel, Args... args)
{
    assert(sharedBytes <= sizeof(smem));
    unsigned const threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz) {
        for (unsigned by = 0; by < grid.y; ++by) {
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                std::barrier<> barrier(threads);
                gBlockBarrier = &barrier;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t) {
                    pool.emplace_back([&, t] {
                        blockIdx = dim3(bx, by, bz);
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        kernel(args...);
                    });
                }
                for (std::thread& thread : pool) {
                    thread.join();
                }
            }
        }
    }
}
