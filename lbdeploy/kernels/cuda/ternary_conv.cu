/*
 * ai.lbdeploy::TernaryConv CUDA kernel (see ternary_conv.cuh for the interface and the op).
 *
 * The weights are fixed, so their work is done once: lbd_ternary_conv_prepare turns the packed 2-bit
 * weights into, for every input-channel chunk and output channel, a list of the +1 taps and a list of
 * the -1 taps, each tap stored as its byte offset in the shared-memory input tile. Zero weights are in
 * no list, so the conv's work follows the density, and a zero tap reads nothing (NaN rule of
 * docs/ops/TernaryConv.md).
 *
 * Work split: a block of 8 warps computes POSITIONS flat output positions (TW columns x 512/TW rows, or
 * all of a shorter map's rows; TW a power of two <= 32, so a block of a narrow map covers whole rows)
 * for OC_BLOCK output channels
 * of one image and group; each warp owns OC_WARP of those channels, each lane PIXELS positions (so a
 * lane keeps OC_WARP x PIXELS = 128 float32 sums in registers, and its per-list and per-chunk work is
 * shared by 128 outputs).
 *
 * Staging (per chunk of input channels): the input is stored once per kernel column j and row phase a
 * (the stride): plane (c, j, a) holds, at row rr and column x, padded input row (oy0 + rr) * sH + a,
 * column (ox0 + x) * sW + j * dW. Then tap (c, i, j) of output position p = row * TW + column is one
 * element, `offset(c, i, j) + p`, for every stride, dilation and kernel size; the positions of a lane
 * are consecutive, so one 16-byte shared load (LDS.128) gives 4 float32 or 8 float16 inputs, and the
 * 8 lanes of each quarter-warp read 128 consecutive bytes: no bank conflict, at stride 1, 2 or 1x1.
 * Staging writes consecutive elements from consecutive threads (conflict-free stores) and costs a few
 * instructions per element, shared by the OC_BLOCK channels of the block.
 *
 * Inner loop: every lane walks the same list (the offsets are warp-uniform: each 16-byte global load
 * of 4 offsets is one broadcast, through the read-only path, so no shared load is spent on offsets)
 * and per tap issues one address add, the 16-byte input loads and one add per output.
 * float32: 16 positions as four quads 128 positions apart (four LDS.128, 16 FADD per tap). float16: 16
 * positions as two runs of 8, 256 apart (two LDS.128, 8 HADD2: two outputs per instruction); each
 * (channel, chunk) sum, at most chunk * kh * kw taps, is then added to float32 accumulators, so rounding
 * does not grow with the channel count. Scale, bias and the activation are applied once per output.
 *
 * Not done (docs/tensorrt.md): sharing sums across output channels by joint pattern, as the CPU kernel
 * does (lbdeploy/kernels/core/patterns.h).
 *
 * To tune: the constants below; the shared-memory budget decides how many channels one chunk holds
 * (lbd_ternary_conv_check_geometry rejects geometries that fit none).
 */
#include "ternary_conv.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

namespace {

constexpr int WARPS = 8;                 // warps per block, one output-channel group each
constexpr int THREADS = WARPS * 32;      // threads per block
constexpr int OC_WARP = 8;               // output channels per warp
constexpr int OC_BLOCK = WARPS * OC_WARP;  // output channels per block, sharing one staged input
constexpr int PIXELS = 16;               // output positions per lane
constexpr int POSITIONS = 32 * PIXELS;   // flat output positions per block
constexpr int MAX_TW = 32;               // widest tile row (a power of two, >= 8)
constexpr int MAX_CHANNEL_CHUNK = 8;     // input channels staged at once (float16 sums <= 8 * kh * kw taps)
constexpr int SMEM_BUDGET = 48 * 1024;   // bytes of dynamic shared memory a block may use (no opt-in)
constexpr int PREPARE_THREADS = 128;     // threads per block of the tap-list kernel
constexpr int LIST_SLACK = 4;            // int32 entries after the last list (walk reads whole int4s)
constexpr int SLACK_BYTES = POSITIONS * 4;  // shared memory after a short map's tile (its lanes read past it)

struct LaunchPlan {
    int tw, tw_shift;  // tile row width (power of two) and its log2
    int rows;          // output rows per tile: POSITIONS / tw, or oh when that is fewer
    int tiles_x;       // tiles per output row
    int hr;            // rows per staged plane: rows + (kh - 1) * dh / sh
    int pr;            // plane rows per input channel: kw * sh * hr
    int chunk;         // input channels per stage
    int chunks;        // chunks per group
    int capacity;      // int32 entries of one (chunk, channel) list pair: + list, then - list 16-byte aligned
    int count_words;   // int32 words of the counts region (a multiple of 4)
    int tile_bytes;    // staged input bytes (float32 sizing; float16 uses half)
    size_t smem;       // dynamic shared memory bytes
    dim3 grid;
};

// Tap-list buffer: counts [chunks][cout][2] (+1 taps, -1 taps), padded to count_words, then offsets
// [chunks][cout][capacity], then LIST_SLACK entries; all int32.
__device__ __forceinline__ int round4(int n) { return (n + 3) & ~3; }

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
        return __frcp_rn(1.0f + __expf(-v));  // NaN stays NaN; -inf -> 0, +inf -> 1
    }
    return v;
}

