/*
 * ai.lbdeploy::TernaryConv CUDA kernel (see ternary_conv.cuh for the interface and the op).
 *
 * Work split: one thread block computes a TILE_H x TILE_W patch of output pixels for OC_TILE
 * output channels of one image and one group. The block walks the group's input channels in
 * chunks: it stages the chunk's input patch (with its halo, zero-padded) in shared memory once,
 * decodes the chunk's packed 2-bit weights for its OC_TILE channels into int8 in shared memory,
 * and then every thread reuses each staged input value for all OC_TILE output channels. The
 * weight values are the same for every thread of the block, so the sign test is warp-uniform:
 * a +1 weight adds, a -1 weight subtracts, a 0 weight does nothing; there are no multiplies on
 * weights. scale, bias and the activation are applied once per output in the epilogue.
 *
 * To tune: TILE_H/TILE_W/OC_TILE/MAX_CHANNEL_CHUNK below; the shared-memory budget decides how many
 * channels one chunk holds (lbd_ternary_conv_check_geometry rejects geometries that fit none).
 */
#include "ternary_conv.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

constexpr int TILE_W = 16;              // output columns per block (threadIdx.x)
constexpr int TILE_H = 8;               // output rows per block (threadIdx.y)
constexpr int OC_TILE = 8;              // output channels per block, reusing one staged input
constexpr int MAX_CHANNEL_CHUNK = 8;    // input channels staged at once
constexpr int SMEM_BUDGET = 40 * 1024;  // bytes of dynamic shared memory a block may use

struct LaunchPlan {
    int tile_ih;      // staged input rows
    int tile_iw;      // staged input columns
    int chunk;        // input channels per stage
    size_t smem;      // dynamic shared memory bytes
    dim3 grid;
};

