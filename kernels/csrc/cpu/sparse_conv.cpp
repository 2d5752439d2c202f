// Direct sparse conv2d on the CPU: forward, input gradient and weight gradient (at the kept
// weights only) of a compact weight, without im2col.
//
// Registers implementations only; the schemas and their semantics live in
// sparse_tickets/ops/native/library.py. The weight (O, C/groups, kH, kW) is the CSR index of its
// mask seen as the matrix (O, C/groups * kH * kW) plus its transpose (sparse_tickets.compact.
// CompactIndex); a column j is the tap (c, kh, kw) = (j / (kH*kW), j / kW % kH, j % kW).
//
// One idea serves all three (after SparseProp, Nikdan et al., ICML 2023): every kept weight
// (o, c, kh, kw) with value v adds v times a shifted window of input channel c to output channel
// o, so with the operands laid out so that the vectorised dimension is contiguous, a block of
// outputs is a sum over the row's kept weights of v * (a vector load at a per-weight offset),
// accumulated in registers:
//   "batch"  the batch is the vector: tensors are copied batch-minor, [N/BW][C][H][W][BW] with
//            BW = one SIMD width (the batch's tail lanes are zero, so any batch size is
//            exact), and a block is a few output pixels of one row;
//   "width"  the output width is the vector: the input is zero-padded and split by column phase
//            (column w = q * stride + r is stored at [r][q]), so that the columns one kept
//            weight reads for consecutive outputs are contiguous at any stride; a block is a
//            few output rows of one image.
// The input gradient is the same gather over the transposed index: input pixel (h, w) with
// h = a * sh + rh takes, from each kept (o, kh, kw) whose kh * dh leaves the same remainder
// rh (and likewise for w), v * dy[o][a - kh * dh / sh][...]; dy is zero-padded so no bound is
// ever tested in the inner loop. The weight gradient is, per kept weight, the dot product of
// dy[o] with its window of input channel c, eight kept weights at a time.
//
// Work is split between threads by images (batch-minor: blocks of one vector of images) when
// there are at least as many as threads: each thread lays out one image at a time in its own
// scratch, where it stays in cache while every channel of that image is computed, so the padded
// copies of the input and of dy cost no round trip through memory, and an op is one parallel
// region. With fewer images (one, a few) the work is split by output channel (forward, weight
// gradient) or input channel (input gradient), balanced by kept weights, over operands laid out
// once for the whole batch; each thread then walks the images (and, batch-minor, the output
// rows) outermost so that the input window every kept weight reads stays in cache.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "scratch.h"
#include "simd.h"

namespace sparse_tickets_cpu {
namespace {

using index_t = int32_t;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t n, int64_t multiple) { return ceil_div(n, multiple) * multiple; }

// ---------------------------------------------------------------------------------------------
// The geometry of one convolution.

struct Geometry {
  int64_t N, C, H, W;          // input
  int64_t O, Cg, kH, kW;       // weight: O x C/groups x kH x kW
  int64_t groups, Og;          // Og = O / groups
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t OH, OW;
  int64_t taps() const { return kH * kW; }
};

Geometry make_geometry(const char* op, at::IntArrayRef input, int64_t out_channels,
                       at::IntArrayRef kernel_size, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.size() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.size(),
              "-D");
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              op, ": kernel_size, stride, padding and dilation must be pairs");
  TORCH_CHECK(groups >= 1 && input[1] % groups == 0 && out_channels % groups == 0, op,
              ": groups must divide the input channels (", input[1], ") and the output "
              "channels (", out_channels, "), got ", groups);
  Geometry g;
  g.N = input[0], g.C = input[1], g.H = input[2], g.W = input[3];
  g.O = out_channels, g.groups = groups, g.Cg = g.C / groups, g.Og = g.O / groups;
  g.kH = kernel_size[0], g.kW = kernel_size[1];
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1];
  g.dh = dilation[0], g.dw = dilation[1];
  TORCH_CHECK(g.kH >= 1 && g.kW >= 1 && g.sh >= 1 && g.sw >= 1 && g.dh >= 1 && g.dw >= 1 &&
                  g.ph >= 0 && g.pw >= 0,
              op, ": kernel_size, stride and dilation must be positive and padding "
              "non-negative, got kernel_size ", kernel_size, ", stride ", stride, ", padding ",
              padding, ", dilation ", dilation);
  g.OH = (g.H + 2 * g.ph - g.dh * (g.kH - 1) - 1) / g.sh + 1;
  g.OW = (g.W + 2 * g.pw - g.dw * (g.kW - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.H + 2 * g.ph >= g.dh * (g.kH - 1) + 1 && g.W + 2 * g.pw >= g.dw * (g.kW - 1) + 1,
              op, ": the output would be empty for input ", input, ", kernel_size ",
              kernel_size, ", padding ", padding, ", dilation ", dilation);
  return g;
}

// The zero padding the input gradient's gather needs around dy (see the file's comment):
// dy row a - kh * dh / sh for a < ceil((ph + H) / sh), and likewise for columns.
struct GradPadding {
  int64_t top, left, rows, cols;  // rows, cols: the padded extent
};

GradPadding grad_padding(const Geometry& g, int64_t min_cols) {
  GradPadding p;
  p.top = (g.kH - 1) * g.dh / g.sh;
  p.left = (g.kW - 1) * g.dw / g.sw;
  p.rows = p.top + std::max(g.OH, ceil_div(g.ph + g.H, g.sh));
  p.cols = p.left + std::max({g.OW, ceil_div(g.pw + g.W, g.sw), min_cols});
  return p;
}

// ---------------------------------------------------------------------------------------------
// Thread partition: contiguous ranges of rows (channels) with about equal cost each.

template <typename F>
void for_balanced_parts(const std::vector<int64_t>& cost_prefix, int64_t work, F body) {
  const int64_t rows = int64_t(cost_prefix.size()) - 1;
  const int64_t threads =
      std::min<int64_t>(rows, work < 65536 ? 1 : std::max(1, at::get_num_threads()));
  if (threads <= 1) {
    if (rows > 0) body(int64_t(0), rows);
    return;
  }
  std::vector<int64_t> cuts(threads + 1, rows);
  cuts[0] = 0;
  const int64_t total = cost_prefix[rows];
  for (int64_t p = 1; p < threads; ++p) {
    const int64_t target = total * p / threads;
    const int64_t r = std::lower_bound(cost_prefix.begin(), cost_prefix.end(), target) -
                      cost_prefix.begin();
    cuts[p] = std::max(cuts[p - 1], std::min(rows, r));
  }
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      if (cuts[part] < cuts[part + 1]) body(cuts[part], cuts[part + 1]);
  });
}

// ---------------------------------------------------------------------------------------------
// The two inner kernels.

