// CPU stand-in for cuda_fp16.h (see cuda_runtime.h here): __half as _Float16, round-to-nearest conversions.
#pragma once

struct __half {
    _Float16 value;
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }
