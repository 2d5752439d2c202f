// What the two variants of the direct sparse convolution share (see sparse_conv.cpp for the
// idea): the geometry of a call, the per-call lists of kept weights, how a call's work is
// split between threads, and the call's operands as the entry points hand them over.

#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "simd.h"

namespace sparse_tickets_cpu {

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

inline Geometry make_geometry(const char* op, at::IntArrayRef input, int64_t out_channels,
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

inline GradPadding grad_padding(const Geometry& g, int64_t min_cols) {
  GradPadding p;
  p.top = (g.kH - 1) * g.dh / g.sh;
  p.left = (g.kW - 1) * g.dw / g.sw;
  p.rows = p.top + std::max(g.OH, ceil_div(g.ph + g.H, g.sh));
  p.cols = p.left + std::max({g.OW, ceil_div(g.pw + g.W, g.sw), min_cols});
  return p;
}

// ---------------------------------------------------------------------------------------------
// Per-call lists of the kept weights: offsets into the laid-out operand, and values.

// Offset of tap j of output channel o's row in an input laid out as [C][rows][cols] planes of
// `unit` elements per pixel, its rows split by column phase or not (width variant: column
// w = q * sw + r sits at [r][q]; batch variant: no split, sw folded into the pixel step).
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

// The input gradient's cost of input channels [0, ci), for the thread partition: per channel,
// its kept weights (over every tap and, grouped, its group's outputs) plus one.
inline std::vector<int64_t> input_channel_cost_prefix(const Geometry& g,
                                                      const index_t* t_row_ptr) {
  std::vector<int64_t> prefix(g.C + 1, 0);
  for (int64_t ci = 0; ci < g.C; ++ci) {
    const int64_t c = ci % g.Cg;
    const int64_t kept = t_row_ptr[(c + 1) * g.taps()] - t_row_ptr[c * g.taps()];
    prefix[ci + 1] = prefix[ci] + kept / g.groups + 1;
  }
  return prefix;
}

// The kept weights' offsets into a laid-out operand, for every row of the CSR index (in its
// order), built once per call and read by every thread.
inline std::vector<int64_t> tap_offsets(const TapOffsets& tap, const index_t* row_ptr,
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
// Splitting the work between threads (the rule itself, threads_for_work, is in common.h). By
// images when there are at least as many images (batch variant: blocks of one vector of images)
// as threads: each thread lays out only its own images, one at a time, in its own scratch, and
// computes every channel of them, so the laid-out copies stay in cache instead of making a
// round trip through memory, and an op is one parallel region, not one per copy and per
// kernel. Else (an image or a few) by channels, balanced by kept weights (for_balanced_parts),
// over operands laid out once for the whole batch.

// The number of image parts, or 0 to split by channels. Split by images, the weight gradient
// takes one accumulator per kept weight and lane in each part: those must not outgrow the
// input (`input_elements`), which is what the split by channels lays out in scratch instead
// (0: no accumulators).
inline int64_t image_parts(int64_t units, int64_t work, int64_t accumulators = 0,
                           int64_t input_elements = 0) {
  const int64_t threads = threads_for_work(work);
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

// ---------------------------------------------------------------------------------------------
// A checked call, as the entry points (sparse_conv.cpp) hand it to a variant (conv_batch.cpp,
// conv_width.cpp). Tensors are the caller's, already checked: x and grad_out with their width
// contiguous, the index and the values contiguous.

template <typename T>
struct ConvForward {
  Geometry g;
  at::Tensor x;  // (N, C, H, W)
  const index_t *row_ptr, *col_idx;
  const T* values;
  const T* bias;  // or null
  int64_t nnz;
  at::Tensor out;  // (N, O, OH, OW), contiguous
};

template <typename T>
struct ConvBackward {
  Geometry g;
  at::Tensor x, grad_out;
  const index_t *row_ptr, *col_idx;                       // the forward index
  const index_t *t_row_ptr, *t_col_idx, *t_value_index;  // its transpose
  const T* values;
  int64_t nnz;
  at::Tensor grad_x;  // x's shape, contiguous, or undefined when not asked for
  T* grad_values;     // one per kept weight, or null when not asked for
  bool needs_input() const { return grad_x.defined(); }
  bool needs_weight() const { return grad_values != nullptr; }
};

// The two variants, instantiated for float and double in their own units.
template <typename T> void batch_forward(const ConvForward<T>& call);
template <typename T> void batch_backward(const ConvBackward<T>& call);
template <typename T> void width_forward(const ConvForward<T>& call);
template <typename T> void width_backward(const ConvBackward<T>& call);

}  // namespace sparse_tickets_cpu
