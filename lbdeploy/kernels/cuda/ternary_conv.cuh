/*
 * ai.lbdeploy::TernaryConv for NVIDIA GPUs: the plain C interface of the CUDA kernel.
 *
 * The op (docs/ops/TernaryConv.md):
 *   Y[n,o,y,x] = act(scale[o] * sum_{c,i,j} W[o,c,i,j] * Xpad[n, g(o)*Cg + c, y*sH + i*dH, x*sW + j*dW] + bias[o])
 * with W in {-1, 0, +1} given in the packed 2-bit layout (uint8 [Cout, ceil(K/4)], K = Cg*kH*kW,
 * codes 0 -> 0, 1 -> +1, 2 -> -1; code 3 is never written by the exporter and decodes as 0 here).
 *
 * This header has no CUDA or TensorRT includes so a C/C++ harness, the TensorRT plugin and a
 * ctypes loader can all use it. Pointers are device pointers; `stream` is a cudaStream_t (NULL for
 * the default stream). X and Y are NCHW float32 or float16; scale and bias are always float32.
 * float16 inputs are summed in float16 pairs per (output channel, input-channel chunk of up to 8
 * channels); chunk sums are accumulated in float32.
 *
 * To extend (a new activation, a new dtype): add the enum value here, handle it in ternary_conv.cu,
 * and add a shared test vector (lbdeploy/ops/vectors.py) so every backend is checked on it.
 */
#ifndef LBDEPLOY_TERNARY_CONV_CUH
#define LBDEPLOY_TERNARY_CONV_CUH

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fused activation, in the order of lbdeploy.ops.ternary_conv.ACTIVATIONS. */
enum LbdActivation { LBD_ACT_NONE = 0, LBD_ACT_RELU = 1, LBD_ACT_SIGMOID = 2 };

/* Element type of X and Y. */
enum LbdDType { LBD_FLOAT32 = 0, LBD_FLOAT16 = 1 };

/* Shapes and attributes of one TernaryConv call (ONNX Conv conventions). */
typedef struct LbdTernaryConvGeometry {
    int32_t n, c, h, w;             /* input X [n, c, h, w] */
    int32_t cout, oh, ow;           /* output Y [n, cout, oh, ow] */
    int32_t kh, kw;                 /* kernel_shape */
    int32_t stride_h, stride_w;     /* strides */
    int32_t pad_top, pad_left;      /* pads begin (the end pads only change oh/ow) */
    int32_t dilation_h, dilation_w; /* dilations */
    int32_t group;                  /* channel groups */
    int32_t activation;             /* enum LbdActivation */
} LbdTernaryConvGeometry;

/*
 * Check a geometry before launching: returns NULL when it is valid, else a static English message
 * saying which field is wrong (non-positive sizes, channels not divisible by group, an output size
 * that disagrees with the attributes, an input tile too large for shared memory, ...).
 */
const char* lbd_ternary_conv_check_geometry(const LbdTernaryConvGeometry* geometry);

/*
 * Bytes of one output channel's packed weight row: ceil(c/group*kh*kw / 4).
 */
int32_t lbd_ternary_conv_packed_row_bytes(const LbdTernaryConvGeometry* geometry);

/*
 * Bytes of the tap lists lbd_ternary_conv_prepare writes for a geometry (0 when it is invalid).
 * The weights are fixed, so a caller that runs the same weights many times (the TensorRT plugin)
 * prepares them once into a device buffer of this size and calls lbd_ternary_conv_run.
 */
int64_t lbd_ternary_conv_tap_list_bytes(const LbdTernaryConvGeometry* geometry);

/*
 * Enqueue the conversion of the packed weights into per-output-channel lists of +1 and -1 taps
 * (shared-memory offsets of the kernel's input tile, one list per channel chunk) in `tap_lists`
 * (device memory of lbd_ternary_conv_tap_list_bytes bytes), for runs in `dtype` (enum LbdDType: the
 * offsets are in bytes of the staged element type). Returns as lbd_ternary_conv_launch.
 */
int32_t lbd_ternary_conv_prepare(const LbdTernaryConvGeometry* geometry, int32_t dtype, const uint8_t* w_packed,
    int32_t w_row_stride, void* tap_lists, void* stream);

/*
 * Enqueue Y = TernaryConv(X, tap lists, scale, bias) on `stream`, with tap lists written by
 * lbd_ternary_conv_prepare for the same geometry and dtype. Work follows the non-zero taps only.
 */
int32_t lbd_ternary_conv_run(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const void* tap_lists, const float* scale, const float* bias, void* y, void* stream);

/*
 * Enqueue Y = TernaryConv(X, W, scale, bias) on `stream`: prepare + run with a stream-ordered
 * temporary tap-list buffer (for one-off calls and tests).
 *
 * Args: geometry (see above), dtype (enum LbdDType of x and y), x [n,c,h,w], w_packed (cout rows
 * of packed bytes, row o starting at byte o * w_row_stride; w_row_stride >= packed_row_bytes, e.g.
 * packed_row_bytes itself, or rows padded to whole int32 words as TensorRT receives them),
 * scale [cout] and bias [cout] float32, y [n,cout,oh,ow] (written).
 * Returns: 0 (cudaSuccess) when the kernel was enqueued; a cudaError_t value for a launch error;
 * -1 when the geometry, row stride or dtype is invalid (see lbd_ternary_conv_check_geometry).
 */
int32_t lbd_ternary_conv_launch(const LbdTernaryConvGeometry* geometry, int32_t dtype, const void* x,
    const uint8_t* w_packed, int32_t w_row_stride, const float* scale, const float* bias, void* y, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* LBDEPLOY_TERNARY_CONV_CUH */