// dst[p * dst_step + k * W] = init + sum_{j < count} val[j] * src[off[j] + p * step + k * W]
// for P blocks p of NV vectors: P * NV accumulators, one broadcast per kept weight.
template <typename T, int P, int NV>
inline void gather_block(const T* __restrict src, int64_t step, const int64_t* __restrict off,
                         const T* __restrict val, int64_t count, T init, T* __restrict dst,
                         int64_t dst_step) {
  using S = Simd<T>;
  constexpr int W = S::W;
  typename S::V acc[P][NV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) acc[p][k] = S::set1(init);
  for (int64_t j = 0; j < count; ++j) {
    const auto v = S::set1(val[j]);
    const T* s = src + off[j];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k)
        acc[p][k] = S::fmadd(v, S::load(s + p * step + k * W), acc[p][k]);
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) S::store(dst + p * dst_step + k * W, acc[p][k]);
}

// gather_block over `blocks` consecutive blocks, as many at a time as 8 accumulators allow.
template <typename T, int NV>
void gather_run(const T* src, int64_t step, const int64_t* off, const T* val, int64_t count,
                T init, T* dst, int64_t dst_step, int64_t blocks) {
  constexpr int P = NV == 1 ? 8 : NV == 2 ? 4 : 2;
  int64_t b = 0;
  for (; b + P <= blocks; b += P)
    gather_block<T, P, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                           dst_step);
  if constexpr (P >= 8) {
    if (b + 4 <= blocks) {
      gather_block<T, 4, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                             dst_step);
      b += 4;
    }
  }
  if constexpr (P >= 4) {
    if (b + 2 <= blocks) {
      gather_block<T, 2, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                             dst_step);
      b += 2;
    }
  }
  for (; b < blocks; ++b)
    gather_block<T, 1, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                           dst_step);
}

// A row of `vectors` contiguous vectors, in pieces of at most four.
template <typename T>
void gather_wide(const T* src, int64_t step, const int64_t* off, const T* val, int64_t count,
                 T init, T* dst, int64_t dst_step, int64_t blocks, int64_t vectors) {
  constexpr int W = Simd<T>::W;
  for (int64_t k = 0; k < vectors; k += 4) {
    const T* s = src + k * W;
    T* d = dst + k * W;
    switch (std::min<int64_t>(4, vectors - k)) {
      case 4: gather_run<T, 4>(s, step, off, val, count, init, d, dst_step, blocks); break;
      case 3: gather_run<T, 3>(s, step, off, val, count, init, d, dst_step, blocks); break;
      case 2: gather_run<T, 2>(s, step, off, val, count, init, d, dst_step, blocks); break;
      default: gather_run<T, 1>(s, step, off, val, count, init, d, dst_step, blocks);
    }
  }
}

// acc[t][0:W] += sum_{r < rows, p < pixels, k < NV} g[r * grow + p * gstep + k * W] *
//                 x[off[t] + r * xrow + p * xstep + k * W]
// lane-wise, for J kept weights t: the weight gradient's dot products, J chains in flight.
// Several rows per call when rows are short (a 2x2 image, an 8-wide row), so that the
// accumulators' trip through memory is paid once per many products, not once per row.
template <typename T, int J, int NV>
inline void dot_block(const T* __restrict g, int64_t gstep, int64_t grow,
                      const T* __restrict x, int64_t xstep, int64_t xrow,
                      const int64_t* __restrict off, int64_t pixels, int64_t rows,
                      T* __restrict acc) {
  using S = Simd<T>;
  constexpr int W = S::W;
  typename S::V a[J];
  const T* xs[J];
#pragma GCC unroll 8
  for (int t = 0; t < J; ++t) a[t] = S::zero(), xs[t] = x + off[t];
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * grow;
    const int64_t xr = r * xrow;
    for (int64_t p = 0; p < pixels; ++p) {
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k) {
        const auto gv = S::load(gr + p * gstep + k * W);
#pragma GCC unroll 8
        for (int t = 0; t < J; ++t)
          a[t] = S::fmadd(gv, S::load(xs[t] + xr + p * xstep + k * W), a[t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < J; ++t) S::store(acc + t * W, S::add(S::load(acc + t * W), a[t]));
}

// dot_block over `count` kept weights, eight at a time, then four, two, one.
template <typename T, int NV>
void dot_run(const T* g, int64_t gstep, int64_t grow, const T* x, int64_t xstep, int64_t xrow,
             const int64_t* off, int64_t count, int64_t pixels, int64_t rows, T* acc) {
  constexpr int W = Simd<T>::W;
  int64_t t = 0;
  for (; t + 8 <= count; t += 8)
    dot_block<T, 8, NV>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
  if (t + 4 <= count) {
    dot_block<T, 4, NV>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
    t += 4;
  }
  if (t + 2 <= count) {
    dot_block<T, 2, NV>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
    t += 2;
  }
  if (t < count)
    dot_block<T, 1, NV>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
}

// Output rows per dot_run call: enough for `vectors_per_row` vector products per row to add up
// to about 16 per accumulator trip; one row when rows are long (whose input window then stays
// in cache from one output channel to the next).
int64_t dot_rows(int64_t vectors_per_row, int64_t rows) {
  return std::min(rows, std::max<int64_t>(1, ceil_div(16, vectors_per_row)));
}

// ---------------------------------------------------------------------------------------------
// Batch-minor copies: [N][C][H][W] (any strides, W contiguous) <-> [N/BW][C][H'][W'][BW].

// dst[nb][c][top + h][left + w][b] = src[nb * BW + b][c][h][w]; zero everywhere else (padding
// rows and columns up to rows x cols, and the lanes of a batch past N).
template <typename T>
void to_batch_minor(const T* src, at::IntArrayRef strides, int64_t N, int64_t C, int64_t H,
                    int64_t Wd, int64_t top, int64_t left, int64_t rows, int64_t cols,
                    int64_t BW, T* dst) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const BlockTranspose<T> transpose;
  const int64_t NB = ceil_div(N, BW), plane = rows * cols * BW;
  at::parallel_for(0, NB * C, 1, [&](int64_t begin, int64_t end) {
    typename S::V r[W];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t nb = item / C, c = item % C;
      T* out = dst + item * plane;
      // Zero what no pixel of the input covers: the padding rows, then each row's margins.
      std::fill(out, out + top * cols * BW, T(0));
      std::fill(out + (top + H) * cols * BW, out + plane, T(0));
      for (int64_t h = 0; h < H; ++h) {
        T* row = out + (top + h) * cols * BW;
        std::fill(row, row + left * BW, T(0));
        std::fill(row + (left + Wd) * BW, row + cols * BW, T(0));
      }
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t w0 = 0; w0 < Wd; w0 += W) {
          const int64_t nw = std::min<int64_t>(W, Wd - w0);
          const auto width_lanes = S::lanes(nw);
          for (int64_t sub = 0; sub < BW; sub += W) {
            const int64_t n0 = nb * BW + sub;
            for (int i = 0; i < W; ++i)
              r[i] = n0 + i < N ? S::load(src + (n0 + i) * strides[0] + c * strides[1] +
                                              h * strides[2] + w0,
                                          width_lanes)
                                : S::zero();
            transpose(r);
            T* o = out + ((top + h) * cols + left + w0) * BW + sub;
            for (int64_t k = 0; k < nw; ++k) S::store(o + k * BW, r[k]);
          }
        }
      }
    }
  });
}

