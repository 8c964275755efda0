// Pieces shared by the TernaryConv and QTernaryConv cores: the output shape of the geometry, the
// packed-weight check and decoding (docs/ops/TernaryConv.md's 2-bit layout), the kernel choice
// from LBDEPLOY_KERNEL. To add another op on the same weights, use these rather than restating them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ternary_conv.h"

namespace lbdeploy {

// Output shape [N, cout, OH, OW] of `params` on input x; throws KernelError (messages name `op`)
// when x is empty, its channels are not divisible by group, or it is smaller than the dilated kernel.
Shape4 conv_output_shape(const ConvParams& params, const Shape4& x, int64_t cout, const char* op);

// Throws KernelError naming the output channel and byte of the first 2-bit code 3 in data.
void check_code_bytes(const uint8_t* data, int64_t cout, int64_t row_bytes);

// int8 weights [cout][k] in {-1, 0, +1} from packed rows of row_bytes; throws KernelError when
// row_bytes is not ceil(k / 4) (the message says which input channel count would fit).
std::vector<int8_t> decode_packed(const std::vector<uint8_t>& packed, int64_t cout, int64_t row_bytes,
                                  int64_t cin_per_group, const ConvParams& params);

// The value of env LBDEPLOY_KERNEL ("optimized" when unset or empty).
std::string wanted_kernel();

}  // namespace lbdeploy
