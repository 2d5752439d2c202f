// The batch variant of the direct sparse convolution (see sparse_conv.cpp): the batch is the
// vector. Operands are copied batch-minor, [N/BW][C][H'][W'][BW] with BW = one SIMD width (the
// batch's tail lanes are zero, so any batch size is exact), and a block of outputs is a few
// output pixels of one row of BW images. Each block function below computes one block of BW
// images (block nb: images nb * BW ...) for a range of channels, from that block's laid-out
// operands.
//
// One vector of images per pixel: two (16 fp32 lanes on AVX2) did no better on the paper's
// layers: the input window each output row reads doubles, and on the wider layers it no longer
// stays in L2.

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

// dst[nb][c][top + h][left + w][b] = src[nb * BW + b][c][h][w]: [N][C][H][Wd] (any strides,
// Wd contiguous) to [N/BW][C][rows][cols][BW], zero everywhere else (padding rows and columns
// up to rows x cols, and the lanes of a batch past N).
template <typename T>
void to_batch_minor(const T* src, at::IntArrayRef strides, int64_t N, int64_t C, int64_t H,
                    int64_t Wd, int64_t top, int64_t left, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t BW = Simd<T>::W;
  const int64_t NB = ceil_div(N, BW), plane = rows * cols * BW;
  at::parallel_for(0, NB * C, 1, [&](int64_t begin, int64_t end) {
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
      const T* images = src + nb * BW * strides[0] + c * strides[1];
      for (int64_t h = 0; h < H; ++h)
        to_batch_minor_panel<T>(images + h * strides[2], strides[0], N - nb * BW, Wd,
                                out + ((top + h) * cols + left) * BW, BW, BW);
    }
  });
}

// Output channels [o_begin, o_end) of out (N, O, OH, OW) from the block's input xb
// [C][Hp][Wp][BW]: each output row is computed batch-minor into `tile` (OW x BW) and transposed
// straight into out.
template <typename T>
void batch_forward_block(const Geometry& g, const T* xb, const index_t* row_ptr,
                         const int64_t* off, const T* values, const T* bias, int64_t o_begin,
                         int64_t o_end, int64_t nb, T* tile, T* out) {
  constexpr int64_t BW = Simd<T>::W;
  const int64_t Wp = g.W + 2 * g.pw, image = g.O * g.OH * g.OW;
  const int64_t images = std::min(BW, g.N - nb * BW);
  T* block_out = out + nb * BW * image;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* src = xb + oh * g.sh * Wp * BW;
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
      gather_run<T, 1>(src, g.sw * BW, off + begin, values + begin, count,
                       bias != nullptr ? bias[o] : T(0), tile, BW, g.OW);
      from_batch_minor_panel<T>(tile, BW, images, g.OW, block_out + (o * g.OH + oh) * g.OW, image);
    }
  }
}

// Input channels [c_begin, c_end) of dx (N, C, H, W) from the block's dyb
// [O][pad.rows][pad.cols][BW], a row at a time through `tile` (W x BW).
template <typename T>
void batch_grad_input_block(const Geometry& g, const GradPadding& pad, const T* dyb,
                            const std::vector<PhaseLists<T>>& lists, int64_t c_begin,
                            int64_t c_end, int64_t nb, T* tile, T* dx) {
  constexpr int64_t BW = Simd<T>::W;
  const int64_t image = g.C * g.H * g.W;
  const int64_t images = std::min(BW, g.N - nb * BW);
  T* block_dx = dx + nb * BW * image;
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
        gather_run<T, 1>(src, BW, l.offsets[phase].data(), l.values[phase].data(),
                         int64_t(l.offsets[phase].size()), T(0), dst, g.sw * BW, q1 - q0 + 1);
      }
      from_batch_minor_panel<T>(tile, BW, images, g.W, block_dx + (ci * g.H + h) * g.W, image);
    }
  }
}

