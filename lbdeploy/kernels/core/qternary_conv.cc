// QTernaryConv public API (qternary_conv.h): limits, weight checks, kernel choice, the run loop
// and the requantizing epilogue.
#include "qternary_conv.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "conv_common.h"
#include "plan.h"
#include "qtile_kernel.h"
#include "requantize.h"

namespace lbdeploy {

namespace {

// The tile kernel for LBDEPLOY_KERNEL (unset / "optimized": the best one this CPU runs).
tile::QTileKernel choose_qtile_kernel(const std::string& wanted) {
#if defined(__x86_64__) || defined(__i386__)
  const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (wanted == "avx512" || (wanted == "optimized" && has_avx512)) {
    if (!has_avx512) throw KernelError("LBDEPLOY_KERNEL=avx512 but this CPU has no AVX-512BW; unset it");
    return tile::avx512bw_qkernel();
  }
  if (wanted == "avx2" || (wanted == "optimized" && has_avx2)) {
    if (!has_avx2) throw KernelError("LBDEPLOY_KERNEL=avx2 but this CPU has no AVX2 with FMA; unset it");
    return tile::avx2_qkernel();
  }
#elif defined(__aarch64__)
  if (wanted == "neon" || wanted == "optimized") return tile::neon_qkernel();
#endif
  if (wanted == "scalar" || wanted == "optimized") return tile::scalar_qkernel();
  throw KernelError("LBDEPLOY_KERNEL='" + wanted +
                    "' is not a kernel of this build; use optimized, reference, scalar or this CPU's vector set "
                    "(avx512, avx2 on x86-64; neon on aarch64)");
}

// Copies channel c of batch item n (NCHW input) into its flat-layout place in buffer (plan.h's
// InputLayout with one lane: plane (a, b) row rr column q holds padded input (rr * sH + a, q * sW + b))
// as x - x_zero_point; positions outside the input are never written, so they stay real 0.
void copy_channel(const ConvParams& p, const InputLayout& l, const uint8_t* x, int zero_point, int64_t n,
                  int64_t c, int16_t* buffer) {
  const Shape4& s = l.input;
  const uint8_t* src = x + (n * s.c + c) * s.h * s.w;
  int16_t* dst = buffer + n * l.batch_stride + c * l.channel_stride;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  for (int64_t a = 0; a < sh; ++a) {
    for (int64_t b = 0; b < sw; ++b) {
      int16_t* plane = dst + (a * sw + b) * l.plane_stride;
      const int64_t first = p.pad_left - b, last = s.w - 1 + p.pad_left - b;  // q * sW in [first, last]
      const int64_t q_begin = first > 0 ? (first + sw - 1) / sw : 0;
      const int64_t q_end = last >= 0 ? std::min(l.wq, last / sw + 1) : 0;
      for (int64_t rr = 0; rr < l.hl; ++rr) {
        const int64_t iy = rr * sh + a - p.pad_top;
        if (iy < 0 || iy >= s.h) continue;
        const uint8_t* row = src + iy * s.w - first;
        int16_t* out = plane + rr * l.row_stride;
        if (sw == 1) {
          for (int64_t q = q_begin; q < q_end; ++q) out[q] = static_cast<int16_t>(row[q] - zero_point);
        } else {
          for (int64_t q = q_begin; q < q_end; ++q) out[q] = static_cast<int16_t>(row[q * sw] - zero_point);
        }
      }
    }
  }
}

using Int16x8 = int16_t __attribute__((vector_size(16)));
using Uint8x8 = uint8_t __attribute__((vector_size(8)));

// In-register transpose of 8 vectors of 8 int16 (r[i][j] becomes r[j][i]): three rounds of
// interleaves (16-, 32-, then 64-bit), portable vector code (SSE2 unpacks, NEON zips).
inline void transpose8x8(Int16x8 (&r)[8]) {
  constexpr Int16x8 lo16 = {0, 8, 1, 9, 2, 10, 3, 11}, hi16 = {4, 12, 5, 13, 6, 14, 7, 15};
  constexpr Int16x8 lo32 = {0, 1, 8, 9, 2, 3, 10, 11}, hi32 = {4, 5, 12, 13, 6, 7, 14, 15};
  constexpr Int16x8 lo64 = {0, 1, 2, 3, 8, 9, 10, 11}, hi64 = {4, 5, 6, 7, 12, 13, 14, 15};
  Int16x8 a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo16);
    a[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi16);
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 2; ++i) {
      b[4 * h + 2 * i] = __builtin_shuffle(a[4 * h + i], a[4 * h + 2 + i], lo32);
      b[4 * h + 2 * i + 1] = __builtin_shuffle(a[4 * h + i], a[4 * h + 2 + i], hi32);
    }
  }
  for (int i = 0; i < 4; ++i) {
    r[2 * i] = __builtin_shuffle(b[i], b[4 + i], lo64);
    r[2 * i + 1] = __builtin_shuffle(b[i], b[4 + i], hi64);
  }
}

