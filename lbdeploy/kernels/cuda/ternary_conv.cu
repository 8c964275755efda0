/*
 * ai.lbdeploy::TernaryConv CUDA kernel (see ternary_conv.cuh for the interface and the op).
 *
 * The weights are fixed, so their work is done once: lbd_ternary_conv_prepare turns the packed 2-bit
 * weights into, for every output channel and input-channel chunk, a list of the +1 taps followed by
 * the -1 taps, each tap stored as its offset in the shared-memory input tile. Zero weights are not in
 * any list, so the conv's work follows the density.
 *
 * Work split of the conv: one thread block computes a TILE_H x (TILE_W * PIXELS) patch of output
 * pixels for OC_TILE output channels of one image and one group; each thread owns PIXELS adjacent
 * output columns. The block walks the group's input channels in chunks: it stages the chunk's input
 * patch (with its halo, zero-padded; coalesced row loads) and its OC_TILE tap lists in shared memory,
 * then every thread, for each output channel, walks that channel's lists: one offset read (the same
 * for the whole warp, a broadcast) gives PIXELS input values that are added (or subtracted) into
 * PIXELS accumulators. No multiplies on weights, no integer division in the inner loop; scale,
 * bias and the activation are applied once per output in the epilogue.
 *
 * float16 at column stride 1 has its own kernel summing pixel pairs with __half2 adds (two taps
 * per instruction); its tap offsets address a tile stored twice (shifted by one column) so every
 * pair is 4-byte aligned, which is why the tap lists are prepared for a dtype.
 *
 * To tune: TILE_H/TILE_W/PIXELS/OC_TILE/MAX_CHANNEL_CHUNK below; the shared-memory budget decides how
 * many channels one chunk holds (lbd_ternary_conv_check_geometry rejects geometries that fit none).
 */
#include "ternary_conv.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