// acc[j][0:W] += the block's lane-wise share of the weight gradient of the kept weights j of
// output channels [o_begin, o_end), from xb (as in the forward) and dyb (as above).
template <typename T>
void batch_grad_weight_block(const Geometry& g, const GradPadding& pad, const T* xb,
                             const T* dyb, const index_t* row_ptr, const int64_t* off,
                             int64_t o_begin, int64_t o_end, T* acc) {
  constexpr int64_t BW = Simd<T>::W;
  const int64_t Wp = g.W + 2 * g.pw;
  const int64_t rows_per_call = dot_rows(g.OW, g.OH);
  for (int64_t oh = 0; oh < g.OH; oh += rows_per_call) {
    const int64_t rows = std::min(rows_per_call, g.OH - oh);
    const T* x = xb + oh * g.sh * Wp * BW;
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int64_t begin = row_ptr[o], count = row_ptr[o + 1] - begin;
      const T* dy = dyb + ((o * pad.rows + pad.top + oh) * pad.cols + pad.left) * BW;
      dot_run<T>(dy, BW, pad.cols * BW, x, g.sw * BW, g.sh * Wp * BW, off + begin, count, g.OW,
                 rows, acc + begin * BW);
    }
  }
}

// The laid-out extents of one block of BW images: the padded input [C][Hp][Wp][BW] and, in the
// backward, dy padded for the input gradient's gather [O][pad.rows][pad.cols][BW].
struct BatchLayout {
  int64_t NB, Hp, Wp, x_block, dy_block;
  GradPadding pad;
};

template <typename T>
BatchLayout batch_layout(const Geometry& g) {
  constexpr int64_t BW = Simd<T>::W;
  BatchLayout l;
  l.NB = ceil_div(g.N, BW);
  l.Hp = g.H + 2 * g.ph;
  l.Wp = g.W + 2 * g.pw;
  l.x_block = g.C * l.Hp * l.Wp * BW;
  l.pad = grad_padding(g, 0);
  l.dy_block = g.O * l.pad.rows * l.pad.cols * BW;
  return l;
}

// Multiply-adds of a call over every block (the lanes past N included: they are computed).
template <typename T>
int64_t batch_work(const Geometry& g, const BatchLayout& l, int64_t kept_per_output) {
  return kept_per_output * l.NB * g.OH * g.OW * Simd<T>::W;
}

// Images x of block nb -> xb, laid out as the forward and the weight gradient read it.
template <typename T>
void lay_out_input_block(const Geometry& g, const BatchLayout& l, const at::Tensor& x,
                         int64_t nb, T* xb) {
  constexpr int64_t BW = Simd<T>::W;
  to_batch_minor<T>(x.data_ptr<T>() + nb * BW * x.stride(0), x.strides(),
                    std::min(BW, g.N - nb * BW), g.C, g.H, g.W, g.ph, g.pw, l.Hp, l.Wp, xb);
}

template <typename T>
void lay_out_grad_output_block(const Geometry& g, const BatchLayout& l, const at::Tensor& dy,
                               int64_t nb, T* dyb) {
  constexpr int64_t BW = Simd<T>::W;
  to_batch_minor<T>(dy.data_ptr<T>() + nb * BW * dy.stride(0), dy.strides(),
                    std::min(BW, g.N - nb * BW), g.O, g.OH, g.OW, l.pad.top, l.pad.left,
                    l.pad.rows, l.pad.cols, dyb);
}

// ---------------------------------------------------------------------------------------------
// Forward.

template <typename T>
void forward_by_images(const ConvForward<T>& call, const BatchLayout& l,
                       const std::vector<int64_t>& off, int64_t parts) {
  const Geometry& g = call.g;
  T* y = call.out.template data_ptr<T>();
  for_image_parts(l.NB, parts, [&](int64_t, int64_t nb_begin, int64_t nb_end) {
    std::vector<T> tile(g.OW * Simd<T>::W);
    T* xb = scratch<T>(ScratchSlot::kInput, l.x_block);
    for (int64_t nb = nb_begin; nb < nb_end; ++nb) {
      lay_out_input_block<T>(g, l, call.x, nb, xb);
      batch_forward_block<T>(g, xb, call.row_ptr, off.data(), call.values, call.bias, 0, g.O,
                             nb, tile.data(), y);
    }
  });
}