// Copies input row iy of batch item n of an NHWC input into the flat layout (every channel's
// plane row), as x - x_zero_point: blocks of 8 pixels x 8 channels are transposed in registers.
void copy_row_nhwc(const ConvParams& p, const InputLayout& l, const uint8_t* x, int zero_point, int64_t n,
                   int64_t iy, int16_t* buffer) {
  const Shape4& s = l.input;
  const int64_t channels = s.c, sw = p.stride_w;
  const uint8_t* src = x + (n * s.h + iy) * s.w * channels;
  const int64_t py = iy + p.pad_top, a = py % p.stride_h, rr = py / p.stride_h;
  const Int16x8 zp = {static_cast<int16_t>(zero_point), static_cast<int16_t>(zero_point), static_cast<int16_t>(zero_point),
                      static_cast<int16_t>(zero_point), static_cast<int16_t>(zero_point), static_cast<int16_t>(zero_point),
                      static_cast<int16_t>(zero_point), static_cast<int16_t>(zero_point)};
  for (int64_t b = 0; b < sw; ++b) {
    int16_t* dst = buffer + n * l.batch_stride + (a * sw + b) * l.plane_stride + rr * l.row_stride;
    const int64_t first = p.pad_left - b, last = s.w - 1 + p.pad_left - b;  // q * sW in [first, last]
    const int64_t q_begin = first > 0 ? (first + sw - 1) / sw : 0;
    const int64_t q_end = last >= 0 ? std::min(l.wq, last / sw + 1) : 0;
    // Element (c, q) is src[(q * sW - first) * C + c]; it goes to dst[c * channel_stride + q].
    int64_t c0 = 0;
    for (; c0 + 8 <= channels; c0 += 8) {
      int64_t q = q_begin;
      for (; q + 8 <= q_end; q += 8) {
        Int16x8 r[8];
        for (int i = 0; i < 8; ++i) {
          Uint8x8 bytes;
          __builtin_memcpy(&bytes, src + ((q + i) * sw - first) * channels + c0, 8);
          r[i] = __builtin_convertvector(bytes, Int16x8) - zp;
        }
        transpose8x8(r);
        for (int j = 0; j < 8; ++j) __builtin_memcpy(dst + (c0 + j) * l.channel_stride + q, &r[j], 16);
      }
      for (; q < q_end; ++q) {
        for (int64_t c = c0; c < c0 + 8; ++c) {
          dst[c * l.channel_stride + q] = static_cast<int16_t>(src[(q * sw - first) * channels + c] - zero_point);
        }
      }
    }
    for (int64_t c = c0; c < channels; ++c) {
      for (int64_t q = q_begin; q < q_end; ++q) {
        dst[c * l.channel_stride + q] = static_cast<int16_t>(src[(q * sw - first) * channels + c] - zero_point);
      }
    }
  }
}

}  // namespace