// Element offset of tap (c, i, j) of a chunk in the staged tile (see the header comment).
__host__ __device__ inline int tap_element(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, int c, int i,
    int j)
{
    const int dy = i * g.dilation_h;
    const int plane_row = (j * g.stride_h + dy % g.stride_h) * plan.hr + dy / g.stride_h;
    return (c * plan.pr + plane_row) * plan.tw;
}

// One thread per (chunk, output channel): writes its +1 taps, then (from the next 16-byte boundary)
// its -1 taps, as byte offsets into the staged tile of `element_bytes` elements.
__global__ void build_tap_lists(LbdTernaryConvGeometry g, LaunchPlan plan, int element_bytes,
    const uint8_t* __restrict__ w, int row_stride, int32_t* __restrict__ lists)
{
    const int item = blockIdx.x * PREPARE_THREADS + threadIdx.x;
    if (item >= g.cout * plan.chunks) {
        return;
    }
    const int o = item % g.cout;
    const int c0 = (item / g.cout) * plan.chunk;
    const int channels = min(plan.chunk, g.c / g.group - c0);
    const int taps = g.kh * g.kw;
    const uint8_t* row = w + static_cast<size_t>(o) * row_stride;
    int32_t* counts = lists + 2 * item;
    int32_t* offsets = lists + plan.count_words + static_cast<size_t>(item) * plan.capacity;
    int n = 0;
    for (int sign = 1; sign >= -1; sign -= 2) {
        const int first = n;
        for (int c = 0; c < channels; ++c) {
            for (int i = 0; i < g.kh; ++i) {
                for (int j = 0; j < g.kw; ++j) {
                    if (decode_weight(row, (c0 + c) * taps + i * g.kw + j) == sign) {
                        offsets[n++] = tap_element(g, plan, c, i, j) * element_bytes;
                    }
                }
            }
        }
        counts[sign > 0 ? 0 : 1] = n - first;
        n = round4(n);
    }
}

// Per element type: how a lane's PIXELS positions are read and summed.
template <typename T>
struct Lane;

// float32: quads of positions 128 * q + 4 * lane + {0..3}, q < PIXELS / 4; sums go straight into the
// accumulators.
template <>
struct Lane<float> {
    using Sum = float[PIXELS];
    static constexpr int kRuns = PIXELS / 4;  // runs of consecutive positions per lane, 128 positions apart

    __device__ static int position(int lane, int k) { return 4 * lane + (k >> 2) * 128 + (k & 3); }
    __device__ static void begin(Sum& s, const float (&acc)[PIXELS])
    {
#pragma unroll
        for (int k = 0; k < PIXELS; ++k) {
            s[k] = acc[k];
        }
    }
    template <bool kAdd>
    __device__ static void tap(Sum& s, const char* at)
    {
#pragma unroll
        for (int r = 0; r < kRuns; ++r) {
            const float4 q = *reinterpret_cast<const float4*>(at + r * 128 * static_cast<int>(sizeof(float)));
            const float v[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                s[4 * r + k] = kAdd ? s[4 * r + k] + v[k] : s[4 * r + k] - v[k];
            }
        }
    }
    __device__ static void end(float (&acc)[PIXELS], const Sum& s)
    {
#pragma unroll
        for (int k = 0; k < PIXELS; ++k) {
            acc[k] = s[k];
        }
    }
    __device__ static void store(float* p, float v) { *p = v; }
};

// float16: runs of positions 256 * r + 8 * lane + {0..7}, each one 16-byte load, summed as __half2 per
// (channel, chunk).
template <>
struct Lane<__half> {
    using Sum = __half2[PIXELS / 2];
    static constexpr int kRuns = PIXELS / 8;