template <typename T>
void forward_by_channels(const ConvForward<T>& call, const BatchLayout& l,
                         const std::vector<int64_t>& off, int64_t work) {
  const Geometry& g = call.g;
  T* y = call.out.template data_ptr<T>();
  T* xb = scratch<T>(ScratchSlot::kInput, l.NB * l.x_block);
  to_batch_minor<T>(call.x.template data_ptr<T>(), call.x.strides(), g.N, g.C, g.H, g.W, g.ph,
                    g.pw, l.Hp, l.Wp, xb);
  for_balanced_parts(g.O, 1, CsrRowCost{call.row_ptr}, work,
                     [&](int64_t o_begin, int64_t o_end) {
    std::vector<T> tile(g.OW * Simd<T>::W);
    for (int64_t nb = 0; nb < l.NB; ++nb)
      batch_forward_block<T>(g, xb + nb * l.x_block, call.row_ptr, off.data(), call.values,
                             call.bias, o_begin, o_end, nb, tile.data(), y);
  });
}

// ---------------------------------------------------------------------------------------------
// Backward: the input gradient, the weight gradient, or both from one layout of dy.

// What the backward needs besides the call: the kept weights' offsets into xb (weight
// gradient) and the input gradient's lists over dyb.
template <typename T>
struct BatchBackwardPlan {
  BatchLayout l;
  std::vector<int64_t> off;
  std::vector<PhaseLists<T>> lists;
};

// Split by images: each part lays out dy (and x) one block at a time and computes both
// gradients of it; the weight gradient in lane-wise accumulators of its own, summed after.
template <typename T>
void backward_by_images(const ConvBackward<T>& call, const BatchBackwardPlan<T>& plan,
                        int64_t parts) {
  const Geometry& g = call.g;
  const BatchLayout& l = plan.l;
  constexpr int64_t BW = Simd<T>::W;
  const int64_t lanes_per_part = call.nnz * BW;
  T* dx = call.needs_input() ? call.grad_x.template data_ptr<T>() : nullptr;
  std::vector<T> acc(call.needs_weight() ? parts * lanes_per_part : 0, T(0));
  for_image_parts(l.NB, parts, [&](int64_t part, int64_t nb_begin, int64_t nb_end) {
    std::vector<T> tile(g.W * BW);
    T* dyb = scratch<T>(ScratchSlot::kGradOutput, l.dy_block);
    T* xb = call.needs_weight() ? scratch<T>(ScratchSlot::kInput, l.x_block) : nullptr;
    for (int64_t nb = nb_begin; nb < nb_end; ++nb) {
      lay_out_grad_output_block<T>(g, l, call.grad_out, nb, dyb);
      if (call.needs_weight()) {
        lay_out_input_block<T>(g, l, call.x, nb, xb);
        batch_grad_weight_block<T>(g, l.pad, xb, dyb, call.row_ptr, plan.off.data(), 0, g.O,
                                   acc.data() + part * lanes_per_part);
      }
      if (call.needs_input())
        batch_grad_input_block<T>(g, l.pad, dyb, plan.lists, 0, g.C, nb, tile.data(), dx);
    }
  });
  if (call.needs_weight()) store_lane_sums<T>(acc.data(), parts, call.nnz, call.grad_values);
}

// Split by output channels, over every block of dy (dyb) and x laid out at once.
template <typename T>
void grad_weight_by_channels(const ConvBackward<T>& call, const BatchBackwardPlan<T>& plan,
                             const T* dyb) {
  const Geometry& g = call.g;
  const BatchLayout& l = plan.l;
  T* xb = scratch<T>(ScratchSlot::kInput, l.NB * l.x_block);
  to_batch_minor<T>(call.x.template data_ptr<T>(), call.x.strides(), g.N, g.C, g.H, g.W, g.ph,
                    g.pw, l.Hp, l.Wp, xb);
  std::vector<T> acc(call.nnz * Simd<T>::W, T(0));
  const int64_t work = batch_work<T>(g, l, call.nnz + g.O);
  for_balanced_parts(g.O, 1, CsrRowCost{call.row_ptr}, work,
                     [&](int64_t o_begin, int64_t o_end) {
    for (int64_t nb = 0; nb < l.NB; ++nb)
      batch_grad_weight_block<T>(g, l.pad, xb + nb * l.x_block, dyb + nb * l.dy_block,
                                 call.row_ptr, plan.off.data(), o_begin, o_end, acc.data());
  });
  store_lane_sums<T>(acc.data(), 1, call.nnz, call.grad_values);
}