class QTernaryConvImpl {
 public:
  ConvParams params;
  int64_t cout = 0;
  std::vector<uint8_t> packed;
  int64_t row_bytes = 0;
  bool reference = false;
  bool channels_last = false;
  tile::QTileKernel kernel{};
  tile::QRequantizeFn requantize = nullptr;

  // One input shape's tiles with their program (the chunk size follows the tiles' footprint).
  struct Plan {
    TilePlan tiles;
    std::shared_ptr<const PatternProgram> program;
    std::shared_ptr<const std::vector<int8_t>> weights;  // kept alive so the pointer identifies them
  };

  QTernaryConvImpl(const ConvParams& p, int64_t out_channels) : params(p), cout(out_channels) {
    params.validate();
    if (params.activation == Activation::kSigmoid) {
      throw KernelError("QTernaryConv activation must be none or relu; keep a sigmoid layer as float TernaryConv");
    }
    if (cout < 1 || cout % params.group) {
      throw KernelError("QTernaryConv needs a positive number of output channels divisible by group (" +
                        std::to_string(params.group) + "), got " + std::to_string(cout));
    }
    if (params.kernel_h * params.kernel_w > kQMaxKernelTaps) {
      throw KernelError("QTernaryConv kernels accept kH * kW <= " + std::to_string(kQMaxKernelTaps) + ", got " +
                        std::to_string(params.kernel_h) + "x" + std::to_string(params.kernel_w) +
                        "; export this layer as float TernaryConv");
    }
    const std::string wanted = wanted_kernel();
    reference = wanted == "reference";
    if (!reference) kernel = choose_qtile_kernel(wanted);
    requantize = reference ? tile::scalar_requantize() : kernel.requantize;
  }

  // Decoded int8 weights [cout][K] for cin_per_group input channels per group (cached; packed
  // rows of ceil(K/4) bytes fit up to 4 channel counts of a 1x1 kernel, so it may change).
  std::shared_ptr<const std::vector<int8_t>> weights_for(int64_t cin_per_group) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!weights_ || cin_per_group_ != cin_per_group) {
      weights_ = std::make_shared<const std::vector<int8_t>>(decode_packed(packed, cout, row_bytes, cin_per_group, params));
      cin_per_group_ = cin_per_group;
      programs_.clear();
    }
    return weights_;
  }

  // Input channels per program step: as many as keep one tile's input within 24 KiB (L1), and few
  // enough that no output channel has more than kQMaxKernelTaps non-zero weights in a step (its
  // 16-bit sums stay exact). The program cuts near-equal chunks of at most that many channels.
  int64_t chunk_channels(const TilePlan& tiles, const std::vector<int8_t>& weights, int64_t cin_per_group) const {
    constexpr int64_t kTileInputBytes = 24 * 1024;
    const int64_t by_cache = kTileInputBytes / (tiles.channel_floats * static_cast<int64_t>(sizeof(int16_t)));
    const int64_t taps = params.kernel_h * params.kernel_w;
    const int64_t k = cin_per_group * taps;
    for (int64_t limit = std::clamp<int64_t>(by_cache, 1, cin_per_group); limit > 1; --limit) {
      const int64_t chunks = (cin_per_group + limit - 1) / limit;
      const int64_t chunk = (cin_per_group + chunks - 1) / chunks;
      bool exact = true;
      for (int64_t o = 0; o < cout && exact; ++o) {
        const int8_t* row = weights.data() + o * k;
        for (int64_t t0 = 0; t0 < k && exact; t0 += chunk * taps) {
          int64_t nonzero = 0;
          for (int64_t t = t0; t < std::min(k, t0 + chunk * taps); ++t) nonzero += row[t] != 0;
          exact = nonzero <= kQMaxKernelTaps;
        }
      }
      if (exact) return limit;
    }
    return 1;  // kH * kW <= kQMaxKernelTaps: one channel's taps always fit
  }

  std::shared_ptr<const Plan> plan_for(const std::shared_ptr<const std::vector<int8_t>>& weights, const Shape4& x,
                                       const Shape4& y) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (plan_ && plan_->tiles.layout.same_input(x) && plan_->weights == weights) return plan_;
    auto plan = std::make_shared<Plan>();
    plan->tiles = make_tile_plan(params, x, y.h, y.w, kernel.geometry(), /*flat_only=*/true);
    const int64_t cin_per_group = x.c / params.group;
    const int64_t chunk = chunk_channels(plan->tiles, *weights, cin_per_group);
    auto& program = programs_[{weights, chunk}];
    if (!program) {
      program = std::make_shared<const PatternProgram>(build_pattern_program(params, *weights, cout, cin_per_group, chunk));
    }
    plan->program = program;
    plan->weights = weights;
    set_tap_offsets(params, *program, plan->tiles);
    plan_ = plan;
    return plan_;
  }

  // The zero-initialized scratch buffer for layout; reused across runs when no other run holds it
  // (only the input's own positions are ever written, so the padding stays 0).
  int16_t* scratch_for(const InputLayout& layout, std::unique_lock<std::mutex>& lock, std::vector<int16_t>& local) {
    lock = std::unique_lock<std::mutex>(scratch_mutex_, std::try_to_lock);
    std::vector<int16_t>& buffer = lock.owns_lock() ? scratch_ : local;
    const bool fits = lock.owns_lock() && scratch_layout_.same_input(layout.input) && scratch_.size() == layout.buffer_floats;
    if (!fits) {
      buffer.assign(layout.buffer_floats, 0);
      if (lock.owns_lock()) scratch_layout_ = layout;
    }
    return buffer.data();
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<const std::vector<int8_t>> weights_;
  int64_t cin_per_group_ = 0;
  std::shared_ptr<const Plan> plan_;
  // Programs by (weights, chunk size); the key holds the weights, so their address is not reused.
  std::map<std::pair<std::shared_ptr<const std::vector<int8_t>>, int64_t>, std::shared_ptr<const PatternProgram>>
      programs_;
  std::mutex scratch_mutex_;
  std::vector<int16_t> scratch_;
  InputLayout scratch_layout_;
};