// One row of pixels back from batch-minor: dst[n * image][w] = tile[w][n - n0] for the images
// n0 <= n < min(N, n0 + BW), w < Wd (tile holds Wd pixels of BW lanes each).
template <typename T>
void store_row_from_batch_minor(const T* tile, int64_t Wd, int64_t BW, int64_t n0, int64_t N,
                                T* dst, int64_t image) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const BlockTranspose<T> transpose;
  typename S::V r[W];
  for (int64_t w0 = 0; w0 < Wd; w0 += W) {
    const int64_t nw = std::min<int64_t>(W, Wd - w0);
    for (int64_t sub = 0; sub < BW && n0 + sub < N; sub += W) {
      for (int k = 0; k < W; ++k) r[k] = k < nw ? S::load(tile + (w0 + k) * BW + sub) : S::zero();
      transpose(r);
      const int64_t images = std::min<int64_t>(W, N - n0 - sub);
      for (int64_t i = 0; i < images; ++i)
        store_lanes<T>(dst + (n0 + sub + i) * image + w0, r[i], nw);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-call lists of the kept weights: offsets into the laid-out operand, and values.

// Offset of tap j of output channel o's row in an input laid out as [C][rows][cols] planes of
// `unit` elements per pixel, with `phases` column phases per padded row (width variant: column
// w = q * sw + r sits at [r][q]; batch variant: phases = 1, sw folded into the pixel step).
struct TapOffsets {
  const Geometry& g;
  int64_t rows, row_len, unit;  // row_len: elements per padded input row
  bool phase_split;
  int64_t operator()(int64_t o, index_t col) const {
    const int64_t c = (o / g.Og) * g.Cg + col / g.taps();
    const int64_t kh = col / g.kW % g.kH, kw = col % g.kW;
    const int64_t column = phase_split ? (kw * g.dw % g.sw) * (row_len / g.sw) + kw * g.dw / g.sw
                                       : kw * g.dw;
    return (c * rows + kh * g.dh) * row_len * unit + column * unit;
  }
};

// The input gradient's kept weights of input channel ci, by phase (rh, rw): offsets into dy
// laid out as [O][pad.rows][pad.cols] pixels of `unit` elements, and their values.
template <typename T>
struct PhaseLists {
  std::vector<std::vector<int64_t>> offsets;
  std::vector<std::vector<T>> values;

  PhaseLists(const Geometry& g, const GradPadding& pad, int64_t unit, int64_t ci,
             const index_t* t_row_ptr, const index_t* t_col_idx, const index_t* t_value_index,
             const T* vals)
      : offsets(g.sh * g.sw), values(g.sh * g.sw) {
    const int64_t group = ci / g.Cg, c = ci % g.Cg;
    const index_t o_begin = index_t(group * g.Og), o_end = index_t((group + 1) * g.Og);
    for (int64_t kh = 0; kh < g.kH; ++kh) {
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        const int64_t row = c * g.taps() + kh * g.kW + kw;
        const index_t* first = t_col_idx + t_row_ptr[row];
        const index_t* last = t_col_idx + t_row_ptr[row + 1];
        if (g.groups > 1) {  // the row's columns (output channels) ascend: this group's range
          first = std::lower_bound(first, last, o_begin);
          last = std::lower_bound(first, last, o_end);
        }
        const int64_t phase = (kh * g.dh % g.sh) * g.sw + kw * g.dw % g.sw;
        const int64_t shift = (pad.top - kh * g.dh / g.sh) * pad.cols + pad.left - kw * g.dw / g.sw;
        for (const index_t* e = first; e < last; ++e) {
          offsets[phase].push_back((int64_t(*e) * pad.rows * pad.cols + shift) * unit);
          values[phase].push_back(vals[t_value_index[e - t_col_idx]]);
        }
      }
    }
  }
};

std::vector<int64_t> row_cost_prefix(const index_t* row_ptr, int64_t rows, int64_t row_cost) {
  std::vector<int64_t> prefix(rows + 1, 0);
  for (int64_t r = 0; r < rows; ++r)
    prefix[r + 1] = prefix[r] + (row_ptr[r + 1] - row_ptr[r]) + row_cost;
  return prefix;
}

// Per input channel: its kept weights (over every tap and, grouped, its group's outputs).
std::vector<int64_t> input_channel_cost_prefix(const Geometry& g, const index_t* t_row_ptr,
                                               int64_t row_cost) {
  std::vector<int64_t> prefix(g.C + 1, 0);
  for (int64_t ci = 0; ci < g.C; ++ci) {
    const int64_t c = ci % g.Cg;
    const int64_t kept = t_row_ptr[(c + 1) * g.taps()] - t_row_ptr[c * g.taps()];
    prefix[ci + 1] = prefix[ci] + kept / g.groups + row_cost;
  }
  return prefix;
}

// The kept weights' offsets into a laid-out operand, for every row of the CSR index (in its
// order), built once per call and read by every thread.
std::vector<int64_t> tap_offsets(const TapOffsets& tap, const index_t* row_ptr,
                                 const index_t* col, int64_t rows) {
  std::vector<int64_t> off(row_ptr[rows]);
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t j = row_ptr[o]; j < row_ptr[o + 1]; ++j) off[j] = tap(o, col[j]);
  return off;
}

// The input gradient's lists of every input channel.
template <typename T>
std::vector<PhaseLists<T>> phase_lists(const Geometry& g, const GradPadding& pad, int64_t unit,
                                       const index_t* t_row_ptr, const index_t* t_col,
                                       const index_t* t_value_index, const T* values) {
  std::vector<PhaseLists<T>> lists;
  lists.reserve(g.C);
  for (int64_t ci = 0; ci < g.C; ++ci)
    lists.emplace_back(g, pad, unit, ci, t_row_ptr, t_col, t_value_index, values);
  return lists;
}

// ---------------------------------------------------------------------------------------------
// Splitting the work between threads. By images when there are at least as many images (batch
// variant: blocks of BW images) as threads: each thread lays out only its own images, one at a
// time, in its own scratch, and computes every channel of them, so the laid-out copies stay in
// cache instead of making a round trip through memory, and an op is one parallel region, not
// one per copy and per kernel. Else (an image or a few) by channels, balanced by kept weights,
// over operands laid out once for the whole batch. Small calls run on one thread.

// The number of image parts, or 0 to split by channels. Split by images, the weight gradient
// takes one accumulator per kept weight and lane in each part: those must not outgrow the
// input (`input_elements`), which is what the split by channels lays out in scratch instead
// (0: no accumulators).
int64_t image_parts(int64_t units, int64_t work, int64_t accumulators = 0,
                    int64_t input_elements = 0) {
  const int64_t threads = work < 65536 ? 1 : std::max(1, at::get_num_threads());
  const int64_t parts = std::min(units, threads);
  if (units < threads || (parts > 1 && parts * accumulators > input_elements)) return 0;
  return parts;
}

