// The width variant of the direct sparse convolution (see sparse_conv.cpp): the output width
// is the vector. The input is zero-padded and split by column phase (column w = q * stride + r
// is stored at [r][q]), so that the columns one kept weight reads for consecutive outputs are
// contiguous at any stride; a block of outputs is a few output rows of one image. Operands stay
// NCHW.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "conv_common.h"
#include "conv_kernels.h"
#include "scratch.h"
#include "simd.h"

namespace sparse_tickets_cpu {
namespace {

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
// the copy (see keep_as_stores), and so would masked stores (see store_lanes). A row's last,
// partial vector is written as the full vector that ends where the row ends, overlapping the
// one before it.
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
// zero-padded and phase-split, in the calling thread's scratch.
template <typename T>
const T* phase_split_input(const T* x, at::IntArrayRef strides, int64_t count,
                           const Geometry& g, const WidthLayout& l) {
  const int64_t total = l.Wq * g.sw;
  T* padded = scratch<T>(ScratchSlot::kInput, count * g.C * l.Hp * total);
  padded_copy<T>(x, strides, count, g.C, g.H, g.W, g.ph, g.pw, l.Hp, total, padded);
  if (g.sw == 1) return padded;
  // Column w = q * sw + r to [r][q]: a strided copy, only for strided layers.
  T* split = scratch<T>(ScratchSlot::kPhaseSplit, count * g.C * l.Hp * total);
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
      dot_run<T>(dy, W, pad.cols, x, W, g.sh * row_len, off + begin, count, vectors,
                 std::min(rows_per_call, g.OH - oh), acc + begin * W);
    }
  }
}

// Multiply-adds of a call (the columns of the last, partial vector of a row included).
int64_t width_work(const Geometry& g, const WidthLayout& l, int64_t kept_per_output) {
  return kept_per_output * g.N * g.OH * l.OWv;
}

// ---------------------------------------------------------------------------------------------
// Forward. Rows of whole vectors go straight into out; others through a scratch of wider rows.

template <typename T>
void forward_by_images(const ConvForward<T>& call, const WidthLayout& l,
                       const std::vector<int64_t>& off, int64_t parts) {
  const Geometry& g = call.g;
  const bool direct = l.OWv == g.OW;
  const int64_t out_image = g.O * g.OH * l.OWv;
  const T* xs = call.x.template data_ptr<T>();
  T* y = call.out.template data_ptr<T>();
  for_image_parts(g.N, parts, [&](int64_t, int64_t n_begin, int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      const T* xw = phase_split_input<T>(xs + n * call.x.stride(0), call.x.strides(), 1, g, l);
      T* target = direct ? y + n * out_image : scratch<T>(ScratchSlot::kOutput, out_image);
      width_forward_image<T>(g, l, xw, call.row_ptr, off.data(), call.values, call.bias, 0, g.O,
                             target);
      if (!direct) {
        T* image = y + n * g.O * g.OH * g.OW;
        for (int64_t row = 0; row < g.O * g.OH; ++row)
          std::copy(target + row * l.OWv, target + row * l.OWv + g.OW, image + row * g.OW);
      }
    }
  });
}

template <typename T>
void forward_by_channels(const ConvForward<T>& call, const WidthLayout& l,
                         const std::vector<int64_t>& off, int64_t work) {
  const Geometry& g = call.g;
  const bool direct = l.OWv == g.OW;
  const int64_t in_image = g.C * l.Hp * g.sw * l.Wq, out_image = g.O * g.OH * l.OWv;
  const T* xw = phase_split_input<T>(call.x.template data_ptr<T>(), call.x.strides(), g.N, g, l);
  T* target = direct ? call.out.template data_ptr<T>()
                     : scratch<T>(ScratchSlot::kOutput, g.N * out_image);
  for_balanced_parts(g.O, 1, CsrRowCost{call.row_ptr}, work,
                     [&](int64_t o_begin, int64_t o_end) {
    for (int64_t n = 0; n < g.N; ++n)
      width_forward_image<T>(g, l, xw + n * in_image, call.row_ptr, off.data(), call.values,
                             call.bias, o_begin, o_end, target + n * out_image);
  });
  if (!direct)
    call.out.copy_(at::from_blob(target, {g.N, g.O, g.OH, l.OWv}, call.x.options())
                       .narrow(3, 0, g.OW));
}

// ---------------------------------------------------------------------------------------------
// Backward: the input gradient, the weight gradient, or both from one padded copy of dy.

// What the backward needs besides the call: the layouts, the kept weights' offsets into the
// phase-split input (weight gradient), the input gradient's lists over dy and where the input
// gradient is computed.
template <typename T>
struct WidthBackwardPlan {
  WidthLayout l;
  int64_t Qv;       // columns per phase of the input gradient's scratch rows
  GradPadding pad;  // of dy
  std::vector<int64_t> off;
  std::vector<PhaseLists<T>> lists;
  bool direct;      // the input gradient straight into grad_x
  DxTarget to;
};