namespace {

// Element strides of a 4-D tensor of logical shape s in NCHW or NHWC memory order.
struct Strides {
  int64_t n, c, h, w;
  static Strides of(const Shape4& s, bool channels_last) {
    return channels_last ? Strides{s.h * s.w * s.c, 1, s.w * s.c, s.c} : Strides{s.c * s.h * s.w, s.h * s.w, s.w, 1};
  }
};

// Exact sums acc[oy][ox] = sum W * (x - zp) over the in-bounds taps of output channel o (padding
// is real 0), one add or subtract per non-zero weight.
void reference_sums(const ConvParams& p, const std::vector<int8_t>& weights, int64_t cout, const uint8_t* x,
                    const Shape4& xs, const Strides& st, const Shape4& ys, int zp, int64_t n, int64_t o, int32_t* acc) {
  const int64_t cin_g = xs.c / p.group;
  const int64_t g = o / (cout / p.group);
  const int8_t* w = weights.data() + o * cin_g * p.kernel_h * p.kernel_w;
  for (int64_t oy = 0; oy < ys.h; ++oy) {
    for (int64_t ox = 0; ox < ys.w; ++ox) {
      int32_t sum = 0;
      for (int64_t c = 0; c < cin_g; ++c) {
        const uint8_t* plane = x + n * st.n + (g * cin_g + c) * st.c;
        for (int64_t i = 0; i < p.kernel_h; ++i) {
          const int64_t iy = oy * p.stride_h + i * p.dilation_h - p.pad_top;
          if (iy < 0 || iy >= xs.h) continue;
          for (int64_t j = 0; j < p.kernel_w; ++j) {
            const int64_t ix = ox * p.stride_w + j * p.dilation_w - p.pad_left;
            if (ix < 0 || ix >= xs.w) continue;
            const int8_t weight = w[(c * p.kernel_h + i) * p.kernel_w + j];
            const int32_t value = static_cast<int32_t>(plane[iy * st.h + ix * st.w]) - zp;
            if (weight > 0) sum += value;
            if (weight < 0) sum -= value;
          }
        }
      }
      acc[oy * ys.w + ox] = sum;
    }
  }
}

}  // namespace

