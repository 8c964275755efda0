// TernaryConv public API (ternary_conv.h): weight checks, kernel-variant choice and the run
// loop that feeds output tiles to the tile kernel and applies the fused epilogue.
#include "ternary_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>

#include "patterns.h"
#include "plan.h"
#include "reference.h"
#include "tile_kernel.h"

namespace lbdeploy {

Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "sigmoid") return Activation::kSigmoid;
  throw KernelError("TernaryConv activation must be none, relu or sigmoid, got '" + name + "'");
}

void ConvParams::validate() const {
  if (kernel_h < 1 || kernel_w < 1) throw KernelError("TernaryConv kernel_shape values must be >= 1");
  if (stride_h < 1 || stride_w < 1) throw KernelError("TernaryConv strides must be >= 1");
  if (dilation_h < 1 || dilation_w < 1) throw KernelError("TernaryConv dilations must be >= 1");
  if (pad_top < 0 || pad_left < 0 || pad_bottom < 0 || pad_right < 0) throw KernelError("TernaryConv pads must be >= 0");
  if (group < 1) throw KernelError("TernaryConv group must be >= 1");
}

namespace {

enum class Path { kReference, kTiles };

// The tile kernel for LBDEPLOY_KERNEL (unset / "optimized": the best one this CPU runs).
tile::TileKernel choose_tile_kernel(const std::string& wanted) {
#if defined(__x86_64__) || defined(__i386__)
  const bool has_avx512 = __builtin_cpu_supports("avx512f");
  const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (wanted == "avx512" || (wanted == "optimized" && has_avx512)) {
    if (!has_avx512) throw KernelError("LBDEPLOY_KERNEL=avx512 but this CPU has no AVX-512F; unset it");
    return tile::avx512_kernel();
  }
  if (wanted == "avx2" || (wanted == "optimized" && has_avx2)) {
    if (!has_avx2) throw KernelError("LBDEPLOY_KERNEL=avx2 but this CPU has no AVX2; unset it");
    return tile::avx2_kernel();
  }
#elif defined(__aarch64__)
  if (wanted == "neon" || wanted == "optimized") return tile::neon_kernel();
#endif
  if (wanted == "scalar" || wanted == "optimized") return tile::scalar_kernel();
  throw KernelError("LBDEPLOY_KERNEL='" + wanted +
                    "' is not a kernel of this build; use optimized, reference, scalar or this CPU's vector set "
                    "(avx512, avx2 on x86-64; neon on aarch64)");
}

// The fused activation; one instantiation per kind so the loops using it vectorize.
template <Activation kAct>
inline float activate(float v) {
  if constexpr (kAct == Activation::kRelu) return std::max(v, 0.0f);
  if constexpr (kAct == Activation::kSigmoid) return 1.0f / (1.0f + std::exp(-v));
  return v;
}

// Calls body(activate<act>) with the activation as a compile-time constant.
template <class Body>
void with_activation(Activation act, Body&& body) {
  switch (act) {
    case Activation::kNone:
      body([](float v) { return activate<Activation::kNone>(v); });
      break;
    case Activation::kRelu:
      body([](float v) { return activate<Activation::kRelu>(v); });
      break;
    case Activation::kSigmoid:
      body([](float v) { return activate<Activation::kSigmoid>(v); });
      break;
  }
}

// out[i] = act(scale * sums[i] + bias); out may equal sums.
void write_out(const float* sums, int64_t count, float scale, float bias, Activation act, float* out) {
  with_activation(act, [&](auto f) {
    for (int64_t i = 0; i < count; ++i) out[i] = f(scale * sums[i] + bias);
  });
}

// Writes one finished tile (sums for kBlock channels) into Y with the fused epilogue.
struct Epilogue {
  const float* acc;           // [kBlock][kernel.rows][kernel.width]
  const tile::TileKernel& kernel;
  const InputLayout& layout;
  const Shape4& ys;
  const float* scale;         // of the tile's first channel
  const float* bias;
  Activation act;
  float* y;                   // plane of the tile's first channel in this batch item