template <typename T>
WidthBackwardPlan<T> width_backward_plan(const ConvBackward<T>& call) {
  constexpr int W = Simd<T>::W;
  const Geometry& g = call.g;
  WidthBackwardPlan<T> plan;
  plan.l = width_layout(g, W);
  plan.Qv = round_up(ceil_div(g.pw + g.W, g.sw), W);
  // dy zero-padded: the input gradient's gather reads up to column left + Qv, the weight
  // gradient's dot products up to left + OWv.
  plan.pad = grad_padding(g, std::max(plan.Qv, plan.l.OWv));
  if (call.needs_weight())
    plan.off = tap_offsets(TapOffsets{g, plan.l.Hp, g.sw * plan.l.Wq, 1, true}, call.row_ptr,
                           call.col_idx, g.O);
  if (call.needs_input())
    plan.lists = phase_lists<T>(g, plan.pad, 1, call.t_row_ptr, call.t_col_idx,
                                call.t_value_index, call.values);
  // The input gradient straight into grad_x where its rows are whole vectors at column stride
  // 1; else through a phase-split scratch in padded coordinates.
  plan.direct = dx_direct_possible<T>(g);
  plan.to = plan.direct ? dx_direct<T>(g) : dx_scratch<T>(g, plan.Qv);
  return plan;
}

// One image's input gradient, from the phase-split scratch dxw back to columns w = q * sw + r,
// inside the input's window.
template <typename T>
void unsplit_grad_input_image(const Geometry& g, const WidthBackwardPlan<T>& plan, const T* dxw,
                              T* image) {
  const DxTarget& to = plan.to;
  for (int64_t cr = 0; cr < g.C * g.H; ++cr) {
    const T* from = dxw + ((cr / g.H) * to.rows + cr % g.H + g.ph) * to.row_len;
    for (int64_t w = 0; w < g.W; ++w) {
      const int64_t column = w + g.pw;
      image[cr * g.W + w] = from[(column % g.sw) * plan.Qv + column / g.sw];
    }
  }
}

// Split by images: each part pads dy (and lays out x) one image at a time and computes both
// gradients of it; the weight gradient in lane-wise accumulators of its own, summed after.
template <typename T>
void backward_by_images(const ConvBackward<T>& call, const WidthBackwardPlan<T>& plan,
                        int64_t parts) {
  const Geometry& g = call.g;
  const GradPadding& pad = plan.pad;
  const int64_t lanes_per_part = call.nnz * Simd<T>::W;
  const int64_t dy_image = g.O * pad.rows * pad.cols, dx_image = g.C * plan.to.image();
  const T* xs = call.x.template data_ptr<T>();
  const T* dys = call.grad_out.template data_ptr<T>();
  T* dx = call.needs_input() ? call.grad_x.template data_ptr<T>() : nullptr;
  std::vector<T> acc(call.needs_weight() ? parts * lanes_per_part : 0, T(0));
  for_image_parts(g.N, parts, [&](int64_t part, int64_t n_begin, int64_t n_end) {
    T* dyw = scratch<T>(ScratchSlot::kGradOutput, dy_image);
    for (int64_t n = n_begin; n < n_end; ++n) {
      padded_copy<T>(dys + n * call.grad_out.stride(0), call.grad_out.strides(), 1, g.O, g.OH,
                     g.OW, pad.top, pad.left, pad.rows, pad.cols, dyw);
      if (call.needs_weight()) {
        const T* xw = phase_split_input<T>(xs + n * call.x.stride(0), call.x.strides(), 1, g,
                                           plan.l);
        width_grad_weight_image<T>(g, plan.l, pad, xw, dyw, call.row_ptr, plan.off.data(), 0,
                                   g.O, acc.data() + part * lanes_per_part);
      }
      if (call.needs_input() && plan.direct) {
        width_grad_input_image<T>(g, pad, dyw, plan.lists, 0, g.C, plan.to, dx + n * dx_image);
      } else if (call.needs_input()) {
        T* dxw = scratch<T>(ScratchSlot::kOutput, dx_image);
        width_grad_input_image<T>(g, pad, dyw, plan.lists, 0, g.C, plan.to, dxw);
        unsplit_grad_input_image<T>(g, plan, dxw, dx + n * g.C * g.H * g.W);
      }
    }
  });
  if (call.needs_weight()) store_lane_sums<T>(acc.data(), parts, call.nnz, call.grad_values);
}