QTernaryConv::QTernaryConv(std::unique_ptr<QTernaryConvImpl> impl) : impl_(std::move(impl)) {}
QTernaryConv::QTernaryConv(QTernaryConv&&) noexcept = default;
QTernaryConv& QTernaryConv::operator=(QTernaryConv&&) noexcept = default;
QTernaryConv::~QTernaryConv() = default;

QTernaryConv QTernaryConv::from_packed(const ConvParams& params, const uint8_t* data, int64_t cout,
                                       int64_t row_bytes, bool channels_last) {
  auto impl = std::make_unique<QTernaryConvImpl>(params, cout);
  impl->channels_last = channels_last;
  if (row_bytes < 1) throw KernelError("packed QTernaryConv weights need at least one byte per output channel");
  check_code_bytes(data, cout, row_bytes);
  impl->packed.assign(data, data + cout * row_bytes);
  impl->row_bytes = row_bytes;
  return QTernaryConv(std::move(impl));
}

int64_t QTernaryConv::out_channels() const { return impl_->cout; }

Shape4 QTernaryConv::output_shape(const Shape4& x) const {
  const ConvParams& p = impl_->params;
  const Shape4 y = conv_output_shape(p, x, impl_->cout, "QTernaryConv");
  const int64_t k = x.c / p.group * p.kernel_h * p.kernel_w;
  if (k > kQMaxK) {
    throw KernelError("QTernaryConv kernels accept K = C/group * kH * kW <= " + std::to_string(kQMaxK) +
                      " (exact sums), got " + std::to_string(k) + "; split the layer or keep it float");
  }
  return y;
}