  // Flat layout: tile row r covers flat indices f = oy * wq + ox from f0 + r * row_stride.
  void flat_tile(int64_t channels, int64_t f0, int64_t row_stride) const {
    for (int r = 0; r < kernel.rows; ++r) {
      const int64_t f = f0 + r * row_stride;
      int64_t oy = f / layout.wq, ox = f % layout.wq, k = 0;
      while (k < kernel.width && oy < ys.h) {
        const int64_t segment = std::min<int64_t>(kernel.width - k, layout.wq - ox);
        const int64_t count = std::max<int64_t>(0, std::min(segment, ys.w - ox));
        for (int64_t o = 0; o < channels; ++o) {
          write_out(acc + (o * kernel.rows + r) * kernel.width + k, count, scale[o], bias[o], act,
                    y + (o * ys.h + oy) * ys.w + ox);
        }
        k += segment;
        ox = 0;
        ++oy;
      }
    }
  }

  // Lane layout: lane L of position (yl + r, ox + column) is output row L * lane_rows + yl + r.
  void lane_tile(int64_t channels, int64_t start) const {
    const int64_t lanes = layout.lanes, columns = kernel.width / lanes;
    const int64_t yl = start / layout.row_stride, ox = (start % layout.row_stride) / lanes;
    const int64_t count = std::min(columns, ys.w - ox);
    const int64_t rows = std::min<int64_t>(kernel.rows, layout.lane_rows - yl);
    with_activation(act, [&](auto f) {
      for (int64_t o = 0; o < channels; ++o) {
        const float s = scale[o], b = bias[o];
        for (int64_t r = 0; r < rows; ++r) {
          const float* sums = acc + (o * kernel.rows + r) * kernel.width;
          for (int64_t lane = 0; lane < lanes; ++lane) {
            const int64_t oy = lane * layout.lane_rows + yl + r;
            if (oy >= ys.h) break;
            float* out = y + (o * ys.h + oy) * ys.w + ox;
            for (int64_t k = 0; k < count; ++k) out[k] = f(s * sums[k * lanes + lane] + b);
          }
        }
      }
    });
  }
};

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

}  // namespace

class TernaryConvImpl {
 public:
  ConvParams params;
  int64_t cout = 0;
  // Exactly one weight form is kept: packed bytes (decoded once the input channels are known)
  // or int8 values with a known cin_per_group.
  std::vector<uint8_t> packed;
  int64_t row_bytes = 0;
  Path path = Path::kTiles;
  tile::TileKernel kernel{};

  struct Prepared {
    int64_t cin_per_group = 0;
    std::vector<int8_t> weights;  // [cout][K]
    PatternProgram program;
  };

  TernaryConvImpl(const ConvParams& p, int64_t out_channels) : params(p), cout(out_channels) {
    params.validate();
    if (cout < 1 || cout % params.group) {
      throw KernelError("TernaryConv needs a positive number of output channels divisible by group (" +
                        std::to_string(params.group) + "), got " + std::to_string(cout));
    }
    const char* env = std::getenv("LBDEPLOY_KERNEL");
    const std::string wanted = env && *env ? env : "optimized";
    if (wanted == "reference") {
      path = Path::kReference;
    } else {
      kernel = choose_tile_kernel(wanted);
    }
  }

  void set_weights(int64_t cin_per_group, std::vector<int8_t> weights) {
    auto prepared = std::make_shared<Prepared>();
    prepared->cin_per_group = cin_per_group;
    prepared->weights = std::move(weights);
    if (path == Path::kTiles) {
      prepared->program = build_pattern_program(params, prepared->weights, cout, cin_per_group);
    }
    prepared_ = prepared;
  }