namespace {

constexpr int TILE_W = 16;              // threads along output columns (threadIdx.x)
constexpr int TILE_H = 8;               // threads along output rows (threadIdx.y)
constexpr int PIXELS = 4;               // adjacent output columns per thread
constexpr int OC_TILE = 8;              // output channels per block, reusing one staged input
constexpr int MAX_CHANNEL_CHUNK = 8;    // input channels staged at once
constexpr int SMEM_BUDGET = 40 * 1024;  // bytes of dynamic shared memory a block may use
constexpr int PREPARE_THREADS = 128;    // threads per block of the tap-list kernel

struct LaunchPlan {
    int tile_ih;      // staged input rows
    int tile_iw;      // staged input columns
    int chunk;        // input channels per stage
    int chunks;       // chunks per group
    int capacity;     // tap-list entries per (output channel, chunk): chunk * kh * kw
    size_t smem;      // dynamic shared memory bytes
    dim3 grid;
};

// Tap-list buffer: counts [cout][chunks][2] (number of +1 taps, number of +1 and -1 taps), then
// offsets [cout][chunks][capacity], all int32.
__host__ __device__ inline size_t count_entries(const LbdTernaryConvGeometry& g, const LaunchPlan& plan)
{
    return static_cast<size_t>(g.cout) * plan.chunks * 2;
}

__device__ __forceinline__ float load_as_float(const float* p) { return *p; }
__device__ __forceinline__ float load_as_float(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void store_from_float(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_from_float(__half* p, float v) { *p = __float2half_rn(v); }

__device__ __forceinline__ int decode_weight(const uint8_t* row, int k)
{
    const int code = (row[k >> 2] >> (2 * (k & 3))) & 3;
    return code == 1 ? 1 : (code == 2 ? -1 : 0);
}

__device__ __forceinline__ float activate(float v, int activation)
{
    if (activation == LBD_ACT_RELU) {
        return v < 0.0f ? 0.0f : v;  // relu(NaN) = NaN (docs/ops/TernaryConv.md); fmaxf would give 0
    }
    if (activation == LBD_ACT_SIGMOID) {
        return 1.0f / (1.0f + expf(-v));
    }
    return v;
}

// Offset of tap (c, i, j) of a chunk in the staged tile. Float tiles: [chunk][tile_ih][tile_iw] floats.
// Half-pair tiles: [chunk][2 shifts][tile_ih][tile_iw] halves, copy s holding the tile shifted left by s
// columns, so every tap's pixel pairs start at an even half (a 4-byte __half2); offset in __half2 units.
__device__ __forceinline__ int32_t tap_offset(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, bool pairs,
    int c, int i, int j)
{
    const int column = j * g.dilation_w;
    if (!pairs) {
        return (c * plan.tile_ih + i * g.dilation_h) * plan.tile_iw + column;
    }
    const int shift = column & 1;
    return (((c * 2 + shift) * plan.tile_ih + i * g.dilation_h) * plan.tile_iw + column - shift) / 2;
}

// One thread per (output channel, chunk): writes its +1 taps, then its -1 taps, as tile offsets.
__global__ void build_tap_lists(LbdTernaryConvGeometry g, LaunchPlan plan, bool pairs, const uint8_t* __restrict__ w,
    int row_stride, int32_t* __restrict__ lists)
{
    const int item = blockIdx.x * PREPARE_THREADS + threadIdx.x;
    if (item >= g.cout * plan.chunks) {
        return;
    }
    const int o = item / plan.chunks;
    const int c0 = (item % plan.chunks) * plan.chunk;
    const int channels = min(plan.chunk, g.c / g.group - c0);
    const int taps = g.kh * g.kw;
    const uint8_t* row = w + static_cast<size_t>(o) * row_stride;
    int32_t* counts = lists + 2 * item;
    int32_t* offsets = lists + count_entries(g, plan) + static_cast<size_t>(item) * plan.capacity;
    int n = 0;
    for (int sign = 1; sign >= -1; sign -= 2) {
        for (int c = 0; c < channels; ++c) {
            for (int i = 0; i < g.kh; ++i) {
                for (int j = 0; j < g.kw; ++j) {
                    if (decode_weight(row, (c0 + c) * taps + i * g.kw + j) == sign) {
                        offsets[n++] = tap_offset(g, plan, pairs, c, i, j);
                    }
                }
            }
        }
        counts[sign > 0 ? 0 : 1] = n;
    }
}

// Where a thread block works: its image, group, output channels and output/input tile origin.
struct BlockTile {
    int n, grp, oc0, oc_count;
    int oy, ox0;    // this thread's output row and first output column
    int iy0, ix0;   // the staged tile's first input row and column (may be negative: padding)
    bool active;    // the thread has at least one output

    __device__ BlockTile(const LbdTernaryConvGeometry& g)
    {
        const int cout_g = g.cout / g.group;
        const int oc_blocks = (cout_g + OC_TILE - 1) / OC_TILE;
        grp = blockIdx.y / oc_blocks;
        oc0 = grp * cout_g + (blockIdx.y - grp * oc_blocks) * OC_TILE;
        oc_count = min(OC_TILE, (grp + 1) * cout_g - oc0);
        const int tiles_w = (g.ow + TILE_W * PIXELS - 1) / (TILE_W * PIXELS);
        const int tile_y = blockIdx.x / tiles_w;
        const int tile_x = blockIdx.x - tile_y * tiles_w;
        oy = tile_y * TILE_H + threadIdx.y;
        ox0 = tile_x * TILE_W * PIXELS + threadIdx.x * PIXELS;
        iy0 = tile_y * TILE_H * g.stride_h - g.pad_top;
        ix0 = tile_x * TILE_W * PIXELS * g.stride_w - g.pad_left;
        n = blockIdx.z;
        active = oy < g.oh && ox0 < g.ow;
    }
};

// Copies chunk k's tap lists (and counts) of the block's output channels into shared memory.
__device__ __forceinline__ void stage_lists(const LbdTernaryConvGeometry& g, const LaunchPlan& plan,
    const BlockTile& tile, int k, const int32_t* __restrict__ lists, int32_t* list_s, int32_t* count_s)
{
    const int32_t* offsets_g = lists + count_entries(g, plan);
    for (int o = threadIdx.y; o < OC_TILE; o += TILE_H) {
        const size_t item = static_cast<size_t>(tile.oc0 + o) * plan.chunks + k;
        const bool valid = o < tile.oc_count;
        for (int e = threadIdx.x; e < plan.capacity; e += TILE_W) {
            list_s[o * plan.capacity + e] = valid ? offsets_g[item * plan.capacity + e] : 0;
        }
        if (threadIdx.x < 2) {
            count_s[2 * o + threadIdx.x] = valid ? lists[2 * item + threadIdx.x] : 0;
        }
    }
}

// Input row r of the chunk starting at channel c0 (zero outside the image), read by consecutive
// threads at consecutive columns (coalesced); calls put(q, value) for each staged column q.
template <typename T, typename Put>
__device__ __forceinline__ void stage_row(const LbdTernaryConvGeometry& g, const LaunchPlan& plan,
    const BlockTile& tile, const T* x_group, int c0, int r, Put put)
{
    const int c = r / plan.tile_ih;
    const int iy = tile.iy0 + r - c * plan.tile_ih;
    const bool row_inside = iy >= 0 && iy < g.h;
    const T* x_row = x_group + (static_cast<size_t>(c0 + c) * g.h + (row_inside ? iy : 0)) * g.w;
    for (int q = threadIdx.x; q < plan.tile_iw; q += TILE_W) {
        const int ix = tile.ix0 + q;
        put(q, row_inside && ix >= 0 && ix < g.w ? x_row[ix] : T(0.0f));
    }
}

template <typename T>
__device__ __forceinline__ void store_outputs(const LbdTernaryConvGeometry& g, const BlockTile& tile,
    const float (&acc)[OC_TILE][PIXELS], const float* __restrict__ scale, const float* __restrict__ bias,
    T* __restrict__ y)
{
    if (!tile.active) {
        return;
    }
#pragma unroll
    for (int o = 0; o < OC_TILE; ++o) {
        if (o < tile.oc_count) {
            const int oc = tile.oc0 + o;
            T* y_row = y + ((static_cast<size_t>(tile.n) * g.cout + oc) * g.oh + tile.oy) * g.ow;
#pragma unroll
            for (int p = 0; p < PIXELS; ++p) {
                if (tile.ox0 + p < g.ow) {
                    const float v = activate(fmaf(scale[oc], acc[o][p], bias[oc]), g.activation);
                    store_from_float(y_row + tile.ox0 + p, v);
                }
            }
        }
    }
}

// STEP: the column stride as a compile-time constant (1 or 2), or 0 to read it from the geometry.
// Float inputs, and float16 inputs at column strides other than 1, are staged and summed as float32.
template <typename T, int STEP>
__global__ void __launch_bounds__(TILE_W * TILE_H) ternary_conv_kernel(LbdTernaryConvGeometry g, LaunchPlan plan,
    const T* __restrict__ x, const int32_t* __restrict__ lists, const float* __restrict__ scale,
    const float* __restrict__ bias, T* __restrict__ y)
{
    extern __shared__ float smem[];
    const int step = STEP != 0 ? STEP : g.stride_w;
    const int cin_g = g.c / g.group;
    const BlockTile tile(g);
    const int plane = plan.tile_ih * plan.tile_iw;
    float* x_s = smem;                                                                // [chunk][tile_ih][tile_iw]
    int32_t* list_s = reinterpret_cast<int32_t*>(smem + plan.chunk * plane);          // [OC_TILE][capacity]
    int32_t* count_s = list_s + OC_TILE * plan.capacity;                              // [OC_TILE][2]
    const T* x_group = x + (static_cast<size_t>(tile.n) * g.c + static_cast<size_t>(tile.grp) * cin_g) * g.h * g.w;
    const float* x_thread = x_s + threadIdx.y * g.stride_h * plan.tile_iw + threadIdx.x * PIXELS * step;

    float acc[OC_TILE][PIXELS] = {};
    for (int k = 0; k < plan.chunks; ++k) {
        const int c0 = k * plan.chunk;
        const int chunk = min(plan.chunk, cin_g - c0);
        __syncthreads();  // the previous chunk is fully consumed
        for (int r = threadIdx.y; r < chunk * plan.tile_ih; r += TILE_H) {
            stage_row(g, plan, tile, x_group, c0, r,
                [&](int q, T v) { x_s[r * plan.tile_iw + q] = load_as_float(&v); });
        }
        stage_lists(g, plan, tile, k, lists, list_s, count_s);
        __syncthreads();

        if (tile.active) {
#pragma unroll
            for (int o = 0; o < OC_TILE; ++o) {
                const int32_t* tap = list_s + o * plan.capacity;
                const int32_t* plus_end = tap + count_s[2 * o];
                const int32_t* minus_end = tap + count_s[2 * o + 1];
                float sum[PIXELS] = {};
#pragma unroll 4
                for (; tap < plus_end; ++tap) {
                    const float* v = x_thread + *tap;
#pragma unroll
                    for (int p = 0; p < PIXELS; ++p) {
                        sum[p] += v[p * step];
                    }
                }
#pragma unroll 4
                for (; tap < minus_end; ++tap) {
                    const float* v = x_thread + *tap;
#pragma unroll
                    for (int p = 0; p < PIXELS; ++p) {
                        sum[p] -= v[p * step];
                    }
                }
#pragma unroll
                for (int p = 0; p < PIXELS; ++p) {
                    acc[o][p] += sum[p];
                }
            }
        }
    }
    store_outputs(g, tile, acc, scale, bias, y);
}

// float16 at column stride 1: pixel pairs are summed with __half2 adds (HADD2: two taps per
// instruction). Each (output channel, chunk) list is summed in float16 (at most chunk * kh * kw
// terms) and added to float32 accumulators, so rounding does not grow with the channel count.
__global__ void __launch_bounds__(TILE_W * TILE_H) ternary_conv_half2_kernel(LbdTernaryConvGeometry g,
    LaunchPlan plan, const __half* __restrict__ x, const int32_t* __restrict__ lists,
    const float* __restrict__ scale, const float* __restrict__ bias, __half* __restrict__ y)
{
    extern __shared__ float smem[];
    const int cin_g = g.c / g.group;
    const BlockTile tile(g);
    const int plane = plan.tile_ih * plan.tile_iw;                                    // halves per shift copy
    __half* x_s = reinterpret_cast<__half*>(smem);                                    // [chunk][2][tile_ih][tile_iw]
    int32_t* list_s = reinterpret_cast<int32_t*>(smem + plan.chunk * plane);          // same bytes as float
    int32_t* count_s = list_s + OC_TILE * plan.capacity;
    const __half* x_group = x + (static_cast<size_t>(tile.n) * g.c + static_cast<size_t>(tile.grp) * cin_g) * g.h * g.w;
    const __half2* x_thread = reinterpret_cast<const __half2*>(x_s)
        + (threadIdx.y * g.stride_h * plan.tile_iw + threadIdx.x * PIXELS) / 2;

    float acc[OC_TILE][PIXELS] = {};
    for (int k = 0; k < plan.chunks; ++k) {
        const int c0 = k * plan.chunk;
        const int chunk = min(plan.chunk, cin_g - c0);
        __syncthreads();
        for (int r = threadIdx.y; r < chunk * plan.tile_ih; r += TILE_H) {
            const int c = r / plan.tile_ih;
            __half* copy0 = x_s + (2 * c * plan.tile_ih + r - c * plan.tile_ih) * plan.tile_iw;
            __half* copy1 = copy0 + plane;
            stage_row(g, plan, tile, x_group, c0, r, [&](int q, __half v) {
                copy0[q] = v;
                if (q > 0) {
                    copy1[q - 1] = v;
                }
            });
            if (threadIdx.x == 0) {
                copy1[plan.tile_iw - 1] = __float2half_rn(0.0f);
            }
        }
        stage_lists(g, plan, tile, k, lists, list_s, count_s);
        __syncthreads();

        if (tile.active) {
#pragma unroll
            for (int o = 0; o < OC_TILE; ++o) {
                const int32_t* tap = list_s + o * plan.capacity;
                const int32_t* plus_end = tap + count_s[2 * o];
                const int32_t* minus_end = tap + count_s[2 * o + 1];
                __half2 sum[PIXELS / 2];
#pragma unroll
                for (int p = 0; p < PIXELS / 2; ++p) {
                    sum[p] = __float2half2_rn(0.0f);
                }
                for (; tap < plus_end; ++tap) {
                    const __half2* v = x_thread + *tap;
#pragma unroll
                    for (int p = 0; p < PIXELS / 2; ++p) {
                        sum[p] = __hadd2(sum[p], v[p]);
                    }
                }
                for (; tap < minus_end; ++tap) {
                    const __half2* v = x_thread + *tap;
#pragma unroll
                    for (int p = 0; p < PIXELS / 2; ++p) {
                        sum[p] = __hsub2(sum[p], v[p]);
                    }
                }
#pragma unroll
                for (int p = 0; p < PIXELS / 2; ++p) {
                    acc[o][2 * p] += __low2float(sum[p]);
                    acc[o][2 * p + 1] += __high2float(sum[p]);
                }
            }
        }
    }
    store_outputs(g, tile, acc, scale, bias, y);
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
    plan->tile_iw = (TILE_W * PIXELS - 1) * g->stride_w + (g->kw - 1) * g->dilation_w + 1;
    plan->tile_iw += plan->tile_iw & 1;  // even: the float16 pair layout keeps every row 4-byte aligned
    // Per staged channel: its input plane and OC_TILE lists of up to taps offsets; plus the counts.
    const size_t per_channel = sizeof(float) * plan->tile_ih * plan->tile_iw + sizeof(int32_t) * OC_TILE * taps;
    const size_t fixed = sizeof(int32_t) * 2 * OC_TILE;
    const size_t fit = SMEM_BUDGET > fixed ? (SMEM_BUDGET - fixed) / per_channel : 0;
    if (fit < 1) {
        return "kernel, stride and dilation make the staged input tile larger than the shared-memory budget";
    }
    plan->chunk = static_cast<int>(fit < static_cast<size_t>(MAX_CHANNEL_CHUNK) ? fit : MAX_CHANNEL_CHUNK);
    if (plan->chunk > cin_g) {
        plan->chunk = cin_g;
    }
    plan->chunks = (cin_g + plan->chunk - 1) / plan->chunk;
    plan->capacity = plan->chunk * taps;
    plan->smem = per_channel * plan->chunk + fixed;
    const long long tiles = static_cast<long long>((g->oh + TILE_H - 1) / TILE_H)
        * ((g->ow + TILE_W * PIXELS - 1) / (TILE_W * PIXELS));
    const long long oc_blocks = static_cast<long long>(g->group) * ((g->cout / g->group + OC_TILE - 1) / OC_TILE);
    if (tiles > 2147483647LL || oc_blocks > 65535 || g->n > 65535) {
        return "output too large for one launch (tiles, output-channel blocks or batch beyond the CUDA grid)";
    }
    plan->grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(oc_blocks), static_cast<unsigned>(g->n));
    return nullptr;
}

size_t tap_list_bytes(const LbdTernaryConvGeometry& g, const LaunchPlan& plan)
{
    return sizeof(int32_t) * (count_entries(g, plan) + static_cast<size_t>(g.cout) * plan.chunks * plan.capacity);
}

// float16 at column stride 1 sums pixel pairs as __half2, with tap offsets in that kernel's layout.
bool uses_pairs(const LbdTernaryConvGeometry& g, int32_t dtype)
{
    return dtype == LBD_FLOAT16 && g.stride_w == 1;
}

// The conv kernel for a dtype and column stride (stride 1 and 2 get the step as a constant; float16
// at stride 1 goes to ternary_conv_half2_kernel instead).
template <typename T>
int32_t run(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, const void* x, const int32_t* lists,
    const float* scale, const float* bias, void* y, cudaStream_t stream)
{
    auto kernel = g.stride_w == 2 ? ternary_conv_kernel<T, 2> : ternary_conv_kernel<T, 0>;
    if constexpr (std::is_same<T, float>::value) {
        if (g.stride_w == 1) {
            kernel = ternary_conv_kernel<T, 1>;
        }
    }
    kernel<<<plan.grid, dim3(TILE_W, TILE_H), plan.smem, stream>>>(g, plan, static_cast<const T*>(x), lists, scale,
        bias, static_cast<T*>(y));
    return static_cast<int32_t>(cudaGetLastError());
}

int32_t run_dtype(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, int32_t dtype, const void* x,
    const int32_t* lists, const float* scale, const float* bias, void* y, cudaStream_t stream)
{
    if (dtype == LBD_FLOAT32) {
        return run<float>(g, plan, x, lists, scale, bias, y, stream);
    }
    if (!uses_pairs(g, dtype)) {
        return run<__half>(g, plan, x, lists, scale, bias, y, stream);
    }
    ternary_conv_half2_kernel<<<plan.grid, dim3(TILE_W, TILE_H), plan.smem, stream>>>(g, plan,
        static_cast<const __half*>(x), lists, scale, bias, static_cast<__half*>(y));
    return static_cast<int32_t>(cudaGetLastError());
}

int32_t prepare(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, int32_t dtype, const uint8_t* w,
    int32_t row_stride, int32_t* lists, cudaStream_t stream)
{
    const int items = g.cout * plan.chunks;
    build_tap_lists<<<(items + PREPARE_THREADS - 1) / PREPARE_THREADS, PREPARE_THREADS, 0, stream>>>(g, plan,
        uses_pairs(g, dtype), w, row_stride, lists);
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

extern "C" int64_t lbd_ternary_conv_tap_list_bytes(const LbdTernaryConvGeometry* geometry)
{
    LaunchPlan plan;
    return make_plan(geometry, &plan) == nullptr ? static_cast<int64_t>(tap_list_bytes(*geometry, plan)) : 0;
}

extern "C" int32_t lbd_ternary_conv_prepare(const LbdTernaryConvGeometry* geometry, int32_t dtype,
    const uint8_t* w_packed, int32_t w_row_stride, void* tap_lists, void* stream)
{
    LaunchPlan plan;
    if (make_plan(geometry, &plan) != nullptr || w_row_stride < lbd_ternary_conv_packed_row_bytes(geometry)
        || (dtype != LBD_FLOAT32 && dtype != LBD_FLOAT16)) {
        return -1;
    }
    return prepare(*geometry, plan, dtype, w_packed, w_row_stride, static_cast<int32_t*>(tap_lists),
        static_cast<cudaStream_t>(stream));
}

extern "C" int32_t lbd_ternary_conv_run(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const void* tap_lists, const float* scale, const float* bias, void* y, void* stream)
{
    LaunchPlan plan;
    if (make_plan(geometry, &plan) != nullptr || (dtype != LBD_FLOAT32 && dtype != LBD_FLOAT16)) {
        return -1;
    }
    return run_dtype(*geometry, plan, dtype, x, static_cast<const int32_t*>(tap_lists), scale, bias, y,
        static_cast<cudaStream_t>(stream));
}

extern "C" int32_t lbd_ternary_conv_launch(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const uint8_t* w_packed, int32_t w_row_stride, const float* scale, const float* bias, void* y, void* stream)
{
    LaunchPlan plan;
    if (make_plan(geometry, &plan) != nullptr || w_row_stride < lbd_ternary_conv_packed_row_bytes(geometry)
        || (dtype != LBD_FLOAT32 && dtype != LBD_FLOAT16)) {
        return -1;
    }
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    void* lists = nullptr;
    cudaError_t status = cudaMallocAsync(&lists, tap_list_bytes(*geometry, plan), s);
    if (status != cudaSuccess) {
        return static_cast<int32_t>(status);
    }
    int32_t result = prepare(*geometry, plan, dtype, w_packed, w_row_stride, static_cast<int32_t*>(lists), s);
    if (result == 0) {
        result = run_dtype(*geometry, plan, dtype, x, static_cast<const int32_t*>(lists), scale, bias, y, s);
    }
    status = cudaFreeAsync(lists, s);
    return result != 0 ? result : static_cast<int32_t>(status);
}
