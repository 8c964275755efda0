// TernaryConv public API (ternary_conv.h): weight checks, kernel-variant choice and the run
// loop that feeds output tiles to the tile kernel and applies the fused epilogue.
#include "ternary_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>

#include "conv_common.h"
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
  const float* acc;           // [kBlock][plan.rows][acc_row], plan.width floats per row used
  int64_t acc_row;
  const TilePlan& plan;
  const InputLayout& layout;
  const Shape4& ys;
  const float* scale;         // of the tile's first channel
  const float* bias;
  Activation act;
  float* y;                   // plane of the tile's first channel in this batch item

  // Tile row r covers flat indices f = oy * wq + ox from f0 + r * row_stride.
  void write(int64_t channels, int64_t f0, int64_t row_stride) const {
    for (int r = 0; r < plan.rows; ++r) {
      const int64_t f = f0 + r * row_stride;
      int64_t oy = f / layout.wq, ox = f % layout.wq, k = 0;
      while (k < plan.width && oy < ys.h) {
        const int64_t segment = std::min<int64_t>(plan.width - k, layout.wq - ox);
        const int64_t count = std::max<int64_t>(0, std::min(segment, ys.w - ox));
        for (int64_t o = 0; o < channels; ++o) {
          write_out(acc + (o * plan.rows + r) * acc_row + k, count, scale[o], bias[o], act,
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
    // Programs by chunk size (built when a shape first needs one; guarded by state_mutex_).
    mutable std::map<int64_t, std::shared_ptr<const PatternProgram>> programs;
  };

  // A shape's tiles with their program (the chunk size follows the tiles' cache footprint).
  struct Plan {
    TilePlan tiles;
    std::shared_ptr<const PatternProgram> program;
    std::shared_ptr<const Prepared> prepared;  // kept alive so the pointer identifies it
  };

  TernaryConvImpl(const ConvParams& p, int64_t out_channels) : params(p), cout(out_channels) {
    params.validate();
    if (cout < 1 || cout % params.group) {
      throw KernelError("TernaryConv needs a positive number of output channels divisible by group (" +
                        std::to_string(params.group) + "), got " + std::to_string(cout));
    }
    const std::string wanted = wanted_kernel();
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
    prepared_ = prepared;
  }

  // Input channels per program step: as many as keep one tile's input within kTileInputBytes (a
  // chunk of at least the group's channels is one step per block).
  static int64_t chunk_channels(const TilePlan& tiles, int64_t cin_per_group) {
    constexpr int64_t kTileInputBytes = 24 * 1024;
    const int64_t chunk = kTileInputBytes / (tiles.channel_floats * static_cast<int64_t>(sizeof(float)));
    return std::clamp<int64_t>(chunk, 1, cin_per_group);
  }

  std::shared_ptr<const Prepared> prepared_for(int64_t cin_per_group) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (prepared_ && prepared_->cin_per_group == cin_per_group) return prepared_;
    if (packed.empty()) {
      throw KernelError("TernaryConv input has " + std::to_string(cin_per_group * params.group) +
                        " channels but the int8 weights expect " + std::to_string(prepared_->cin_per_group * params.group));
    }
    std::vector<int8_t> weights = decode_packed(packed, cout, row_bytes, cin_per_group, params);
    set_weights(cin_per_group, std::move(weights));
    return prepared_;
  }

  std::shared_ptr<const Plan> plan_for(const std::shared_ptr<const Prepared>& prepared_ptr, const Shape4& x,
                                       const Shape4& y) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    const Prepared& prepared = *prepared_ptr;
    if (plan_ && plan_->tiles.layout.same_input(x) && plan_->prepared == prepared_ptr) return plan_;
    auto plan = std::make_shared<Plan>();
    plan->tiles = make_tile_plan(params, x, y.h, y.w, kernel);
    const int64_t chunk = chunk_channels(plan->tiles, prepared.cin_per_group);
    auto& program = prepared.programs[chunk];
    if (!program) {
      program = std::make_shared<const PatternProgram>(
          build_pattern_program(params, prepared.weights, cout, prepared.cin_per_group, chunk));
    }
    plan->program = program;
    plan->prepared = prepared_ptr;
    set_tap_offsets(params, *program, plan->tiles);
    plan_ = plan;
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
  std::shared_ptr<const Plan> plan_;
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
  return conv_output_shape(impl_->params, x, impl_->cout, "TernaryConv");
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

  const auto plan = impl.plan_for(prepared, xs, ys);
  const TilePlan& tiles = plan->tiles;
  const PatternProgram& program = *plan->program;
  const InputLayout& layout = tiles.layout;
  std::unique_lock<std::mutex> scratch_lock;
  std::vector<float> local;
  float* buffer = impl.scratch_for(layout, scratch_lock, local);
  const tile::TileKernel kernel = impl.kernel;
  const auto copy_channel = [&](size_t item) {
    copy_input(p, layout, kernel.gather, x, static_cast<int64_t>(item) / xs.c, static_cast<int64_t>(item) % xs.c,
               buffer);
  };
  // A small input is copied by the calling thread: waking the pool for it costs more than it saves.
  constexpr int64_t kSerialCopyFloats = 16 * 1024;
  if (xs.n * xs.c * xs.h * xs.w <= kSerialCopyFloats) {
    for (size_t item = 0; item < static_cast<size_t>(xs.n * xs.c); ++item) copy_channel(item);
  } else {
    parallel_for(static_cast<size_t>(xs.n * xs.c), copy_channel);
  }

  // Work items (WorkSplit): neighbouring tiles over a range of channel blocks. Within a chunk of
  // input channels every block of the range runs over a tile while the chunk's tile input sits in
  // L1. The tile kernel accumulates an item's sums in `sums` ([block][channel][tile row][item
  // column]); then the epilogue writes them to Y: lane layout, one transpose per channel row with
  // scale, bias and relu fused (whole vectors, not a few floats per output row); flat and column
  // layouts, per tile.
  const tile::TileFn tile_fn = kernel.shapes[tiles.shape].fn;
  const bool lanes = layout.lanes > 1;
  const WorkSplit split = WorkSplit::make(tiles, xs.n, program.block_count);
  const int64_t pass_steps = steps_per_pass(tiles, program);
  const int64_t cout_g = ys.c / p.group;
  parallel_for(static_cast<size_t>(split.items), [&](size_t index) {
    const WorkItem item = split.item(static_cast<int64_t>(index));
    const int64_t n = item.n, block_begin = item.block_begin, block_end = item.block_end;
    // Sums of blocks block_begin .. block_end - 1, in a per-thread buffer reused across items and
    // runs (a fresh allocation of this size is an mmap with page faults on every item).
    thread_local std::vector<float> storage;
    const size_t sums_size = static_cast<size_t>((block_end - block_begin) * split.block_size + 16);
    if (storage.size() < sums_size) storage.resize(sums_size);
    float* sums = aligned_floats(storage.data());
    for (int64_t s0 = 0; s0 < program.steps(); s0 += pass_steps) {
      for (int64_t slot = 0; slot < item.tiles; ++slot) {
        const float* base =
            buffer + n * layout.batch_stride + tiles.tile_starts[static_cast<size_t>(item.first_tile + slot)];
        for (int64_t s = s0; s < s0 + pass_steps; ++s) {
          const size_t step = static_cast<size_t>(s);
          const int64_t block = program.step_block[step];
          if (block < block_begin || block >= block_end) continue;
          tile_fn(base, tiles.row_stride, program.counts.data() + s * 2 * tile::kPatterns,
                  tiles.offsets.data() + program.step_start[step],
                  sums + (block - block_begin) * split.block_size + slot * tiles.width, split.sums_row,
                  program.step_first[step] == 0);
        }
      }
    }
    if (!lanes) {
      for (int64_t slot = 0; slot < item.tiles; ++slot) {
        const int64_t f0 = tiles.tile_starts[static_cast<size_t>(item.first_tile + slot)];
        for (int64_t b = block_begin; b < block_end; ++b) {
          const int64_t g = b / program.blocks_per_group;
          const int64_t first = g * cout_g + (b % program.blocks_per_group) * tile::kBlock;
          const int64_t valid = std::min<int64_t>(tile::kBlock, (g + 1) * cout_g - first);
          const FlatEpilogue epilogue{sums + (b - block_begin) * split.block_size + slot * tiles.width,
                                      split.sums_row, tiles, layout, ys, scale + first, bias + first,
                                      p.activation, y + (n * ys.c + first) * plane};
          epilogue.write(valid, f0, tiles.row_stride);
        }
      }
      return;
    }
    // Lane L of sums row r is output row L * lane_rows + yl + r, from column ox0.
    const int64_t yl = item.tile_row * tiles.rows;
    const int64_t columns = tiles.width / layout.lanes;
    const int64_t ox0 = item.column * columns;
    const int64_t count = std::min(item.tiles * columns, ys.w - ox0);
    std::vector<float*> rows(static_cast<size_t>(layout.lanes));
    for (int64_t b = block_begin; b < block_end; ++b) {
      // Block b holds channels first .. first + valid - 1 of its group, as its slots 0 .. valid - 1.
      const int64_t g = b / program.blocks_per_group;
      const int64_t first = g * cout_g + (b % program.blocks_per_group) * tile::kBlock;
      const int64_t valid = std::min<int64_t>(tile::kBlock, (g + 1) * cout_g - first);
      for (int64_t o = 0; o < valid; ++o) {
        const int64_t c = first + o;
        for (int64_t r = 0; r < tiles.rows && yl + r < layout.lane_rows; ++r) {
          float* values = sums + (b - block_begin) * split.block_size + o * split.channel_size + r * split.sums_row;
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
    }
  });
}

}  // namespace lbdeploy