  std::shared_ptr<const Prepared> prepared_for(int64_t cin_per_group) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (prepared_ && prepared_->cin_per_group == cin_per_group) return prepared_;
    if (packed.empty()) {
      throw KernelError("TernaryConv input has " + std::to_string(cin_per_group * params.group) +
                        " channels but the int8 weights expect " + std::to_string(prepared_->cin_per_group * params.group));
    }
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
    set_weights(cin_per_group, std::move(weights));
    return prepared_;
  }

  std::shared_ptr<const TilePlan> plan_for(const Prepared& prepared, const Shape4& x, const Shape4& y) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (!plan_ || !plan_->layout.same_input(x) || plan_program_ != &prepared.program) {
      plan_ = std::make_shared<TilePlan>(
          make_tile_plan(params, prepared.program, x, y.h, y.w, kernel.rows, kernel.width, kernel.lanes));
      plan_program_ = &prepared.program;
    }
    return plan_;
  }

  // The zero-padded scratch buffer for layout (64-byte aligned, so lane-layout loads are whole
  // cache lines); reused across runs when no other run holds it.
  float* scratch_for(const InputLayout& layout, std::unique_lock<std::mutex>& lock, std::vector<float>& local) {
    constexpr size_t kAlignFloats = 16;
    lock = std::unique_lock<std::mutex>(scratch_mutex_, std::try_to_lock);
    std::vector<float>& buffer = lock.owns_lock() ? scratch_ : local;
    const size_t size = layout.buffer_floats + kAlignFloats;
    const bool fits = lock.owns_lock() && scratch_layout_.same_input(layout.input) && scratch_.size() == size;
    if (!fits) {
      buffer.assign(size, 0.0f);
      if (lock.owns_lock()) scratch_layout_ = layout;
    }
    const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
    const uintptr_t mask = kAlignFloats * sizeof(float) - 1;
    return reinterpret_cast<float*>((address + mask) & ~mask);
  }

 private:
  std::mutex state_mutex_;
  std::shared_ptr<const Prepared> prepared_;
  std::shared_ptr<const TilePlan> plan_;
  const PatternProgram* plan_program_ = nullptr;
  std::mutex scratch_mutex_;
  std::vector<float> scratch_;
  InputLayout scratch_layout_;
};

TernaryConv::TernaryConv(std::unique_ptr<TernaryConvImpl> impl) : impl_(std::move(impl)) {}
TernaryConv::TernaryConv(TernaryConv&&) noexcept = default;
TernaryConv& TernaryConv::operator=(TernaryConv&&) noexcept = default;
TernaryConv::~TernaryConv() = default;

TernaryConv TernaryConv::from_packed(const ConvParams& params, const uint8_t* data, int64_t cout, int64_t row_bytes) {
  auto impl = std::make_unique<TernaryConvImpl>(params, cout);
  if (row_bytes < 1) throw KernelError("packed TernaryConv weights need at least one byte per output channel");
  check_code_bytes(data, cout, row_bytes);
  impl->packed.assign(data, data + cout * row_bytes);
  impl->row_bytes = row_bytes;
  return TernaryConv(std::move(impl));
}

TernaryConv TernaryConv::from_int8(const ConvParams& params, const int8_t* data, int64_t cout, int64_t cin_per_group) {
  auto impl = std::make_unique<TernaryConvImpl>(params, cout);
  const int64_t count = cout * cin_per_group * params.kernel_h * params.kernel_w;
  for (int64_t i = 0; i < count; ++i) {
    if (data[i] < -1 || data[i] > 1) {
      throw KernelError("int8 TernaryConv weights must be -1, 0 or +1; found " + std::to_string(data[i]) +
                        " at flat index " + std::to_string(i));
    }
  }
  impl->set_weights(cin_per_group, std::vector<int8_t>(data, data + count));
  return TernaryConv(std::move(impl));
}

int64_t TernaryConv::out_channels() const { return impl_->cout; }

Shape4 TernaryConv::output_shape(const Shape4& x) const {
  const ConvParams& p = impl_->params;
  if (x.n < 1 || x.c < 1 || x.h < 1 || x.w < 1) throw KernelError("TernaryConv input must be a non-empty [N, C, H, W] tensor");
  if (x.c % p.group) {
    throw KernelError("TernaryConv input channels (" + std::to_string(x.c) + ") are not divisible by group (" +
                      std::to_string(p.group) + ")");
  }
  const int64_t oh = (x.h + p.pad_top + p.pad_bottom - p.dilation_h * (p.kernel_h - 1) - 1) / p.stride_h + 1;
  const int64_t ow = (x.w + p.pad_left + p.pad_right - p.dilation_w * (p.kernel_w - 1) - 1) / p.stride_w + 1;
  if (x.h + p.pad_top + p.pad_bottom < p.dilation_h * (p.kernel_h - 1) + 1 ||
      x.w + p.pad_left + p.pad_right < p.dilation_w * (p.kernel_w - 1) + 1) {
    throw KernelError("TernaryConv input " + std::to_string(x.h) + "x" + std::to_string(x.w) +
                      " is smaller than the dilated kernel");
  }
  return Shape4{x.n, impl_->cout, oh, ow};
}