void QTernaryConv::run(const uint8_t* x, const Shape4& xs, const Quantization& q, const float* scale,
                       const float* bias, uint8_t* y, const ParallelFor& parallel_for) const {
  QTernaryConvImpl& impl = *impl_;
  const ConvParams& p = impl.params;
  const Shape4 ys = output_shape(xs);
  const auto weights = impl.weights_for(xs.c / p.group);
  const Requantizer requantizer(q, scale, bias, ys.c, p.activation == Activation::kRelu);
  const int64_t plane = ys.h * ys.w;
  const Strides out = Strides::of(ys, impl.channels_last);
  if (impl.reference) {
    const Strides in = Strides::of(xs, impl.channels_last);
    parallel_for(static_cast<size_t>(ys.n * ys.c), [&](size_t item) {
      const int64_t n = static_cast<int64_t>(item) / ys.c, o = static_cast<int64_t>(item) % ys.c;
      thread_local std::vector<int32_t> acc;
      acc.resize(static_cast<size_t>(plane));
      reference_sums(p, *weights, ys.c, x, xs, in, ys, q.x_zero_point, n, o, acc.data());
      impl.requantize(acc.data(), 0, requantizer.channel(o), 1, plane, y + n * out.n + o * out.c, out.c, out.w);
    });
    return;
  }

  const auto plan = impl.plan_for(weights, xs, ys);
  const TilePlan& tiles = plan->tiles;
  const PatternProgram& program = *plan->program;
  const InputLayout& layout = tiles.layout;
  std::unique_lock<std::mutex> scratch_lock;
  std::vector<int16_t> local;
  int16_t* buffer = impl.scratch_for(layout, scratch_lock, local);
  // NCHW: one item per channel; NHWC: one per input row (all its channels, transposed).
  const int64_t per_batch = impl.channels_last ? xs.h : xs.c;
  const auto copy = [&](size_t item) {
    const int64_t n = static_cast<int64_t>(item) / per_batch, i = static_cast<int64_t>(item) % per_batch;
    if (impl.channels_last) {
      copy_row_nhwc(p, layout, x, q.x_zero_point, n, i, buffer);
    } else {
      copy_channel(p, layout, x, q.x_zero_point, n, i, buffer);
    }
  };
  // A small input is copied by the calling thread: waking the pool for it costs more than it saves.
  constexpr int64_t kSerialCopyElements = 32 * 1024;
  if (xs.n * xs.c * xs.h * xs.w <= kSerialCopyElements) {
    for (size_t item = 0; item < static_cast<size_t>(xs.n * per_batch); ++item) copy(item);
  } else {
    parallel_for(static_cast<size_t>(xs.n * per_batch), copy);
  }

  // Work items as for TernaryConv (WorkSplit, steps_per_pass); each item's int32 sums go to a
  // per-thread buffer ([block][channel][tile row][item column]) and are requantized per tile row.
  const tile::QTileFn tile_fn = impl.kernel.shapes[tiles.shape].fn;
  const WorkSplit split = WorkSplit::make(tiles, xs.n, program.block_count);
  const int64_t pass_steps = steps_per_pass(tiles, program);
  const int64_t cout_g = ys.c / p.group;
  parallel_for(static_cast<size_t>(split.items), [&](size_t index) {
    const WorkItem item = split.item(static_cast<int64_t>(index));
    thread_local std::vector<int32_t> storage;
    const size_t sums_size = static_cast<size_t>((item.block_end - item.block_begin) * split.block_size);
    if (storage.size() < sums_size) storage.resize(sums_size);
    int32_t* sums = storage.data();
    for (int64_t s0 = 0; s0 < program.steps(); s0 += pass_steps) {
      for (int64_t slot = 0; slot < item.tiles; ++slot) {
        const int16_t* base =
            buffer + item.n * layout.batch_stride + tiles.tile_starts[static_cast<size_t>(item.first_tile + slot)];
        for (int64_t s = s0; s < s0 + pass_steps; ++s) {
          const size_t step = static_cast<size_t>(s);
          const int64_t block = program.step_block[step];
          if (block < item.block_begin || block >= item.block_end) continue;
          tile_fn(base, tiles.row_stride, program.counts.data() + s * 2 * tile::kPatterns,
                  tiles.offsets.data() + program.step_start[step],
                  sums + (block - item.block_begin) * split.block_size + slot * tiles.width, split.sums_row,
                  program.step_first[step] == 0);
        }
      }
    }
    // Tile row r of a tile at flat position f0 covers f = f0 + r * row_stride + k = oy * wq + ox.
    for (int64_t slot = 0; slot < item.tiles; ++slot) {
      const int64_t f0 = tiles.tile_starts[static_cast<size_t>(item.first_tile + slot)];
      for (int64_t b = item.block_begin; b < item.block_end; ++b) {
        const int64_t g = b / program.blocks_per_group;
        const int64_t first = g * cout_g + (b % program.blocks_per_group) * tile::kBlock;
        const int64_t valid = std::min<int64_t>(tile::kBlock, (g + 1) * cout_g - first);
        const int32_t* block_sums = sums + (b - item.block_begin) * split.block_size + slot * tiles.width;
        for (int64_t r = 0; r < tiles.rows; ++r) {
          const int64_t f = f0 + r * tiles.row_stride;
          for (int64_t oy = f / layout.wq, ox = f % layout.wq, k = 0; k < tiles.width && oy < ys.h; ++oy, ox = 0) {
            const int64_t segment = std::min<int64_t>(tiles.width - k, layout.wq - ox);
            const int64_t count = std::max<int64_t>(0, std::min(segment, ys.w - ox));
            if (count > 0) {
              impl.requantize(block_sums + r * split.sums_row + k, tiles.rows * split.sums_row,
                              requantizer.channel(first), static_cast<int>(valid), count,
                              y + item.n * out.n + first * out.c + oy * out.h + ox * out.w, out.c, out.w);
            }
            k += segment;
          }
        }
      }
    }
  });
}

}  // namespace lbdeploy