// Split by output channels, over dy (dyw) and x laid out for every image at once.
template <typename T>
void grad_weight_by_channels(const ConvBackward<T>& call, const WidthBackwardPlan<T>& plan,
                             const T* dyw) {
  const Geometry& g = call.g;
  const WidthLayout& l = plan.l;
  const int64_t dy_image = g.O * plan.pad.rows * plan.pad.cols;
  const int64_t in_image = g.C * l.Hp * g.sw * l.Wq;
  const T* xw = phase_split_input<T>(call.x.template data_ptr<T>(), call.x.strides(), g.N, g, l);
  std::vector<T> acc(call.nnz * Simd<T>::W, T(0));
  for_balanced_parts(g.O, 1, CsrRowCost{call.row_ptr}, width_work(g, l, call.nnz + g.O),
                     [&](int64_t o_begin, int64_t o_end) {
    for (int64_t n = 0; n < g.N; ++n)
      width_grad_weight_image<T>(g, l, plan.pad, xw + n * in_image, dyw + n * dy_image,
                                 call.row_ptr, plan.off.data(), o_begin, o_end, acc.data());
  });
  store_lane_sums<T>(acc.data(), 1, call.nnz, call.grad_values);
}

// Split by input channels, over dy (dyw) padded for every image at once.
template <typename T>
void grad_input_by_channels(const ConvBackward<T>& call, const WidthBackwardPlan<T>& plan,
                            const T* dyw) {
  const Geometry& g = call.g;
  const DxTarget& to = plan.to;
  const int64_t dy_image = g.O * plan.pad.rows * plan.pad.cols, dx_image = g.C * to.image();
  T* target = plan.direct ? call.grad_x.template data_ptr<T>()
                          : scratch<T>(ScratchSlot::kOutput, g.N * dx_image);
  const auto prefix = input_channel_cost_prefix(g, call.t_row_ptr);
  const int64_t work = prefix[g.C] * g.N * g.H * to.vectors * Simd<T>::W;
  for_balanced_parts(g.C, 1, [&](int64_t c) { return prefix[c]; }, work,
                     [&](int64_t c_begin, int64_t c_end) {
    for (int64_t n = 0; n < g.N; ++n)
      width_grad_input_image<T>(g, plan.pad, dyw + n * dy_image, plan.lists, c_begin, c_end, to,
                                target + n * dx_image);
  });
  if (plan.direct) return;
  const int64_t Hp = g.H + 2 * g.ph, Qv = plan.Qv;
  const at::Tensor dxw = at::from_blob(target, {g.N, g.C, Hp, g.sw, Qv}, call.x.options());
  // Back to columns w = q * sw + r, then the input's window of the padded coordinates.
  const at::Tensor columns = g.sw == 1 ? dxw.view({g.N, g.C, Hp, Qv})
                                       : dxw.transpose(3, 4).reshape({g.N, g.C, Hp, Qv * g.sw});
  call.grad_x.copy_(columns.narrow(2, g.ph, g.H).narrow(3, g.pw, g.W));
}

}  // namespace

template <typename T>
void width_forward(const ConvForward<T>& call) {
  const Geometry& g = call.g;
  const WidthLayout l = width_layout(g, Simd<T>::W);
  const auto off = tap_offsets(TapOffsets{g, l.Hp, g.sw * l.Wq, 1, true}, call.row_ptr,
                               call.col_idx, g.O);
  const int64_t work = width_work(g, l, call.nnz + g.O);
  const int64_t parts = image_parts(g.N, work);
  if (parts > 0) forward_by_images<T>(call, l, off, parts);
  else forward_by_channels<T>(call, l, off, work);
}

template <typename T>
void width_backward(const ConvBackward<T>& call) {
  const Geometry& g = call.g;
  const WidthBackwardPlan<T> plan = width_backward_plan<T>(call);
  const int64_t work = width_work(g, plan.l, call.nnz + g.O);
  const int64_t parts = image_parts(g.N, work, call.needs_weight() ? call.nnz * Simd<T>::W : 0,
                                    call.x.numel());
  if (parts > 0) {
    backward_by_images<T>(call, plan, parts);
    return;
  }
  const GradPadding& pad = plan.pad;
  T* dyw = scratch<T>(ScratchSlot::kGradOutput, g.N * g.O * pad.rows * pad.cols);
  padded_copy<T>(call.grad_out.template data_ptr<T>(), call.grad_out.strides(), g.N, g.O, g.OH,
                 g.OW, pad.top, pad.left, pad.rows, pad.cols, dyw);
  if (call.needs_weight()) grad_weight_by_channels<T>(call, plan, dyw);
  if (call.needs_input()) grad_input_by_channels<T>(call, plan, dyw);
}

template void width_forward<float>(const ConvForward<float>&);
template void width_forward<double>(const ConvForward<double>&);
template void width_backward<float>(const ConvBackward<float>&);
template void width_backward<double>(const ConvBackward<double>&);

}  // namespace sparse_tickets_cpu