__device__ __forceinline__ float load_as_float(const float* p) { return *p; }
__device__ __forceinline__ float load_as_float(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void store_from_float(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_from_float(__half* p, float v) { *p = __float2half_rn(v); }

__device__ __forceinline__ int8_t decode_weight(const uint8_t* row, int k)
{
    const int code = (row[k >> 2] >> (2 * (k & 3))) & 3;
    return code == 1 ? int8_t(1) : (code == 2 ? int8_t(-1) : int8_t(0));
}

__device__ __forceinline__ float activate(float v, int activation)
{
    if (activation == LBD_ACT_RELU) {
        return fmaxf(v, 0.0f);
    }
    if (activation == LBD_ACT_SIGMOID) {
        return 1.0f / (1.0f + expf(-v));
    }
    return v;
}

template <typename T>
__global__ void __launch_bounds__(TILE_W * TILE_H) ternary_conv_kernel(LbdTernaryConvGeometry g, int tile_ih,
    int tile_iw, int chunk_max, const T* __restrict__ x, const uint8_t* __restrict__ w, int row_stride,
    const float* __restrict__ scale, const float* __restrict__ bias, T* __restrict__ y)
{
    extern __shared__ float smem[];
    const int cin_g = g.c / g.group;
    const int cout_g = g.cout / g.group;
    const int oc_blocks = (cout_g + OC_TILE - 1) / OC_TILE;
    const int grp = blockIdx.y / oc_blocks;
    const int oc0 = grp * cout_g + (blockIdx.y % oc_blocks) * OC_TILE;
    const int oc_count = min(OC_TILE, (grp + 1) * cout_g - oc0);
    const int tiles_w = (g.ow + TILE_W - 1) / TILE_W;
    const int oy = (blockIdx.x / tiles_w) * TILE_H + threadIdx.y;
    const int ox = (blockIdx.x % tiles_w) * TILE_W + threadIdx.x;
    const int iy0 = (blockIdx.x / tiles_w) * TILE_H * g.stride_h - g.pad_top;
    const int ix0 = (blockIdx.x % tiles_w) * TILE_W * g.stride_w - g.pad_left;
    const int n = blockIdx.z;
    const int taps = g.kh * g.kw;
    const int tid = threadIdx.y * TILE_W + threadIdx.x;
    const int nthreads = TILE_W * TILE_H;
    const bool active = oy < g.oh && ox < g.ow;

    float* x_s = smem;                                                       // [chunk][tile_ih][tile_iw]
    int8_t* w_s = reinterpret_cast<int8_t*>(smem + chunk_max * tile_ih * tile_iw);  // [chunk*taps][OC_TILE]

    const T* x_n = x + (static_cast<size_t>(n) * g.c + static_cast<size_t>(grp) * cin_g) * g.h * g.w;
    const int plane = tile_ih * tile_iw;

    float acc[OC_TILE];
#pragma unroll
    for (int o = 0; o < OC_TILE; ++o) {
        acc[o] = 0.0f;
    }

    for (int c0 = 0; c0 < cin_g; c0 += chunk_max) {
        const int chunk = min(chunk_max, cin_g - c0);
        __syncthreads();  // the previous chunk is fully consumed

        for (int e = tid; e < chunk * plane; e += nthreads) {
            const int c = e / plane;
            const int r = (e % plane) / tile_iw;
            const int q = e % tile_iw;
            const int iy = iy0 + r;
            const int ix = ix0 + q;
            float v = 0.0f;
            if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
                v = load_as_float(x_n + (static_cast<size_t>(c0 + c) * g.h + iy) * g.w + ix);
            }
            x_s[e] = v;
        }
        const int chunk_taps = chunk * taps;
        for (int e = tid; e < chunk_taps * OC_TILE; e += nthreads) {
            const int kk = e / OC_TILE;
            const int o = e % OC_TILE;
            int8_t value = 0;
            if (o < oc_count) {
                value = decode_weight(w + static_cast<size_t>(oc0 + o) * row_stride, c0 * taps + kk);
            }
            w_s[e] = value;
        }
        __syncthreads();

        if (active) {
            for (int c = 0; c < chunk; ++c) {
                for (int i = 0; i < g.kh; ++i) {
                    const float* x_row = x_s + (c * tile_ih + threadIdx.y * g.stride_h + i * g.dilation_h) * tile_iw
                        + threadIdx.x * g.stride_w;
                    const int8_t* w_row = w_s + ((c * g.kh + i) * g.kw) * OC_TILE;
                    for (int j = 0; j < g.kw; ++j) {
                        const float v = x_row[j * g.dilation_w];
                        const int8_t* w_tap = w_row + j * OC_TILE;
#pragma unroll
                        for (int o = 0; o < OC_TILE; ++o) {
                            const int8_t s = w_tap[o];
                            if (s > 0) {
                                acc[o] += v;
                            } else if (s < 0) {
                                acc[o] -= v;
                            }
                        }
                    }
                }
            }
        }
    }

    if (active) {
#pragma unroll
        for (int o = 0; o < OC_TILE; ++o) {
            if (o < oc_count) {
                const int oc = oc0 + o;
                const float v = activate(fmaf(scale[oc], acc[o], bias[oc]), g.activation);
                store_from_float(y + ((static_cast<size_t>(n) * g.cout + oc) * g.oh + oy) * g.ow + ox, v);
            }
        }
    }
}

// Fills `plan` for a geometry; returns NULL or the reason it cannot run.
const char* make_plan(const LbdTernaryConvGeometry* g, LaunchPlan* plan)
{
    if (g == nullptr) {
        return "geometry is NULL";
    }
    if (g->n < 1 || g->c < 1 || g->h < 1 || g->w < 1 || g->cout < 1 || g->oh < 1 || g->ow < 1) {
        return "all of n, c, h, w, cout, oh, ow must be >= 1";
    }
    if (g->kh < 1 || g->kw < 1 || g->stride_h < 1 || g->stride_w < 1 || g->dilation_h < 1 || g->dilation_w < 1) {
        return "kernel_shape, strides and dilations must be >= 1";
    }
    if (g->pad_top < 0 || g->pad_left < 0) {
        return "pads must be >= 0";
    }
    if (g->group < 1 || g->c % g->group != 0 || g->cout % g->group != 0) {
        return "group must be >= 1 and divide both c and cout";
    }
    if (g->activation != LBD_ACT_NONE && g->activation != LBD_ACT_RELU && g->activation != LBD_ACT_SIGMOID) {
        return "activation must be 0 (none), 1 (relu) or 2 (sigmoid)";
    }
    const int cin_g = g->c / g->group;
    const int taps = g->kh * g->kw;
    plan->tile_ih = (TILE_H - 1) * g->stride_h + (g->kh - 1) * g->dilation_h + 1;
    plan->tile_iw = (TILE_W - 1) * g->stride_w + (g->kw - 1) * g->dilation_w + 1;
    const size_t per_channel = sizeof(float) * plan->tile_ih * plan->tile_iw + OC_TILE * taps;
    const size_t fit = SMEM_BUDGET / per_channel;
    if (fit < 1) {
        return "kernel, stride and dilation make the staged input tile larger than the shared-memory budget";
    }
    plan->chunk = static_cast<int>(fit < static_cast<size_t>(MAX_CHANNEL_CHUNK) ? fit : MAX_CHANNEL_CHUNK);
    if (plan->chunk > cin_g) {
        plan->chunk = cin_g;
    }
    plan->smem = sizeof(float) * plan->chunk * plan->tile_ih * plan->tile_iw + OC_TILE * plan->chunk * taps;
    const long long tiles = static_cast<long long>((g->oh + TILE_H - 1) / TILE_H) * ((g->ow + TILE_W - 1) / TILE_W);
    const long long oc_blocks = static_cast<long long>(g->group) * ((g->cout / g->group + OC_TILE - 1) / OC_TILE);
    if (tiles > 2147483647LL || oc_blocks > 65535 || g->n > 65535) {
        return "output too large for one launch (tiles, output-channel blocks or batch beyond the CUDA grid)";
    }
    plan->grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(oc_blocks), static_cast<unsigned>(g->n));
    return nullptr;
}

