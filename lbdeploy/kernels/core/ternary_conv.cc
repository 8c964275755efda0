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

// Writes one finished flat-layout tile (sums for kBlock channels) into Y with the fused epilogue.
struct FlatEpilogue {
  const float* acc;           // [kBlock][kernel.rows][kernel.width]
  const tile::TileKernel& kernel;
  const InputLayout& layout;
  const Shape4& ys;
  const float* scale;         // of the tile's first channel
  const float* bias;
  Activation act;
  float* y;                   // plane of the tile's first channel in this batch item

  // Tile row r covers flat indices f = oy * wq + ox from f0 + r * row_stride.
  void write(int64_t channels, int64_t f0, int64_t row_stride) const {
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
};

// The first 64-byte aligned address at or after data (data must have 15 floats of slack).
float* aligned_floats(float* data) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(data);
  const uintptr_t mask = 16 * sizeof(float) - 1;
  return reinterpret_cast<float*>((address + mask) & ~mask);
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
      prepared->program = build_pattern_program(params, prepared->weights, cout, cin_per_group, chunk_channels());
    }
    prepared_ = prepared;
  }

  // Input channels per program step: as many as keep one tile's input within kTileInputBytes.
  int64_t chunk_channels() const {
    constexpr int64_t kTileInputBytes = 24 * 1024;
    const int64_t rows = kernel.rows + (params.kernel_h - 1) * params.dilation_h;
    const int64_t width = kernel.width + (params.kernel_w - 1) * params.dilation_w * kernel.lanes;
    return std::max<int64_t>(1, kTileInputBytes / (rows * width * static_cast<int64_t>(sizeof(float))));
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
    return aligned_floats(buffer.data());
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
  const tile::TileKernel kernel = impl.kernel;
  parallel_for(static_cast<size_t>(xs.n * xs.c), [&](size_t item) {
    copy_input(p, layout, kernel.gather, x, static_cast<int64_t>(item) / xs.c, static_cast<int64_t>(item) % xs.c,
               buffer);
  });

  // Work items: lane layout, up to kGroupTiles neighbouring tiles of one tile row (groups of
  // near-equal size); flat layout, one tile. For each tile the program's steps run chunk by chunk
  // of input channels, every channel block over one chunk while the chunk's tile input sits in
  // L1. The tile kernel accumulates an item's sums in `sums` ([block][channel][tile row][item
  // column]); then the epilogue writes them to Y: lane layout, one transpose per channel row with
  // scale, bias and relu fused (whole vectors, not a few floats per output row); flat layout,
  // per tile.
  constexpr int64_t kGroupTiles = 4;
  const PatternProgram& program = prepared->program;
  const int64_t tiles = static_cast<int64_t>(plan->tile_starts.size());
  const bool lanes = layout.lanes > 1;
  const int64_t tile_rows = lanes ? (layout.lane_rows + kernel.rows - 1) / kernel.rows : tiles;
  const int64_t tiles_per_row = tiles / tile_rows;
  const int64_t group_tiles = lanes ? kGroupTiles : 1;
  const int64_t groups_per_row = (tiles_per_row + group_tiles - 1) / group_tiles;
  const int64_t items_per_batch = tile_rows * groups_per_row;
  const int64_t cout_g = ys.c / p.group;
  const int64_t sums_row = group_tiles * kernel.width;
  const int64_t channel_floats = kernel.rows * sums_row;
  const int64_t block_floats = tile::kBlock * channel_floats;
  parallel_for(static_cast<size_t>(xs.n * items_per_batch), [&](size_t item) {
    const int64_t n = static_cast<int64_t>(item) / items_per_batch;
    const int64_t row = (static_cast<int64_t>(item) % items_per_batch) / groups_per_row;
    const int64_t group = (static_cast<int64_t>(item) % items_per_batch) % groups_per_row;
    const int64_t group_begin = group * tiles_per_row / groups_per_row;
    const int64_t item_tiles = (group + 1) * tiles_per_row / groups_per_row - group_begin;
    std::unique_ptr<float[]> storage(new float[static_cast<size_t>(program.block_count * block_floats + 16)]);
    float* sums = aligned_floats(storage.get());
    const int64_t first_tile = row * tiles_per_row + group_begin;
    for (int64_t slot = 0; slot < item_tiles; ++slot) {
      const float* base = buffer + n * layout.batch_stride + plan->tile_starts[static_cast<size_t>(first_tile + slot)];
      for (int64_t s = 0; s < program.steps(); ++s) {
        const size_t step = static_cast<size_t>(s);
        kernel.fn(base, plan->row_stride, program.counts.data() + s * 2 * tile::kPatterns,
                  plan->offsets.data() + program.step_start[step],
                  sums + program.step_block[step] * block_floats + slot * kernel.width, sums_row,
                  program.step_first[step] == 0);
      }
    }
    if (!lanes) {
      const int64_t f0 = plan->tile_starts[static_cast<size_t>(first_tile)];
      for (int64_t b = 0; b < program.block_count; ++b) {
        const int64_t g = b / program.blocks_per_group;
        const int64_t first = g * cout_g + (b % program.blocks_per_group) * tile::kBlock;
        const int64_t valid = std::min<int64_t>(tile::kBlock, (g + 1) * cout_g - first);
        const FlatEpilogue epilogue{sums + b * block_floats, kernel, layout, ys, scale + first, bias + first,
                                    p.activation, y + (n * ys.c + first) * plane};
        epilogue.write(valid, f0, plan->row_stride);
      }
      return;
    }
    // Lane L of sums row r is output row L * lane_rows + yl + r, from column ox0.
    const int64_t yl = row * kernel.rows;
    const int64_t columns = kernel.width / layout.lanes;
    const int64_t ox0 = group_begin * columns;
    const int64_t count = std::min(item_tiles * columns, ys.w - ox0);
    std::vector<float*> rows(static_cast<size_t>(layout.lanes));
    for (int64_t c = 0; c < ys.c; ++c) {
      // Channel c's sums sit in its group's block (c % cout_g) / kBlock, channel (c % cout_g) % kBlock.
      const int64_t slot = (c / cout_g * program.blocks_per_group) * tile::kBlock + c % cout_g;
      for (int64_t r = 0; r < kernel.rows && yl + r < layout.lane_rows; ++r) {
        float* values = sums + slot * channel_floats + r * sums_row;
        for (int64_t lane = 0; lane < layout.lanes; ++lane) {
          const int64_t oy = lane * layout.lane_rows + yl + r;
          rows[static_cast<size_t>(lane)] = oy < ys.h ? y + ((n * ys.c + c) * ys.h + oy) * ys.w + ox0 : nullptr;
        }
        if (p.activation == Activation::kSigmoid) {
          write_out(values, count * layout.lanes, scale[c], bias[c], p.activation, values);
          kernel.scatter(values, count, rows.data(), 1.0f, 0.0f, false);
        } else {
          kernel.scatter(values, count, rows.data(), scale[c], bias[c], p.activation == Activation::kRelu);
        }
      }
    }
  });
}

}  // namespace lbdeploy