// body(part, begin, end) for `parts` contiguous ranges of [0, units) of about equal length.
// Always inside at::parallel_for, even for one part, so that the per-image copies' own
// parallel_for runs inline instead of starting a parallel region per image.
template <typename F>
void for_image_parts(int64_t units, int64_t parts, F body) {
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      body(part, units * part / parts, units * (part + 1) / parts);
  });
}

// ---------------------------------------------------------------------------------------------
// The batch variant (batch-minor operands, NV vectors = BW lanes of the batch per pixel). Each
// function computes one block of BW images (block nb: images nb * BW ...) for a range of
// channels, from that block's laid-out operands.

// Output channels [o_begin, o_end) of out (N, O, OH, OW) from the block's input xb
// [C][Hp][Wp][BW]: each output row is computed batch-minor into `tile` (OW x BW) and transposed
// straight into out.
template <typename T, int NV>
void batch_forward_block(const Geometry& g, const T* xb, const index_t* row_ptr,
                         const int64_t* off, const T* values, const T* bias, int64_t o_begin,
                         int64_t o_end, int64_t nb, T* tile, T* out) {
  constexpr int64_t BW = NV * Simd<T>::W;
  const int64_t Wp = g.W + 2 * g.pw, image = g.O * g.OH * g.OW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* src = xb + oh * g.sh * Wp * BW;
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
      gather_run<T, NV>(src, g.sw * BW, off + begin, values + begin, count,
                        bias != nullptr ? bias[o] : T(0), tile, BW, g.OW);
      store_row_from_batch_minor<T>(tile, g.OW, BW, nb * BW, g.N, out + (o * g.OH + oh) * g.OW,
                                    image);
    }
  }
}

// Input channels [c_begin, c_end) of dx (N, C, H, W) from the block's dyb
// [O][pad.rows][pad.cols][BW], a row at a time through `tile` (W x BW).
template <typename T, int NV>
void batch_grad_input_block(const Geometry& g, const GradPadding& pad, const T* dyb,
                            const std::vector<PhaseLists<T>>& lists, int64_t c_begin,
                            int64_t c_end, int64_t nb, T* tile, T* dx) {
  constexpr int64_t BW = NV * Simd<T>::W;
  const int64_t image = g.C * g.H * g.W;
  for (int64_t h = 0; h < g.H; ++h) {
    const int64_t hp = h + g.ph, a = hp / g.sh, rh = hp % g.sh;
    for (int64_t ci = c_begin; ci < c_end; ++ci) {
      const auto& l = lists[ci];
      for (int64_t rw = 0; rw < g.sw; ++rw) {
        // Input columns w = q * sw + rw - pw inside [0, W).
        const int64_t q0 = ceil_div(std::max<int64_t>(0, g.pw - rw), g.sw);
        const int64_t q1 = g.pw + g.W - 1 - rw < 0 ? -1 : (g.pw + g.W - 1 - rw) / g.sw;
        if (q1 < q0) continue;
        const int64_t phase = rh * g.sw + rw;
        const T* src = dyb + (a * pad.cols + q0) * BW;
        T* dst = tile + (q0 * g.sw + rw - g.pw) * BW;
        gather_run<T, NV>(src, BW, l.offsets[phase].data(), l.values[phase].data(),
                          int64_t(l.offsets[phase].size()), T(0), dst, g.sw * BW, q1 - q0 + 1);
      }
      store_row_from_batch_minor<T>(tile, g.W, BW, nb * BW, g.N, dx + (ci * g.H + h) * g.W,
                                    image);
    }
  }
}

// acc[j][0:W] += the block's lane-wise share of the weight gradient of the kept weights j of
// output channels [o_begin, o_end), from xb (as in the forward) and dyb (as above).
template <typename T, int NV>
void batch_grad_weight_block(const Geometry& g, const GradPadding& pad, const T* xb,
                             const T* dyb, const index_t* row_ptr, const int64_t* off,
                             int64_t o_begin, int64_t o_end, T* acc) {
  constexpr int W = Simd<T>::W;
  constexpr int64_t BW = NV * W;
  const int64_t Wp = g.W + 2 * g.pw;
  const int64_t rows_per_call = dot_rows(g.OW * NV, g.OH);
  for (int64_t oh = 0; oh < g.OH; oh += rows_per_call) {
    const int64_t rows = std::min(rows_per_call, g.OH - oh);
    const T* x = xb + oh * g.sh * Wp * BW;
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
      const T* dy = dyb + ((o * pad.rows + pad.top + oh) * pad.cols + pad.left) * BW;
      dot_run<T, NV>(dy, BW, pad.cols * BW, x, g.sw * BW, g.sh * Wp * BW, off + begin, count,
                     g.OW, rows, acc + begin * W);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The width variant (NCHW operands; the input padded and split by column phase).

// The phase-split padded input: [N][C][Hp][sw][Wq], Wq columns per phase, covering the padded
// input and every column the vectorised output rows read (OWv = OW rounded up to vectors).
struct WidthLayout {
  int64_t Hp, Wq, OWv;
};

WidthLayout width_layout(const Geometry& g, int64_t lanes) {
  WidthLayout l;
  l.Hp = g.H + 2 * g.ph;
  l.OWv = round_up(g.OW, lanes);
  l.Wq = std::max(l.OWv + (g.kW - 1) * g.dw / g.sw, ceil_div(g.W + 2 * g.pw, g.sw));
  return l;
}

// dst[0:cols] = src[0:Wd] placed at column `left`, zero elsewhere. Plain vector stores: the
// rows are short (tens of elements), so a memset and a memcpy call per row would cost more than
// the copy (see keep_as_stores), and so would masked stores (see store_lanes). A row's last, partial vector is
// written as the full vector that ends where the row ends, overlapping the one before it.
template <typename T>
inline void padded_row(const T* __restrict src, int64_t Wd, int64_t left, int64_t cols,
                       T* __restrict dst) {
  using S = Simd<T>;
  constexpr int W = S::W;
  if (cols < W || Wd < W) {
    for (int64_t k = 0; k < left; ++k) dst[k] = T(0);
    for (int64_t w = 0; w < Wd; ++w) dst[left + w] = src[w];
    for (int64_t k = left + Wd; k < cols; ++k) dst[k] = T(0);
    return;
  }
  for (int64_t k = 0; k + W <= cols; k += W) {
    S::store(dst + k, S::zero());
    keep_as_stores();
  }
  S::store(dst + cols - W, S::zero());
  for (int64_t w = 0; w + W <= Wd; w += W) {
    S::store(dst + left + w, S::load(src + w));
    keep_as_stores();
  }
  S::store(dst + left + Wd - W, S::load(src + Wd - W));
}

// dst[n][c][top + h][left + w] = src[n][c][h][w] in planes of rows x cols, zero elsewhere
// (src: any strides, its width contiguous).
template <typename T>
void padded_copy(const T* src, at::IntArrayRef strides, int64_t N, int64_t C, int64_t H,
                 int64_t Wd, int64_t top, int64_t left, int64_t rows, int64_t cols, T* dst) {
  const int64_t plane = rows * cols;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / C, c = item % C;
      T* out = dst + item * plane;
      std::fill(out, out + top * cols, T(0));
      std::fill(out + (top + H) * cols, out + plane, T(0));
      const T* in = src + n * strides[0] + c * strides[1];
      for (int64_t h = 0; h < H; ++h)
        padded_row<T>(in + h * strides[2], Wd, left, cols, out + (top + h) * cols);
    }
  });
}