    __device__ static int position(int lane, int k) { return 8 * lane + (k >> 3) * 256 + (k & 7); }
    __device__ static void begin(Sum& s, const float (&)[PIXELS])
    {
#pragma unroll
        for (int k = 0; k < PIXELS / 2; ++k) {
            s[k] = __float2half2_rn(0.0f);
        }
    }
    template <bool kAdd>
    __device__ static void tap(Sum& s, const char* at)
    {
#pragma unroll
        for (int r = 0; r < kRuns; ++r) {
            const uint4 q = *reinterpret_cast<const uint4*>(at + r * 256 * static_cast<int>(sizeof(__half)));
            const unsigned words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                __half2 v;
                memcpy(&v, &words[k], sizeof(v));
                s[4 * r + k] = kAdd ? __hadd2(s[4 * r + k], v) : __hsub2(s[4 * r + k], v);
            }
        }
    }
    __device__ static void end(float (&acc)[PIXELS], const Sum& s)
    {
#pragma unroll
        for (int k = 0; k < PIXELS / 2; ++k) {
            acc[2 * k] += __low2float(s[k]);
            acc[2 * k + 1] += __high2float(s[k]);
        }
    }
    __device__ static void store(__half* p, float v) { *p = __float2half_rn(v); }
};

// Adds (kAdd) or subtracts the taps of one list (global memory, read-only path: the offsets are the
// same for the whole warp, so each 16-byte load is one broadcast, and no shared-memory load is spent
// on them): 16 taps per iteration, then the last 0-15 four at a time (a list may be read up to
// LIST_SLACK entries past its end: the buffer has that slack).
template <typename T, bool kAdd>
__device__ __forceinline__ void walk(typename Lane<T>::Sum& s, const int32_t* __restrict__ list, int n,
    const char* base)
{
    const int4* block = reinterpret_cast<const int4*>(list);
    // Not unrolled further: one pass of 16 taps already amortizes the loop, and the code stays small.
#pragma unroll 1
    for (int m = n >> 4; m > 0; --m, block += 4) {
        int4 q[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            q[u] = __ldg(block + u);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            Lane<T>::template tap<kAdd>(s, base + q[u].x);
            Lane<T>::template tap<kAdd>(s, base + q[u].y);
            Lane<T>::template tap<kAdd>(s, base + q[u].z);
            Lane<T>::template tap<kAdd>(s, base + q[u].w);
        }
    }
#pragma unroll 1
    for (int rest = n & 15; rest > 0; rest -= 4, ++block) {
        const int4 q = __ldg(block);
        Lane<T>::template tap<kAdd>(s, base + q.x);
        if (rest > 1) {
            Lane<T>::template tap<kAdd>(s, base + q.y);
        }
        if (rest > 2) {
            Lane<T>::template tap<kAdd>(s, base + q.z);
        }
        if (rest > 3) {
            Lane<T>::template tap<kAdd>(s, base + q.w);
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(THREADS, 1) ternary_conv_kernel(LbdTernaryConvGeometry g, LaunchPlan plan,
    const T* __restrict__ x, const int32_t* __restrict__ lists, const float* __restrict__ scale,
    const float* __restrict__ bias, T* __restrict__ y)
{
    extern __shared__ int4 smem[];
    char* shared = reinterpret_cast<char*>(smem);
    T* tile_s = reinterpret_cast<T*>(shared);                                 // [chunk][pr][tw]
    int2* row_s = reinterpret_cast<int2*>(shared + plan.tile_bytes);          // [pr]

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int cin_g = g.c / g.group;
    const int cout_g = g.cout / g.group;
    const int oc_blocks = (cout_g + OC_BLOCK - 1) / OC_BLOCK;
    const int grp = blockIdx.y / oc_blocks;
    const int oc0 = grp * cout_g + (blockIdx.y - grp * oc_blocks) * OC_BLOCK;
    const int oc_count = min(OC_BLOCK, (grp + 1) * cout_g - oc0);
    const int tile_y = blockIdx.x / plan.tiles_x;
    const int oy0 = tile_y * plan.rows;
    const int ox0 = (blockIdx.x - tile_y * plan.tiles_x) * plan.tw;
    const T* x_group = x + (static_cast<size_t>(blockIdx.z) * g.c + static_cast<size_t>(grp) * cin_g) * g.h * g.w;

    // Per plane row (j, a, rr): its input row's offset in a channel (-1 outside the image) and first column.
    for (int r = tid; r < plan.pr; r += THREADS) {
        const int j = r / (g.stride_h * plan.hr);
        const int a = r / plan.hr - j * g.stride_h;
        const int iy = (oy0 + r % plan.hr) * g.stride_h + a - g.pad_top;
        row_s[r] = make_int2(iy >= 0 && iy < g.h ? iy * g.w : -1, ox0 * g.stride_w - g.pad_left + j * g.dilation_w);
    }

    // This thread stages column stage_x of every stage_step-th plane row (THREADS is a multiple of tw),
    // in every channel of the chunk: per element one (predicated) global load and one shared store.
    const int stage_x = tid & (plan.tw - 1);
    const int stage_step = THREADS >> plan.tw_shift;
    const int channel_elements = g.h * g.w;  // < 2^31: checked by make_plan
    const int plane_elements = plan.pr * plan.tw;
    const char* base = shared + Lane<T>::position(lane, 0) * static_cast<int>(sizeof(T));

    float acc[OC_WARP][PIXELS] = {};
    for (int k = 0; k < plan.chunks; ++k) {
        const int c0 = k * plan.chunk;
        const int chunk = min(plan.chunk, cin_g - c0);
        __syncthreads();  // the previous chunk is fully consumed (and row_s written)
        const T* x_chunk = x_group + static_cast<size_t>(c0) * channel_elements;
        for (int plane_row = tid >> plan.tw_shift; plane_row < plan.pr; plane_row += stage_step) {
            const int2 row = row_s[plane_row];
            const int ix = row.y + stage_x * g.stride_w;
            const bool inside = row.x >= 0 && ix >= 0 && ix < g.w;
            const T* from = x_chunk + (inside ? row.x + ix : 0);
            T* to = tile_s + plane_row * plan.tw + stage_x;
            for (int c = 0; c < chunk; ++c, from += channel_elements, to += plane_elements) {
                *to = inside ? __ldg(from) : T(0.0f);
            }
        }
        __syncthreads();

        // This warp's lists of chunk k: one pointer walked channel by channel (no per-channel index math).
        const size_t first_item = static_cast<size_t>(k) * g.cout + oc0 + warp * OC_WARP;
        const int32_t* list = lists + plan.count_words + first_item * plan.capacity;
        const int2* count = reinterpret_cast<const int2*>(lists) + first_item;
#pragma unroll
        for (int o = 0; o < OC_WARP; ++o, list += plan.capacity) {
            if (warp * OC_WARP + o < oc_count) {  // the same for the whole warp
                const int2 n = __ldg(count + o);
                typename Lane<T>::Sum s;
                Lane<T>::begin(s, acc[o]);
                walk<T, true>(s, list, n.x, base);
                walk<T, false>(s, list + round4(n.x), n.y, base);
                Lane<T>::end(acc[o], s);
            }
        }
    }

    // Epilogue: a lane's positions come in runs of 4 (float32) or 8 (float16) inside one tile row.
    constexpr int RUN = PIXELS / Lane<T>::kRuns;
#pragma unroll
    for (int r = 0; r < Lane<T>::kRuns; ++r) {
        const int p = Lane<T>::position(lane, r * RUN);
        const int oy = oy0 + (p >> plan.tw_shift);
        const int ox = ox0 + (p & (plan.tw - 1));
        if (oy >= g.oh) {
            continue;
        }
        const int columns = min(RUN, g.ow - ox);
#pragma unroll
        for (int o = 0; o < OC_WARP; ++o) {
            const int channel = warp * OC_WARP + o;
            if (channel < oc_count) {
                const int oc = oc0 + channel;
                const float sc = __ldg(scale + oc);
                const float bi = __ldg(bias + oc);
                T* out = y + ((static_cast<size_t>(blockIdx.z) * g.cout + oc) * g.oh + oy) * g.ow + ox;
#pragma unroll
                for (int k = 0; k < RUN; ++k) {
                    if (k < columns) {
                        Lane<T>::store(out + k, activate(fmaf(sc, acc[o][r * RUN + k], bi), g.activation));
                    }
                }
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
    const long long reach_h = static_cast<long long>(g->kh - 1) * g->dilation_h;
    const long long reach_w = static_cast<long long>(g->kw - 1) * g->dilation_w;
    if (reach_h > 4096 || reach_w > 4096 || g->kh > 64 || g->kw > 64 || g->stride_h > 64) {
        return "kernel, stride and dilation make the staged input tile larger than the shared-memory budget";
    }
    const int cin_g = g->c / g->group;
    const int taps = g->kh * g->kw;
    plan->tw = 8;
    plan->tw_shift = 3;
    while (plan->tw < MAX_TW && plan->tw < g->ow) {
        plan->tw *= 2;
        plan->tw_shift += 1;
    }
    // A map shorter than a tile is staged only over its own rows; the positions past them read the
    // slack after the tile (SLACK_BYTES) and are never stored.
    plan->rows = POSITIONS / plan->tw < g->oh ? POSITIONS / plan->tw : g->oh;
    plan->tiles_x = (g->ow + plan->tw - 1) / plan->tw;
    plan->hr = plan->rows + static_cast<int>(reach_h / g->stride_h);
    plan->pr = g->kw * g->stride_h * plan->hr;
    const size_t plane_bytes = sizeof(float) * static_cast<size_t>(plan->pr) * plan->tw;
    const size_t fixed = sizeof(int32_t) * 2 * static_cast<size_t>(plan->pr);  // the plane-row table
    const bool short_map = plan->rows * plan->tw < POSITIONS;
    const size_t reserved = fixed + (short_map ? SLACK_BYTES : 0);
    const size_t fit = SMEM_BUDGET > reserved ? (SMEM_BUDGET - reserved) / plane_bytes : 0;
    plan->chunk = static_cast<int>(fit < static_cast<size_t>(MAX_CHANNEL_CHUNK) ? fit : MAX_CHANNEL_CHUNK);
    plan->chunk = plan->chunk < cin_g ? plan->chunk : cin_g;
    if (plan->chunk < 1) {
        return "kernel, stride and dilation make the staged input tile larger than the shared-memory budget";
    }
    plan->chunks = (cin_g + plan->chunk - 1) / plan->chunk;
    plan->capacity = (plan->chunk * taps + 3) / 4 * 4 + 4;
    plan->tile_bytes = static_cast<int>(plane_bytes * plan->chunk);
    plan->smem = static_cast<size_t>(plan->tile_bytes) + reserved;
    const long long counts = 2LL * g->cout * plan->chunks;
    plan->count_words = static_cast<int>((counts + 3) / 4 * 4);
    const long long tiles = static_cast<long long>((g->oh + plan->rows - 1) / plan->rows) * plan->tiles_x;
    const long long oc_blocks = static_cast<long long>(g->group) * ((g->cout / g->group + OC_BLOCK - 1) / OC_BLOCK);
    if (tiles > 2147483647LL || oc_blocks > 65535 || g->n > 65535 || counts > (1LL << 28)
        || static_cast<long long>(g->h) * g->w > 2147483647LL) {
        return "output too large for one launch (tiles, output-channel blocks or batch beyond the CUDA grid)";
    }
    plan->grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(oc_blocks), static_cast<unsigned>(g->n));
    return nullptr;
}

size_t tap_list_bytes(const LbdTernaryConvGeometry& g, const LaunchPlan& plan)
{
    // + LIST_SLACK: walk reads the last list's entries four at a time.
    return sizeof(int32_t) * (plan.count_words + static_cast<size_t>(g.cout) * plan.chunks * plan.capacity + LIST_SLACK);
}

bool valid_dtype(int32_t dtype)
{
    return dtype == LBD_FLOAT32 || dtype == LBD_FLOAT16;
}

template <typename T>
int32_t run(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, const void* x, const int32_t* lists,
    const float* scale, const float* bias, void* y, cudaStream_t stream)
{
    ternary_conv_kernel<T><<<plan.grid, THREADS, plan.smem, stream>>>(g, plan, static_cast<const T*>(x), lists,
        scale, bias, static_cast<T*>(y));
    return static_cast<int32_t>(cudaGetLastError());
}

int32_t run_dtype(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, int32_t dtype, const void* x,
    const int32_t* lists, const float* scale, const float* bias, void* y, cudaStream_t stream)
{
    return dtype == LBD_FLOAT32 ? run<float>(g, plan, x, lists, scale, bias, y, stream)
                                : run<__half>(g, plan, x, lists, scale, bias, y, stream);
}

int32_t prepare(const LbdTernaryConvGeometry& g, const LaunchPlan& plan, int32_t dtype, const uint8_t* w,
    int32_t row_stride, int32_t* lists, cudaStream_t stream)
{
    const int items = g.cout * plan.chunks;
    const int element_bytes = dtype == LBD_FLOAT32 ? 4 : 2;
    build_tap_lists<<<(items + PREPARE_THREADS - 1) / PREPARE_THREADS, PREPARE_THREADS, 0, stream>>>(g, plan,
        element_bytes, w, row_stride, lists);
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
        || !valid_dtype(dtype)) {
        return -1;
    }
    return prepare(*geometry, plan, dtype, w_packed, w_row_stride, static_cast<int32_t*>(tap_lists),
        static_cast<cudaStream_t>(stream));
}

extern "C" int32_t lbd_ternary_conv_run(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const void* tap_lists, const float* scale, const float* bias, void* y, void* stream)
{
    LaunchPlan plan;
    if (make_plan(geometry, &plan) != nullptr || !valid_dtype(dtype)) {
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
        || !valid_dtype(dtype)) {
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
