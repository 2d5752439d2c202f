// The compact linear as one op with its derivative in C++: y = x W^T + b for the compact
// weight W (its kept `values` at the CSR index of the mask), forward and backward composed of
// the kernel ops spmm and sddmm through the dispatcher.
//
// Why here and not as a Python autograd Function: at the paper's sizes (LeNet-300-100, batch
// 60) a layer's sparse arithmetic at 2-20% density takes tens of microseconds, about what a
// Python Function's forward and backward cost on their own. With the derivative in C++ the
// backward pass runs no Python at all, and the forward one op call.
//
// This file knows the kernels only by their schemas (library.py): it holds no arithmetic.

#include <torch/autograd.h>
#include <torch/library.h>

namespace sparse_tickets_cpu {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor spmm(const at::Tensor& x, const at::Tensor& row_ptr, const at::Tensor& col_idx,
                const at::Tensor& values, const std::optional<at::Tensor>& value_index,
                const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sparse_tickets::spmm", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&)>();
  return op.call(x, row_ptr, col_idx, values, value_index, bias);
}

at::Tensor sddmm(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& row_ptr,
                 const at::Tensor& col_idx) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sparse_tickets::sddmm", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&)>();
  return op.call(grad_out, x, row_ptr, col_idx);
}

// The op below autograd (no_grad, inference mode): the forward only.
at::Tensor compact_linear_forward(const at::Tensor& x, const at::Tensor& row_ptr,
                                  const at::Tensor& col_idx, const at::Tensor& t_row_ptr,
                                  const at::Tensor& t_col_idx, const at::Tensor& t_value_index,
                                  const at::Tensor& values, const std::optional<at::Tensor>& bias) {
  return spmm(x, row_ptr, col_idx, values, std::nullopt, bias);
}

class CompactLinear : public torch::autograd::Function<CompactLinear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& row_ptr,
                            const at::Tensor& col_idx, const at::Tensor& t_row_ptr,
                            const at::Tensor& t_col_idx, const at::Tensor& t_value_index,
                            const at::Tensor& values, const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, values, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return spmm(x, row_ptr, col_idx, values, std::nullopt, bias);
  }

  // dx = dy W (the transposed index);  dvalues = (dy^T x) at the kept entries;  db = sum_b dy
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &values = saved[1], &row_ptr = saved[2],
                     &col_idx = saved[3], &t_row_ptr = saved[4], &t_col_idx = saved[5],
                     &t_value_index = saved[6];
    const at::Tensor grad_y = grad_outputs[0].contiguous();
    at::Tensor grad_x, grad_values, grad_bias;
    if (ctx->needs_input_grad(0))
      grad_x = spmm(grad_y, t_row_ptr, t_col_idx, values, t_value_index, std::nullopt);
    if (ctx->needs_input_grad(6)) grad_values = sddmm(grad_y, x, row_ptr, col_idx);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(7))
      grad_bias = grad_y.sum(0);
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            grad_values, grad_bias};
  }
};

at::Tensor compact_linear_autograd(const at::Tensor& x, const at::Tensor& row_ptr,
                                   const at::Tensor& col_idx, const at::Tensor& t_row_ptr,
                                   const at::Tensor& t_col_idx, const at::Tensor& t_value_index,
                                   const at::Tensor& values,
                                   const std::optional<at::Tensor>& bias) {
  return CompactLinear::apply(x, row_ptr, col_idx, t_row_ptr, t_col_idx, t_value_index, values,
                              bias);
}

}  // namespace
}  // namespace sparse_tickets_cpu

TORCH_LIBRARY_IMPL(sparse_tickets, CPU, m) {
  m.impl("compact_linear", &sparse_tickets_cpu::compact_linear_forward);
}

TORCH_LIBRARY_IMPL(sparse_tickets, AutogradCPU, m) {
  m.impl("compact_linear", &sparse_tickets_cpu::compact_linear_autograd);
}