// Images [0, count) of x (any strides, its width contiguous) -> [count][C][Hp][sw][Wq]
// zero-padded and phase-split, in the calling thread's scratch slot `slot` (and slot 3).
template <typename T>
const T* phase_split_input(const T* x, at::IntArrayRef strides, int64_t count,
                           const Geometry& g, const WidthLayout& l, int slot) {
  const int64_t total = l.Wq * g.sw;
  T* padded = scratch<T>(slot, count * g.C * l.Hp * total);
  padded_copy<T>(x, strides, count, g.C, g.H, g.W, g.ph, g.pw, l.Hp, total, padded);
  if (g.sw == 1) return padded;
  // Column w = q * sw + r to [r][q]: a strided copy, only for strided layers.
  T* split = scratch<T>(3, count * g.C * l.Hp * total);
  at::parallel_for(0, count * g.C * l.Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* from = padded + row * total;
      T* to = split + row * total;
      for (int64_t r = 0; r < g.sw; ++r)
        for (int64_t q = 0; q < l.Wq; ++q) to[r * l.Wq + q] = from[q * g.sw + r];
    }
  });
  return split;
}

// Output channels [o_begin, o_end) of one image, out [O][OH][OWv], from its laid-out input xw
// [C][Hp][sw][Wq].
template <typename T>
void width_forward_image(const Geometry& g, const WidthLayout& l, const T* xw,
                         const index_t* row_ptr, const int64_t* off, const T* values,
                         const T* bias, int64_t o_begin, int64_t o_end, T* out) {
  constexpr int W = Simd<T>::W;
  const int64_t row_len = g.sw * l.Wq, vectors = l.OWv / W;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
    gather_wide<T>(xw, g.sh * row_len, off + begin, values + begin, count,
                   bias != nullptr ? bias[o] : T(0), out + o * g.OH * l.OWv, l.OWv, g.OH,
                   vectors);
  }
}

// Where the width variant's input gradient goes: planes of `rows` x `row_len` per channel, the
// first of them padded row `first_row`, phase r of a row at `phase_len * r`, and `vectors`
// vectors computed per row and phase from dy column `first_col` on. Either a phase-split
// scratch in padded coordinates (every layer) or, for stride-1 rows of whole vectors, the input
// gradient itself (first_row = ph, first_col = pw), which saves a copy of the activation.
struct DxTarget {
  int64_t rows, row_len, first_row, phase_len, first_col, vectors;
  int64_t image() const { return rows * row_len; }  // per channel
};

template <typename T>
DxTarget dx_scratch(const Geometry& g, int64_t Qv) {
  constexpr int W = Simd<T>::W;
  return {g.H + 2 * g.ph, g.sw * Qv, 0, Qv, 0, Qv / W};
}

template <typename T>
bool dx_direct_possible(const Geometry& g) {
  return g.sw == 1 && g.W % Simd<T>::W == 0;
}

template <typename T>
DxTarget dx_direct(const Geometry& g) {
  constexpr int W = Simd<T>::W;
  return {g.H, g.W, g.ph, g.W, g.pw, g.W / W};
}

// Input channels [c_begin, c_end) of one image's input gradient, dx laid out as `to`, from its
// dy [O][pad.rows][pad.cols]: the rows inside the input (padded rows ph .. ph + H) of every
// phase.
template <typename T>
void width_grad_input_image(const Geometry& g, const GradPadding& pad, const T* dyw,
                            const std::vector<PhaseLists<T>>& lists, int64_t c_begin,
                            int64_t c_end, const DxTarget& to, T* dx) {
  for (int64_t ci = c_begin; ci < c_end; ++ci) {
    const auto& lst = lists[ci];
    for (int64_t rh = 0; rh < g.sh; ++rh) {
      // Padded rows hp = a * sh + rh inside [ph, ph + H).
      const int64_t a0 = ceil_div(std::max<int64_t>(0, g.ph - rh), g.sh);
      const int64_t last = g.ph + g.H - 1 - rh;
      const int64_t a1 = last < 0 ? -1 : last / g.sh;
      if (a1 < a0) continue;
      for (int64_t rw = 0; rw < g.sw; ++rw) {
        const int64_t phase = rh * g.sw + rw;
        const T* src = dyw + a0 * pad.cols + to.first_col;
        T* dst = dx + ci * to.image() + (a0 * g.sh + rh - to.first_row) * to.row_len +
                 rw * to.phase_len;
        gather_wide<T>(src, pad.cols, lst.offsets[phase].data(), lst.values[phase].data(),
                       int64_t(lst.offsets[phase].size()), T(0), dst, g.sh * to.row_len,
                       a1 - a0 + 1, to.vectors);
      }
    }
  }
}

