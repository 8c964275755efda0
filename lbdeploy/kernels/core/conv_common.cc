// Shared TernaryConv / QTernaryConv helpers (see conv_common.h).
#include "conv_common.h"

#include <cstdlib>

namespace lbdeploy {

Shape4 conv_output_shape(const ConvParams& p, const Shape4& x, int64_t cout, const char* op) {
  const std::string name(op);
  if (x.n < 1 || x.c < 1 || x.h < 1 || x.w < 1) throw KernelError(name + " input must be a non-empty [N, C, H, W] tensor");
  if (x.c % p.group) {
    throw KernelError(name + " input channels (" + std::to_string(x.c) + ") are not divisible by group (" +
                      std::to_string(p.group) + ")");
  }
  const int64_t oh = (x.h + p.pad_top + p.pad_bottom - p.dilation_h * (p.kernel_h - 1) - 1) / p.stride_h + 1;
  const int64_t ow = (x.w + p.pad_left + p.pad_right - p.dilation_w * (p.kernel_w - 1) - 1) / p.stride_w + 1;
  if (x.h + p.pad_top + p.pad_bottom < p.dilation_h * (p.kernel_h - 1) + 1 ||
      x.w + p.pad_left + p.pad_right < p.dilation_w * (p.kernel_w - 1) + 1) {
    throw KernelError(name + " input " + std::to_string(x.h) + "x" + std::to_string(x.w) +
                      " is smaller than the dilated kernel");
  }
  return Shape4{x.n, cout, oh, ow};
}

void check_code_bytes(const uint8_t* data, int64_t cout, int64_t row_bytes) {
  for (int64_t i = 0; i < cout * row_bytes; ++i) {
    const uint8_t byte = data[i];
    for (int shift = 0; shift < 8; shift += 2) {
      if (((byte >> shift) & 3) == 3) {
        throw KernelError("packed TernaryConv weights contain the invalid 2-bit code 3 (output channel " +
                          std::to_string(i / row_bytes) + ", byte " + std::to_string(i % row_bytes) +
                          "); re-export the model with lbdeploy.ops.ternary_conv.pack_ternary");
      }
    }
  }
}

std::vector<int8_t> decode_packed(const std::vector<uint8_t>& packed, int64_t cout, int64_t row_bytes,
                                  int64_t cin_per_group, const ConvParams& params) {
  const int64_t k = cin_per_group * params.kernel_h * params.kernel_w;
  if ((k + 3) / 4 != row_bytes) {
    throw KernelError("packed TernaryConv weights have " + std::to_string(row_bytes) +
                      " bytes per output channel, but an input with " + std::to_string(cin_per_group * params.group) +
                      " channels needs ceil(" + std::to_string(k) + "/4) = " + std::to_string((k + 3) / 4));
  }
  std::vector<int8_t> weights(static_cast<size_t>(cout * k));
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t t = 0; t < k; ++t) {
      const int code = (packed[static_cast<size_t>(o * row_bytes + t / 4)] >> (2 * (t % 4))) & 3;
      weights[static_cast<size_t>(o * k + t)] = static_cast<int8_t>(code == 1 ? 1 : (code == 2 ? -1 : 0));
    }
  }
  return weights;
}

std::string wanted_kernel() {
  const char* env = std::getenv("LBDEPLOY_KERNEL");
  return env && *env ? env : "optimized";
}

}  // namespace lbdeploy
