// Direct sparse conv2d on the CPU: forward, input gradient and weight gradient (at the kept
// weights only) of a compact weight, without im2col.
//
// This unit checks the operands and registers the ops (their schemas and semantics live in
// sparse_tickets/ops/native/library.py); each variant is a unit of its own (conv_batch.cpp,
// conv_width.cpp), their inner kernels are in conv_kernels.h, what they share in conv_common.h.
// The weight (O, C/groups, kH, kW) is the CSR index of its mask seen as the matrix
// (O, C/groups * kH * kW) plus its transpose (sparse_tickets.compact.CompactIndex); a column j
// is the tap (c, kh, kw) = (j / (kH*kW), j / kW % kH, j % kW).
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
// rows) outermost so that the input window every kept weight reads stays in cache. How many
// threads a call takes is the one rule of common.h (threads_for_work).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "common.h"
#include "conv_common.h"

namespace sparse_tickets_cpu {
namespace {

enum class Variant { kBatch, kWidth };

Variant parse_variant(const char* op, const std::string& variant) {
  if (variant == "batch") return Variant::kBatch;
  if (variant == "width") return Variant::kWidth;
  TORCH_CHECK(false, op, ": variant must be \"batch\" or \"width\", got \"", variant, "\"");
  return Variant::kBatch;  // not reached
}

// A float tensor on the CPU with the input's dtype.
void check_float(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  check_cpu(op, name, t);
  check_float_dtype(op, name, t);
  check_same_dtype(op, name, t, "the input", like);
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
  check_row_ptr(op, "row_ptr", c.row_ptr, "col_idx", c.nnz, c.g.O);
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
  AT_DISPATCH_FLOATING_TYPES(x_in.scalar_type(), "sparse_tickets_sparse_conv2d", [&] {
    using T = scalar_t;
    const ConvForward<T> call{g, width_contiguous(x_in), c.row_ptr.data_ptr<index_t>(),
                              c.col_idx.data_ptr<index_t>(), c.values.data_ptr<T>(),
                              bias.defined() ? bias.data_ptr<T>() : nullptr, c.nnz, out};
    if (c.variant == Variant::kBatch) batch_forward<T>(call);
    else width_forward<T>(call);
  });
  return out;
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
  check_row_ptr(op, "t_row_ptr", t_row_ptr, "t_col_idx", c.nnz, g.Cg * g.taps());
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
  AT_DISPATCH_FLOATING_TYPES(x_in.scalar_type(), "sparse_tickets_sparse_conv2d_backward", [&] {
    using T = scalar_t;
    const ConvBackward<T> call{g, width_contiguous(x_in), width_contiguous(grad_out_in),
                               c.row_ptr.data_ptr<index_t>(), c.col_idx.data_ptr<index_t>(),
                               t_row_ptr.data_ptr<index_t>(), t_col_idx.data_ptr<index_t>(),
                               t_value_index.data_ptr<index_t>(), c.values.data_ptr<T>(), c.nnz,
                               needs_input ? grad_x : at::Tensor(),
                               needs_weight ? grad_values.data_ptr<T>() : nullptr};
    if (c.variant == Variant::kBatch) batch_backward<T>(call);
    else width_backward<T>(call);
  });
  return {grad_x, grad_values};
}

}  // namespace
}  // namespace sparse_tickets_cpu

TORCH_LIBRARY_IMPL(sparse_tickets, CPU, m) {
  m.impl("sparse_conv2d", &sparse_tickets_cpu::sparse_conv2d_cpu);
  m.impl("sparse_conv2d_backward", &sparse_tickets_cpu::sparse_conv2d_backward_cpu);
}