void TernaryConv::run(const float* x, const Shape4& xs, const float* scale, const float* bias, float* y,
                      const ParallelFor& parallel_for) const {
  TernaryConvImpl& impl = *impl_;
  const ConvParams& p = impl.params;
  const Shape4 ys = output_shape(xs);
  const auto prepared = impl.prepared_for(xs.c / p.group);
  const int64_t plane = ys.h * ys.w;

  if (impl.path == Path::kReference) {
    parallel_for(static_cast<size_t>(ys.n * ys.c), [&](size_t item) {
      const int64_t n = static_cast<int64_t>(item) / ys.c, o = static_cast<int64_t>(item) % ys.c;
      float* out = y + (n * ys.c + o) * plane;
      reference_channel(p, prepared->weights, ys.c, x, xs, ys.h, ys.w, n, o, out);
      write_out(out, plane, scale[o], bias[o], p.activation, out);
    });
    return;
  }

  const auto plan = impl.plan_for(*prepared, xs, ys);
  const InputLayout& layout = plan->layout;
  std::unique_lock<std::mutex> scratch_lock;
  std::vector<float> local;
  float* buffer = impl.scratch_for(layout, scratch_lock, local);
  parallel_for(static_cast<size_t>(xs.n * xs.c), [&](size_t item) {
    copy_input(p, layout, x, static_cast<int64_t>(item) / xs.c, static_cast<int64_t>(item) % xs.c, buffer);
  });

  // Work items are runs of kTilesPerItem tiles (a few output rows: their input stays in L2);
  // each item runs every channel block over all its tiles in turn, so one block's program and
  // branch pattern repeat back to back.
  constexpr int64_t kTilesPerItem = 2;
  const PatternProgram& program = prepared->program;
  const tile::TileKernel kernel = impl.kernel;
  const int64_t tiles = static_cast<int64_t>(plan->tile_starts.size());
  const int64_t items_per_batch = (tiles + kTilesPerItem - 1) / kTilesPerItem;
  const int64_t cout_g = ys.c / p.group;
  parallel_for(static_cast<size_t>(xs.n * items_per_batch), [&](size_t item) {
    const int64_t n = static_cast<int64_t>(item) / items_per_batch;
    const int64_t first_tile = (static_cast<int64_t>(item) % items_per_batch) * kTilesPerItem;
    const int64_t last_tile = std::min(tiles, first_tile + kTilesPerItem);
    alignas(64) float acc[tile::kBlock * tile::kMaxTileFloats];
    for (int64_t b = 0; b < program.blocks(); ++b) {
      const int32_t* counts = program.counts.data() + b * 2 * tile::kPatterns;
      const int32_t* offsets = plan->offsets.data() + program.block_start[static_cast<size_t>(b)];
      const int64_t g = b / program.blocks_per_group;
      const int64_t first = g * cout_g + (b % program.blocks_per_group) * tile::kBlock;
      const int64_t valid = std::min<int64_t>(tile::kBlock, (g + 1) * cout_g - first);
      for (int64_t t = first_tile; t < last_tile; ++t) {
        const int64_t f0 = plan->tile_starts[static_cast<size_t>(t)];
        kernel.fn(buffer + n * layout.batch_stride + f0, plan->row_stride, counts, offsets, acc);
        const Epilogue epilogue{acc, kernel, layout, ys, scale + first, bias + first, p.activation,
                                y + (n * ys.c + first) * plane};
        if (layout.lanes > 1) {
          epilogue.lane_tile(valid, f0);
        } else {
          epilogue.flat_tile(valid, f0, plan->row_stride);
        }
      }
    }
  });
}

}  // namespace lbdeploy