// acc[j][0:W] += one image's lane-wise share of the weight gradient of the kept weights j of
// output channels [o_begin, o_end), from its xw (as in the forward) and dyw (as above).
template <typename T>
void width_grad_weight_image(const Geometry& g, const WidthLayout& l, const GradPadding& pad,
                             const T* xw, const T* dyw, const index_t* row_ptr,
                             const int64_t* off, int64_t o_begin, int64_t o_end, T* acc) {
  constexpr int W = Simd<T>::W;
  const int64_t row_len = g.sw * l.Wq, vectors = l.OWv / W;
  const int64_t rows_per_call = dot_rows(vectors, g.OH);
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
    for (int64_t oh = 0; oh < g.OH; oh += rows_per_call) {
      const T* dy = dyw + (o * pad.rows + pad.top + oh) * pad.cols + pad.left;
      const T* x = xw + oh * g.sh * row_len;
      dot_run<T, 1>(dy, W, pad.cols, x, W, g.sh * row_len, off + begin, count, vectors,
                    std::min(rows_per_call, g.OH - oh), acc + begin * W);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checks and the op entry points.

enum class Variant { kBatch, kWidth };

// The batch variant's block: one vector of images per pixel. Two (16 fp32 lanes on AVX2) did
// no better on the paper's layers: the input window each output row reads doubles, and on
// the wider layers it no longer stays in L2.
constexpr int kBatchVectors = 1;

Variant parse_variant(const char* op, const std::string& variant) {
  if (variant == "batch") return Variant::kBatch;
  if (variant == "width") return Variant::kWidth;
  TORCH_CHECK(false, op, ": variant must be \"batch\" or \"width\", got \"", variant, "\"");
  return Variant::kBatch;  // not reached
}

void check_float(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the input's "
              "dtype ", like.scalar_type(), ", got ", t.scalar_type());
}

at::Tensor checked_index(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got ", t.dim(), "-D");
  return t.contiguous();
}

// row_ptr: rows + 1 entries, 0 first, nnz last, nondecreasing.
void check_row_ptr(const char* op, const char* name, const at::Tensor& row_ptr, int64_t rows,
                   int64_t nnz) {
  TORCH_CHECK(row_ptr.numel() == rows + 1, op, ": ", name, " must have ", rows + 1,
              " entries, got ", row_ptr.numel());
  const index_t* p = row_ptr.data_ptr<index_t>();
  TORCH_CHECK(p[0] == 0 && p[rows] == nnz, op, ": ", name, " must run from 0 to ", nnz,
              " (the number of kept weights), got ", p[0], " to ", p[rows]);
  for (int64_t r = 0; r < rows; ++r)
    TORCH_CHECK(p[r] <= p[r + 1], op, ": ", name, " must be nondecreasing at ", r);
}

// The input with its width contiguous (what the layout copies read).
at::Tensor width_contiguous(const at::Tensor& t) {
  return t.size(3) <= 1 || t.stride(3) == 1 ? t : t.contiguous();
}


// What the forward and the backward both take, checked: the input, the forward index (CSR of
// the mask as O x (C/groups * kH * kW)), the values, the geometry and the variant.
struct ConvOperands {
  at::Tensor row_ptr, col_idx, values;
  Geometry g;
  Variant variant;
  int64_t nnz;
};

ConvOperands checked_conv_operands(const char* op, const at::Tensor& x,
                                   const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                   const at::Tensor& values, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups,
                                   c10::string_view variant_name) {
  check_float(op, "x", x, x);
  check_float(op, "values", values, x);
  ConvOperands c;
  c.variant = parse_variant(op, std::string(variant_name));
  c.row_ptr = checked_index(op, "row_ptr", row_ptr);
  c.col_idx = checked_index(op, "col_idx", col_idx);
  c.g = make_geometry(op, x.sizes(), c.row_ptr.numel() - 1, kernel_size, stride, padding,
                      dilation, groups);
  c.nnz = c.col_idx.numel();
  TORCH_CHECK(values.dim() == 1 && values.numel() == c.nnz, op,
              ": values must be 1-D with one entry per kept weight (", c.nnz, "), got shape ",
              values.sizes());
  check_row_ptr(op, "row_ptr", c.row_ptr, c.g.O, c.nnz);
  c.values = values.contiguous();
  return c;
}

at::Tensor sparse_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& row_ptr_in,
                             const at::Tensor& col_idx_in, const at::Tensor& values_in,
                             const std::optional<at::Tensor>& bias_in,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             c10::string_view variant_name) {
  constexpr const char* op = "sparse_conv2d";
  const ConvOperands c = checked_conv_operands(op, x_in, row_ptr_in, col_idx_in, values_in,
                                               kernel_size, stride, padding, dilation, groups,
                                               variant_name);
  const Geometry& g = c.g;
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
    check_float(op, "bias", bias, x_in);
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == g.O, op, ": bias must have shape (", g.O,
                ",), got ", bias.sizes());
  }
  at::Tensor out = at::empty({g.N, g.O, g.OH, g.OW}, x_in.options());
  if (out.numel() == 0) return out;
  if (c.nnz == 0) {
    if (bias.defined()) out.copy_(bias.view({1, g.O, 1, 1}).expand_as(out));
    else out.zero_();
    return out;
  }
  const at::Tensor x = width_contiguous(x_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_tickets_sparse_conv2d", [&] {
    using T = scalar_t;
    constexpr int W = Simd<T>::W;
    const index_t* rp = c.row_ptr.data_ptr<index_t>();
    const index_t* ci = c.col_idx.data_ptr<index_t>();
    const T* v = c.values.data_ptr<T>();
    const T* b = bias.defined() ? bias.data_ptr<T>() : nullptr;
    const T* xs = x.data_ptr<T>();
    T* y = out.data_ptr<T>();
    const auto prefix = row_cost_prefix(rp, g.O, 1);
    if (c.variant == Variant::kBatch) {
      constexpr int NV = kBatchVectors;
      constexpr int64_t BW = NV * W;
      const int64_t NB = ceil_div(g.N, BW), Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
      const int64_t block = g.C * Hp * Wp * BW;
      const auto off = tap_offsets(TapOffsets{g, Hp, Wp, BW, false}, rp, ci, g.O);
      const int64_t work = (c.nnz + g.O) * NB * g.OH * g.OW * BW;
      const int64_t parts = image_parts(NB, work);
      if (parts > 0) {
        for_image_parts(NB, parts, [&](int64_t, int64_t nb_begin, int64_t nb_end) {
          std::vector<T> tile(g.OW * BW);
          T* xb = scratch<T>(0, block);
          for (int64_t nb = nb_begin; nb < nb_end; ++nb) {
            to_batch_minor<T>(xs + nb * BW * x.stride(0), x.strides(),
                              std::min(BW, g.N - nb * BW), g.C, g.H, g.W, g.ph, g.pw, Hp, Wp,
                              BW, xb);
            batch_forward_block<T, NV>(g, xb, rp, off.data(), v, b, 0, g.O, nb, tile.data(), y);
          }
        });
      } else {
        T* xb = scratch<T>(0, NB * block);
        to_batch_minor<T>(xs, x.strides(), g.N, g.C, g.H, g.W, g.ph, g.pw, Hp, Wp, BW, xb);
        for_balanced_parts(prefix, work, [&](int64_t o_begin, int64_t o_end) {
          std::vector<T> tile(g.OW * BW);
          for (int64_t nb = 0; nb < NB; ++nb)
            batch_forward_block<T, NV>(g, xb + nb * block, rp, off.data(), v, b, o_begin, o_end,
                                       nb, tile.data(), y);
        });
      }
    } else {
      const WidthLayout l = width_layout(g, W);
      const int64_t in_image = g.C * l.Hp * g.sw * l.Wq, out_image = g.O * g.OH * l.OWv;
      const auto off = tap_offsets(TapOffsets{g, l.Hp, g.sw * l.Wq, 1, true}, rp, ci, g.O);
      const int64_t work = (c.nnz + g.O) * g.N * g.OH * l.OWv;
      const int64_t parts = image_parts(g.N, work);
      // Rows of whole vectors go straight into out; others through a scratch of wider rows.
      const bool direct = l.OWv == g.OW;
      if (parts > 0) {
        for_image_parts(g.N, parts, [&](int64_t, int64_t n_begin, int64_t n_end) {
          for (int64_t n = n_begin; n < n_end; ++n) {
            const T* xw = phase_split_input<T>(xs + n * x.stride(0), x.strides(), 1, g, l, 0);
            T* target = direct ? y + n * out_image : scratch<T>(1, out_image);
            width_forward_image<T>(g, l, xw, rp, off.data(), v, b, 0, g.O, target);
            if (!direct) {
              T* image = y + n * g.O * g.OH * g.OW;
              for (int64_t row = 0; row < g.O * g.OH; ++row)
                std::copy(target + row * l.OWv, target + row * l.OWv + g.OW, image + row * g.OW);
            }
          }
        });
      } else {
        const T* xw = phase_split_input<T>(xs, x.strides(), g.N, g, l, 0);
        T* target = direct ? y : scratch<T>(1, g.N * out_image);
        for_balanced_parts(prefix, work, [&](int64_t o_begin, int64_t o_end) {
          for (int64_t n = 0; n < g.N; ++n)
            width_forward_image<T>(g, l, xw + n * in_image, rp, off.data(), v, b, o_begin,
                                   o_end, target + n * out_image);
        });
        if (!direct)
          out.copy_(at::from_blob(target, {g.N, g.O, g.OH, l.OWv}, x.options()).narrow(3, 0, g.OW));
      }
    }
  });
  return out;
}

