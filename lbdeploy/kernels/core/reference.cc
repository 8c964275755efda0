// Direct-loop TernaryConv (see reference.h).
#include "reference.h"

namespace lbdeploy {

void reference_channel(const ConvParams& params, const std::vector<int8_t>& weights, int64_t cout, const float* x,
                       const Shape4& xs, int64_t out_h, int64_t out_w, int64_t n, int64_t o, float* acc) {
  const int64_t cin_g = xs.c / params.group;
  const int64_t g = o / (cout / params.group);
  const int64_t kh = params.kernel_h, kw = params.kernel_w;
  const int8_t* w = weights.data() + o * cin_g * kh * kw;
  for (int64_t oy = 0; oy < out_h; ++oy) {
    for (int64_t ox = 0; ox < out_w; ++ox) {
      float sum = 0.0f;
      for (int64_t c = 0; c < cin_g; ++c) {
        const float* plane = x + ((n * xs.c + g * cin_g + c) * xs.h) * xs.w;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t y = oy * params.stride_h + i * params.dilation_h - params.pad_top;
          if (y < 0 || y >= xs.h) continue;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t xx = ox * params.stride_w + j * params.dilation_w - params.pad_left;
            if (xx < 0 || xx >= xs.w) continue;
            const int8_t weight = w[(c * kh + i) * kw + j];
            if (weight > 0) sum += plane[y * xs.w + xx];
            if (weight < 0) sum -= plane[y * xs.w + xx];
          }
        }
      }
      acc[oy * out_w + ox] = sum;
    }
  }
}

}  // namespace lbdeploy
