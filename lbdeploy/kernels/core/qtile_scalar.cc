// Portable QTernaryConv tile kernel (any CPU; LBDEPLOY_KERNEL=scalar forces it): groups of 4
// int32 values in plain C++, tiles of 1 row x 2 groups and 1 group with 2 partial sums.
#include "qtile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct QVecScalar {
  struct Reg {
    int32_t v[4];
  };
  using In = int16_t;
  using Out = int32_t;
  static constexpr bool kWidening = true;
  static constexpr bool kPlain = true;  // a struct, not a vector register (no Pin)
  static constexpr int kWidth = 4;
  static Reg zero() { return Reg{{0, 0, 0, 0}}; }
  static Reg load(const int16_t* p) { return Reg{{p[0], p[1], p[2], p[3]}}; }
  static Reg add(Reg a, Reg b) { return Reg{{a.v[0] + b.v[0], a.v[1] + b.v[1], a.v[2] + b.v[2], a.v[3] + b.v[3]}}; }
  static Reg sub(Reg a, Reg b) { return Reg{{a.v[0] - b.v[0], a.v[1] - b.v[1], a.v[2] - b.v[2], a.v[3] - b.v[3]}}; }
  static void finish(int32_t* p, Reg total, bool accumulate) {
    for (int k = 0; k < 4; ++k) p[k] = accumulate ? p[k] + total.v[k] : total.v[k];
  }
};

// The epilogue one value at a time (the compiler's fmaf and rintf: one rounding, ties to even).
struct EpilogueScalar {
  using FReg = float;
  using IReg = int32_t;
  static constexpr int kLanes = 1;
  static IReg load(const int32_t* p) { return *p; }
  static void store(int32_t* p, IReg a) { *p = a; }
  static FReg to_float(IReg a) { return static_cast<float>(a); }
  static FReg fma(FReg m, FReg x, FReg b) { return __builtin_fmaf(m, x, b); }
  static FReg min(FReg a, FReg b) { return a < b ? a : b; }
  static FReg max(FReg a, FReg b) { return a > b ? a : b; }
  static IReg round(FReg a) { return static_cast<int32_t>(__builtin_rintf(a)); }
  static IReg add(IReg a, IReg b) { return a + b; }
  static FReg set1(float a) { return a; }
  static IReg set1i(int32_t a) { return a; }
  static IReg shift_or(IReg a, IReg b, int bits) { return a | (b << bits); }
  static void store_bytes(uint8_t* p, IReg a) { *p = static_cast<uint8_t>(a); }
};

using Large = TileImpl<QVecScalar, 2, 1>;
using Small = TileImpl<QVecScalar, 1, 1, 2>;

}  // namespace

QTileKernel scalar_qkernel() { return make_qtile_kernel<Large, Small, Small, EpilogueScalar>(); }

QRequantizeFn scalar_requantize() { return &RequantizeImpl<EpilogueScalar>::run; }

}  // namespace tile
}  // namespace lbdeploy