// grad_values[t] = the sum over parts p and lanes of acc[p][t][0:W], for t < count.
template <typename T>
void store_lane_sums(const T* acc, int64_t parts, int64_t count, T* grad_values) {
  constexpr int W = Simd<T>::W;
  for (int64_t t = 0; t < count; ++t) {
    T sum = T(0);
    for (int64_t p = 0; p < parts; ++p)
      for (int i = 0; i < W; ++i) sum += acc[(p * count + t) * W + i];
    grad_values[t] = sum;
  }
}

std::tuple<at::Tensor, at::Tensor> sparse_conv2d_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& row_ptr_in,
    const at::Tensor& col_idx_in, const at::Tensor& t_row_ptr_in, const at::Tensor& t_col_idx_in,
    const at::Tensor& t_value_index_in, const at::Tensor& values_in,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view variant_name,
    std::array<bool, 2> output_mask) {
  constexpr const char* op = "sparse_conv2d_backward";
  const ConvOperands c = checked_conv_operands(op, x_in, row_ptr_in, col_idx_in, values_in,
                                               kernel_size, stride, padding, dilation, groups,
                                               variant_name);
  const Geometry& g = c.g;
  check_float(op, "grad_out", grad_out_in, x_in);
  const at::Tensor t_row_ptr = checked_index(op, "t_row_ptr", t_row_ptr_in);
  const at::Tensor t_col_idx = checked_index(op, "t_col_idx", t_col_idx_in);
  const at::Tensor t_value_index = checked_index(op, "t_value_index", t_value_index_in);
  TORCH_CHECK(t_col_idx.numel() == c.nnz && t_value_index.numel() == c.nnz, op,
              ": t_col_idx and t_value_index must have one entry per kept weight (", c.nnz,
              "), got ", t_col_idx.numel(), " and ", t_value_index.numel());
  check_row_ptr(op, "t_row_ptr", t_row_ptr, g.Cg * g.taps(), c.nnz);
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef({g.N, g.O, g.OH, g.OW}), op,
              ": grad_out must have the output's shape (", g.N, ", ", g.O, ", ", g.OH, ", ",
              g.OW, "), got ", grad_out_in.sizes());
  const bool needs_input = output_mask[0], needs_weight = output_mask[1];
  at::Tensor grad_x = needs_input ? at::empty(x_in.sizes(), x_in.options()) : x_in.new_empty({0});
  at::Tensor grad_values = needs_weight ? at::empty({c.nnz}, x_in.options())
                                        : x_in.new_empty({0});
  if (c.nnz == 0 || g.N == 0) {
    if (needs_input) grad_x.zero_();
    if (needs_weight) grad_values.zero_();
    return {grad_x, grad_values};
  }
  if (!needs_input && !needs_weight) return {grad_x, grad_values};
  const at::Tensor x = width_contiguous(x_in), grad_out = width_contiguous(grad_out_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_tickets_sparse_conv2d_backward", [&] {
    using T = scalar_t;
    constexpr int W = Simd<T>::W;
    const index_t* rp = c.row_ptr.data_ptr<index_t>();
    const index_t* ci = c.col_idx.data_ptr<index_t>();
    const index_t* trp = t_row_ptr.data_ptr<index_t>();
    const index_t* tci = t_col_idx.data_ptr<index_t>();
    const index_t* tvi = t_value_index.data_ptr<index_t>();
    const T* v = c.values.data_ptr<T>();
    const T* xs = x.data_ptr<T>();
    const T* dys = grad_out.data_ptr<T>();
    T* dx = needs_input ? grad_x.data_ptr<T>() : nullptr;
    T* dvalues = needs_weight ? grad_values.data_ptr<T>() : nullptr;
    const int64_t lanes_per_part = c.nnz * W;
    if (c.variant == Variant::kBatch) {
      constexpr int NV = kBatchVectors;
      constexpr int64_t BW = NV * W;
      const GradPadding pad = grad_padding(g, 0);
      const int64_t NB = ceil_div(g.N, BW), Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
      const int64_t x_block = g.C * Hp * Wp * BW, dy_block = g.O * pad.rows * pad.cols * BW;
      std::vector<int64_t> off;
      if (needs_weight) off = tap_offsets(TapOffsets{g, Hp, Wp, BW, false}, rp, ci, g.O);
      std::vector<PhaseLists<T>> lists;
      if (needs_input) lists = phase_lists<T>(g, pad, BW, trp, tci, tvi, v);
      const int64_t work = (c.nnz + g.O) * NB * g.OH * g.OW * BW;
      const int64_t parts = image_parts(NB, work, needs_weight ? lanes_per_part : 0, x.numel());
      if (parts > 0) {
        std::vector<T> acc(needs_weight ? parts * lanes_per_part : 0, T(0));
        for_image_parts(NB, parts, [&](int64_t part, int64_t nb_begin, int64_t nb_end) {
          std::vector<T> tile(g.W * BW);
          T* dyb = scratch<T>(2, dy_block);
          T* xb = needs_weight ? scratch<T>(0, x_block) : nullptr;
          for (int64_t nb = nb_begin; nb < nb_end; ++nb) {
            const int64_t images = std::min(BW, g.N - nb * BW);
            to_batch_minor<T>(dys + nb * BW * grad_out.stride(0), grad_out.strides(), images, g.O,
                              g.OH, g.OW, pad.top, pad.left, pad.rows, pad.cols, BW, dyb);
            if (needs_weight) {
              to_batch_minor<T>(xs + nb * BW * x.stride(0), x.strides(), images, g.C, g.H, g.W,
                                g.ph, g.pw, Hp, Wp, BW, xb);
              batch_grad_weight_block<T, NV>(g, pad, xb, dyb, rp, off.data(), 0, g.O,
                                             acc.data() + part * lanes_per_part);
            }
            if (needs_input)
              batch_grad_input_block<T, NV>(g, pad, dyb, lists, 0, g.C, nb, tile.data(), dx);
          }
        });
        if (needs_weight) store_lane_sums<T>(acc.data(), parts, c.nnz, dvalues);
      } else {
        T* dyb = scratch<T>(2, NB * dy_block);
        to_batch_minor<T>(dys, grad_out.strides(), g.N, g.O, g.OH, g.OW, pad.top, pad.left,
                          pad.rows, pad.cols, BW, dyb);
        if (needs_weight) {
          T* xb = scratch<T>(0, NB * x_block);
          to_batch_minor<T>(xs, x.strides(), g.N, g.C, g.H, g.W, g.ph, g.pw, Hp, Wp, BW, xb);
          std::vector<T> acc(lanes_per_part, T(0));
          for_balanced_parts(row_cost_prefix(rp, g.O, 1), work, [&](int64_t o_begin,
                                                                    int64_t o_end) {
            for (int64_t nb = 0; nb < NB; ++nb)
              batch_grad_weight_block<T, NV>(g, pad, xb + nb * x_block, dyb + nb * dy_block, rp,
                                             off.data(), o_begin, o_end, acc.data());
          });
          store_lane_sums<T>(acc.data(), 1, c.nnz, dvalues);
        }
        if (needs_input) {
          const auto prefix = input_channel_cost_prefix(g, trp, 1);
          for_balanced_parts(prefix, prefix[g.C] * NB * g.H * g.W * BW, [&](int64_t c_begin,
                                                                            int64_t c_end) {
            std::vector<T> tile(g.W * BW);
            for (int64_t nb = 0; nb < NB; ++nb)
              batch_grad_input_block<T, NV>(g, pad, dyb + nb * dy_block, lists, c_begin, c_end,
                                            nb, tile.data(), dx);
          });
        }
      }
    } else {
      const WidthLayout l = width_layout(g, W);
      const int64_t Qv = round_up(ceil_div(g.pw + g.W, g.sw), W);
      // dy zero-padded: the input gradient's gather reads up to column left + Qv, the weight
      // gradient's dot products up to left + OWv.
      const GradPadding pad = grad_padding(g, std::max(Qv, l.OWv));
      const int64_t dy_image = g.O * pad.rows * pad.cols;
      const int64_t in_image = g.C * l.Hp * g.sw * l.Wq;
      std::vector<int64_t> off;
      if (needs_weight)
        off = tap_offsets(TapOffsets{g, l.Hp, g.sw * l.Wq, 1, true}, rp, ci, g.O);
      std::vector<PhaseLists<T>> lists;
      if (needs_input) lists = phase_lists<T>(g, pad, 1, trp, tci, tvi, v);
      // The input gradient straight into grad_x where its rows are whole vectors at column
      // stride 1; else through a phase-split scratch in padded coordinates.
      const bool direct = dx_direct_possible<T>(g);
      const DxTarget to = direct ? dx_direct<T>(g) : dx_scratch<T>(g, Qv);
      const int64_t dx_image = g.C * to.image();
      const int64_t work = (c.nnz + g.O) * g.N * g.OH * l.OWv;
      const int64_t parts = image_parts(g.N, work, needs_weight ? lanes_per_part : 0, x.numel());
      if (parts > 0) {
        std::vector<T> acc(needs_weight ? parts * lanes_per_part : 0, T(0));
        for_image_parts(g.N, parts, [&](int64_t part, int64_t n_begin, int64_t n_end) {
          T* dyw = scratch<T>(2, dy_image);
          for (int64_t n = n_begin; n < n_end; ++n) {
            padded_copy<T>(dys + n * grad_out.stride(0), grad_out.strides(), 1, g.O, g.OH, g.OW,
                           pad.top, pad.left, pad.rows, pad.cols, dyw);
            if (needs_weight) {
              const T* xw = phase_split_input<T>(xs + n * x.stride(0), x.strides(), 1, g, l, 0);
              width_grad_weight_image<T>(g, l, pad, xw, dyw, rp, off.data(), 0, g.O,
                                         acc.data() + part * lanes_per_part);
            }
            if (needs_input && direct) {
              width_grad_input_image<T>(g, pad, dyw, lists, 0, g.C, to, dx + n * dx_image);
            } else if (needs_input) {
              T* dxw = scratch<T>(1, dx_image);
              width_grad_input_image<T>(g, pad, dyw, lists, 0, g.C, to, dxw);
              // Back to columns w = q * sw + r, inside the input's window.
              T* image = dx + n * g.C * g.H * g.W;
              for (int64_t cr = 0; cr < g.C * g.H; ++cr) {
                const T* from = dxw + ((cr / g.H) * to.rows + cr % g.H + g.ph) * to.row_len;
                for (int64_t w = 0; w < g.W; ++w) {
                  const int64_t column = w + g.pw;
                  image[cr * g.W + w] = from[(column % g.sw) * Qv + column / g.sw];
                }
              }
            }
          }
        });
        if (needs_weight) store_lane_sums<T>(acc.data(), parts, c.nnz, dvalues);
      } else {
        T* dyw = scratch<T>(2, g.N * dy_image);
        padded_copy<T>(dys, grad_out.strides(), g.N, g.O, g.OH, g.OW, pad.top, pad.left,
                       pad.rows, pad.cols, dyw);
        if (needs_weight) {
          const T* xw = phase_split_input<T>(xs, x.strides(), g.N, g, l, 0);
          std::vector<T> acc(lanes_per_part, T(0));
          for_balanced_parts(row_cost_prefix(rp, g.O, 1), work, [&](int64_t o_begin,
                                                                    int64_t o_end) {
            for (int64_t n = 0; n < g.N; ++n)
              width_grad_weight_image<T>(g, l, pad, xw + n * in_image, dyw + n * dy_image, rp,
                                         off.data(), o_begin, o_end, acc.data());
          });
          store_lane_sums<T>(acc.data(), 1, c.nnz, dvalues);
        }
        if (needs_input) {
          const int64_t Hp = g.H + 2 * g.ph;
          T* target = direct ? dx : scratch<T>(1, g.N * dx_image);
          const auto prefix = input_channel_cost_prefix(g, trp, 1);
          for_balanced_parts(prefix, prefix[g.C] * g.N * g.H * to.vectors * W,
                             [&](int64_t c_begin, int64_t c_end) {
            for (int64_t n = 0; n < g.N; ++n)
              width_grad_input_image<T>(g, pad, dyw + n * dy_image, lists, c_begin, c_end, to,
                                        target + n * dx_image);
          });
          if (!direct) {
            const at::Tensor dxw = at::from_blob(target, {g.N, g.C, Hp, g.sw, Qv}, x.options());
            // Back to columns w = q * sw + r, then the input's window of the padded coordinates.
            const at::Tensor columns = g.sw == 1 ? dxw.view({g.N, g.C, Hp, Qv})
                                                 : dxw.transpose(3, 4).reshape({g.N, g.C, Hp, Qv * g.sw});
            grad_x.copy_(columns.narrow(2, g.ph, g.H).narrow(3, g.pw, g.W));
          }
        }
      }
    }
  });
  return {grad_x, grad_values};
}

}  // namespace
}  // namespace sparse_tickets_cpu

TORCH_LIBRARY_IMPL(sparse_tickets, CPU, m) {
  m.impl("sparse_conv2d", &sparse_tickets_cpu::sparse_conv2d_cpu);
  m.impl("sparse_conv2d_backward", &sparse_tickets_cpu::sparse_conv2d_backward_cpu);
}
