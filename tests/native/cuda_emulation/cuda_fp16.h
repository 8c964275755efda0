// CPU stand-in for cuda_fp16.h (see cuda_runtime.h here): __half as _Float16, round-to-nearest conversions.
#pragma once

struct __half {
    _Float16 value;
    __half() = default;
    explicit __half(float f) : value(static_cast<_Float16>(f)) {}
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }

// __half2: two halves; the adds round each lane to float16 as the hardware does.
struct __half2 {
    __half x, y;
};
inline __half2 __float2half2_rn(float f) { return __half2{__float2half_rn(f), __float2half_rn(f)}; }
inline __half2 __hadd2(__half2 a, __half2 b)
{
    return __half2{__float2half_rn(__half2float(a.x) + __half2float(b.x)), __float2half_rn(__half2float(a.y) + __half2float(b.y))};
}
inline __half2 __hsub2(__half2 a, __half2 b)
{
    return __half2{__float2half_rn(__half2float(a.x) - __half2float(b.x)), __float2half_rn(__half2float(a.y) - __half2float(b.y))};
}
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