template <typename T>
int32_t launch(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, const void* x, const uint8_t* w,
    int32_t row_stride, const float* scale, const float* bias, void* y, cudaStream_t stream)
{
    ternary_conv_kernel<T><<<plan.grid, dim3(TILE_W, TILE_H), plan.smem, stream>>>(g, plan.tile_ih, plan.tile_iw,
        plan.chunk, static_cast<const T*>(x), w, row_stride, scale, bias, static_cast<T*>(y));
    return static_cast<int32_t>(cudaGetLastError());
}

}  // namespace

extern "C" const char* lbd_ternary_conv_check_geometry(const LbdTernaryConvGeometry* geometry)
{
    LaunchPlan plan;
    return make_plan(geometry, &plan);
}

extern "C" int32_t lbd_ternary_conv_packed_row_bytes(const LbdTernaryConvGeometry* geometry)
{
    return (geometry->c / geometry->group * geometry->kh * geometry->kw + 3) / 4;
}

extern "C" int32_t lbd_ternary_conv_launch(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const uint8_t* w_packed, int32_t w_row_stride, const float* scale, const float* bias, void* y, void* stream)
{
    LaunchPlan plan;
    if (make_plan(geometry, &plan) != nullptr || w_row_stride < lbd_ternary_conv_packed_row_bytes(geometry)) {
        return -1;
    }
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (dtype == LBD_FLOAT32) {
        return launch<float>(*geometry, plan, x, w_packed, w_row_stride, scale, bias, y, s);
    }
    if (dtype == LBD_FLOAT16) {
        return launch<__half>(*geometry, plan, x, w_packed, w_row_stride, scale, bias, y, s);
    }
    return -1;
}
