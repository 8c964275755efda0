// Portable tile kernel: plain C++ on 4-float groups (the compiler vectorizes it for the
// baseline instruction set). Used where no better variant runs, and selectable for tests.
// Narrower shape for small maps (used twice): 1 group of 4 floats with 2 partial sums.
#include "tile_kernel.h"

namespace lbdeploy {
namespace tile {
namespace {

struct VecScalar {
  struct Reg {
    float v[4];
  };
  static constexpr bool kPlain = true;  // a struct, not a vector register (no Pin)
  static constexpr int kWidth = 4;
  static Reg zero() { return Reg{{0.0f, 0.0f, 0.0f, 0.0f}}; }
  static Reg load(const float* p) { return Reg{{p[0], p[1], p[2], p[3]}}; }
  static Reg add(Reg a, Reg b) { return Reg{{a.v[0] + b.v[0], a.v[1] + b.v[1], a.v[2] + b.v[2], a.v[3] + b.v[3]}}; }
  static Reg sub(Reg a, Reg b) { return Reg{{a.v[0] - b.v[0], a.v[1] - b.v[1], a.v[2] - b.v[2], a.v[3] - b.v[3]}}; }
  static void store(float* p, Reg a) {
    for (int k = 0; k < 4; ++k) p[k] = a.v[k];
  }
};

using Impl = TileImpl<VecScalar, 2, 1>;

using SmallImpl = TileImpl<VecScalar, 1, 1, 2>;

}  // namespace

TileKernel scalar_kernel() { return make_tile_kernel<Impl, SmallImpl, SmallImpl>(); }

}  // namespace tile
}  // namespace lbdeploy