// Split by input channels, over every block of dy (dyb).
template <typename T>
void grad_input_by_channels(const ConvBackward<T>& call, const BatchBackwardPlan<T>& plan,
                            const T* dyb) {
  const Geometry& g = call.g;
  const BatchLayout& l = plan.l;
  constexpr int64_t BW = Simd<T>::W;
  T* dx = call.grad_x.template data_ptr<T>();
  const auto prefix = input_channel_cost_prefix(g, call.t_row_ptr);
  const int64_t work = prefix[g.C] * l.NB * g.H * g.W * BW;
  for_balanced_parts(g.C, 1, [&](int64_t c) { return prefix[c]; }, work,
                     [&](int64_t c_begin, int64_t c_end) {
    std::vector<T> tile(g.W * BW);
    for (int64_t nb = 0; nb < l.NB; ++nb)
      batch_grad_input_block<T>(g, l.pad, dyb + nb * l.dy_block, plan.lists, c_begin, c_end, nb,
                                tile.data(), dx);
  });
}

}  // namespace

template <typename T>
void batch_forward(const ConvForward<T>& call) {
  const Geometry& g = call.g;
  const BatchLayout l = batch_layout<T>(g);
  const auto off = tap_offsets(TapOffsets{g, l.Hp, l.Wp, Simd<T>::W, false}, call.row_ptr,
                               call.col_idx, g.O);
  const int64_t work = batch_work<T>(g, l, call.nnz + g.O);
  const int64_t parts = image_parts(l.NB, work);
  if (parts > 0) forward_by_images<T>(call, l, off, parts);
  else forward_by_channels<T>(call, l, off, work);
}

template <typename T>
void batch_backward(const ConvBackward<T>& call) {
  const Geometry& g = call.g;
  constexpr int64_t BW = Simd<T>::W;
  BatchBackwardPlan<T> plan;
  plan.l = batch_layout<T>(g);
  const BatchLayout& l = plan.l;
  if (call.needs_weight())
    plan.off = tap_offsets(TapOffsets{g, l.Hp, l.Wp, BW, false}, call.row_ptr, call.col_idx,
                           g.O);
  if (call.needs_input())
    plan.lists = phase_lists<T>(g, l.pad, BW, call.t_row_ptr, call.t_col_idx,
                                call.t_value_index, call.values);
  const int64_t work = batch_work<T>(g, l, call.nnz + g.O);
  const int64_t parts = image_parts(l.NB, work, call.needs_weight() ? call.nnz * BW : 0,
                                    call.x.numel());
  if (parts > 0) {
    backward_by_images<T>(call, plan, parts);
    return;
  }
  T* dyb = scratch<T>(ScratchSlot::kGradOutput, l.NB * l.dy_block);
  to_batch_minor<T>(call.grad_out.template data_ptr<T>(), call.grad_out.strides(), g.N, g.O,
                    g.OH, g.OW, l.pad.top, l.pad.left, l.pad.rows, l.pad.cols, dyb);
  if (call.needs_weight()) grad_weight_by_channels<T>(call, plan, dyb);
  if (call.needs_input()) grad_input_by_channels<T>(call, plan, dyb);
}

template void batch_forward<float>(const ConvForward<float>&);
template void batch_forward<double>(const ConvForward<double>&);
template void batch_backward<float>(const ConvBackward<float>&);
template void batch_backward<double>(const ConvBackward<double>&);

}  // namespace sparse_tickets_cpu
