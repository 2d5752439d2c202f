// CUDA implementations of the sparse_tickets ops; the schemas and their semantics live in
// sparse_tickets/ops/native/library.py (defined from Python, so no TORCH_LIBRARY block here).
//
// Every input is checked here, with a message naming the op and the failed condition; the
// kernels (compact_kernels.cu) take raw pointers and trust what they get. Read-only operands of
// another layout are copied (spmm/sddmm read the dense operands transposed, batch innermost, and
// make that copy anyway); tensors updated in place must share the parameter's dense layout.
// What is not checked, because it would cost a device-to-host copy: that the int32 index tensors
// are well formed (row_ptr non-decreasing from 0 to nnz, col_idx inside the dense operand,
// value_index inside values).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "compact_kernels.cuh"

namespace {

namespace kernels = sparse_tickets::cuda;

kernels::ElementType element_type(const at::Tensor& tensor, const char* op, const char* name) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return kernels::ElementType::kFloat32;
    case at::kDouble:
      return kernels::ElementType::kFloat64;
    case at::kHalf:
      return kernels::ElementType::kFloat16;
    case at::kBFloat16:
      return kernels::ElementType::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK(false, op, ": ", name, " has dtype ", tensor.scalar_type(),
              "; the CUDA kernels support float32, float64, float16 and bfloat16");
}

void check_cuda(const at::Tensor& tensor, const char* op, const char* name) {
  TORCH_CHECK(tensor.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ",
              tensor.device());
}

void check_same_device(const at::Tensor& tensor, const at::Tensor& reference, const char* op,
                       const char* name, const char* reference_name) {
  TORCH_CHECK(tensor.device() == reference.device(), op, ": ", name, " is on ", tensor.device(),
              " but ", reference_name, " is on ", reference.device(), "; expected one device");
}

void check_same_dtype(const at::Tensor& tensor, const at::Tensor& reference, const char* op,
                      const char* name, const char* reference_name) {
  TORCH_CHECK(tensor.scalar_type() == reference.scalar_type(), op, ": ", name, " has dtype ",
              tensor.scalar_type(), " but ", reference_name, " has ", reference.scalar_type(),
              "; expected the same dtype");
}

// A 1-D int32 index tensor on `reference`'s device, made contiguous.
at::Tensor checked_index(const at::Tensor& index, const at::Tensor& reference, const char* op,
                         const char* name, const char* reference_name) {
  check_same_device(index, reference, op, name, reference_name);
  TORCH_CHECK(index.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ",
              index.scalar_type());
  TORCH_CHECK(index.dim() == 1, op, ": ", name, " must be 1-D, got shape ", index.sizes());
  TORCH_CHECK(index.size(0) <= std::numeric_limits<int32_t>::max(), op, ": ", name, " has ",
              index.size(0), " entries; int32 indices address at most 2^31 - 1");
  return index.contiguous();
}

// row_ptr and col_idx of a CSR index with `rows` rows, on `reference`'s device.
void check_csr(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t rows,
               const at::Tensor& reference, const char* op, const char* reference_name) {
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.size(0) == rows + 1, op, ": row_ptr must be 1-D of ",
              rows + 1, " offsets (rows + 1), got shape ", row_ptr.sizes());
  TORCH_CHECK(col_idx.dim() == 1, op, ": col_idx must be 1-D, got shape ", col_idx.sizes());
  check_same_device(row_ptr, reference, op, "row_ptr", reference_name);
  check_same_device(col_idx, reference, op, "col_idx", reference_name);
}

void check_launch(cudaError_t error, const char* op) {
  TORCH_CHECK(error == cudaSuccess, op, ": CUDA kernel launch failed: ",
              cudaGetErrorString(error));
}

at::Tensor spmm_cuda(const at::Tensor& x, const at::Tensor& row_ptr, const at::Tensor& col_idx,
                     const at::Tensor& values, const std::optional<at::Tensor>& value_index,
                     const std::optional<at::Tensor>& bias) {
  const char* op = "sparse_tickets::spmm";
  check_cuda(x, op, "x");
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D (batch, in_features), got shape ", x.sizes());
  const auto type = element_type(x, op, "x");
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.size(0) >= 1, op,
              ": row_ptr must be 1-D of rows + 1 >= 1 offsets, got shape ", row_ptr.sizes());
  const int64_t rows = row_ptr.size(0) - 1;
  const int64_t batch = x.size(0);
  const at::Tensor row_ptr_c = checked_index(row_ptr, x, op, "row_ptr", "x");
  const at::Tensor col_idx_c = checked_index(col_idx, x, op, "col_idx", "x");
  const int64_t nnz = col_idx.size(0);
  TORCH_CHECK(nnz == 0 || x.size(1) > 0, op, ": x has no columns but the index has ", nnz,
              " nonzeros");
  check_same_device(values, x, op, "values", "x");
  check_same_dtype(values, x, op, "values", "x");
  TORCH_CHECK(values.dim() == 1 && values.size(0) == nnz, op,
              ": values must be 1-D with one entry per nonzero (", nnz, "), got shape ",
              values.sizes());
  at::Tensor value_index_c;
  if (value_index.has_value()) {
    value_index_c = checked_index(*value_index, x, op, "value_index", "x");
    TORCH_CHECK(value_index_c.size(0) == nnz, op, ": value_index must have one entry per nonzero (",
                nnz, "), got ", value_index_c.size(0));
  }
  at::Tensor bias_c;
  if (bias.has_value()) {
    check_same_device(*bias, x, op, "bias", "x");
    check_same_dtype(*bias, x, op, "bias", "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == rows, op, ": bias must be 1-D of ", rows,
                " entries (rows), got shape ", bias->sizes());
    bias_c = bias->contiguous();
  }

  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor out = at::empty({batch, rows}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor x_t = x.t().contiguous();  // (in_features, batch): batch innermost
  const at::Tensor values_c = values.contiguous();
  check_launch(kernels::launch_spmm(
                   type, x_t.data_ptr(), row_ptr_c.data_ptr<int32_t>(),
                   col_idx_c.data_ptr<int32_t>(), values_c.data_ptr(),
                   value_index_c.defined() ? value_index_c.data_ptr<int32_t>() : nullptr,
                   bias_c.defined() ? bias_c.data_ptr() : nullptr, out.data_ptr(), rows, batch,
                   at::cuda::getCurrentCUDAStream().stream()),
               op);
  return out;
}

at::Tensor sddmm_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& row_ptr,
                      const at::Tensor& col_idx) {
  const char* op = "sparse_tickets::sddmm";
  check_cuda(x, op, "x");
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D (batch, in_features), got shape ", x.sizes());
  const auto type = element_type(x, op, "x");
  check_same_device(grad_out, x, op, "grad_out", "x");
  check_same_dtype(grad_out, x, op, "grad_out", "x");
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0), op,
              ": grad_out must be 2-D (batch, rows) with x's batch ", x.size(0), ", got shape ",
              grad_out.sizes());
  const int64_t rows = grad_out.size(1);
  const int64_t batch = x.size(0);
  check_csr(row_ptr, col_idx, rows, x, op, "x");
  const at::Tensor row_ptr_c = checked_index(row_ptr, x, op, "row_ptr", "x");
  const at::Tensor col_idx_c = checked_index(col_idx, x, op, "col_idx", "x");
  const int64_t nnz = col_idx.size(0);
  TORCH_CHECK(nnz == 0 || x.size(1) > 0, op, ": x has no columns but the index has ", nnz,
              " nonzeros");

  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor out = at::empty({nnz}, x.options());
  if (nnz == 0) return out;
  const at::Tensor grad_out_t = grad_out.t().contiguous();  // (rows, batch)
  const at::Tensor x_t = x.t().contiguous();                // (in_features, batch)
  check_launch(kernels::launch_sddmm(type, grad_out_t.data_ptr(), x_t.data_ptr(),
                                     row_ptr_c.data_ptr<int32_t>(),
                                     col_idx_c.data_ptr<int32_t>(), out.data_ptr(), rows, batch,
                                     at::cuda::getCurrentCUDAStream().stream()),
               op);
  return out;
}

// Whether `tensor` lays its elements out in memory exactly as `param` does (same sizes, same
// strides wherever a size is not 1), so both can be walked as one flat run.
bool same_layout(const at::Tensor& tensor, const at::Tensor& param) {
  if (tensor.sizes() != param.sizes()) return false;
  for (int64_t d = 0; d < param.dim(); ++d) {
    if (param.size(d) != 1 && tensor.stride(d) != param.stride(d)) return false;
  }
  return true;
}

void check_param(const at::Tensor& param, const char* op) {
  check_cuda(param, op, "param");
  TORCH_CHECK(param.is_non_overlapping_and_dense(), op,
              ": param must be dense and non-overlapping (e.g. contiguous), got strides ",
              param.strides(), " for shape ", param.sizes());
}

// State updated in place: on param's device, of its dtype and layout.
void check_state(const at::Tensor& state, const at::Tensor& param, const char* op,
                 const char* name) {
  check_same_device(state, param, op, name, "param");
  check_same_dtype(state, param, op, name, "param");
  TORCH_CHECK(same_layout(state, param), op, ": ", name, " must have param's shape ",
              param.sizes(), " and strides ", param.strides(), ", got shape ", state.sizes(),
              " and strides ", state.strides());
}

// The gradient in param's layout (copied only when it has another).
at::Tensor gradient_in_param_layout(const at::Tensor& grad, const at::Tensor& param,
                                    const char* op) {
  check_same_device(grad, param, op, "grad", "param");
  check_same_dtype(grad, param, op, "grad", "param");
  TORCH_CHECK(grad.sizes() == param.sizes(), op, ": grad must have param's shape ",
              param.sizes(), ", got ", grad.sizes());
  return same_layout(grad, param) ? grad : at::empty_like(param).copy_(grad);
}

// The mask's bytes in param's layout (copied only when it has another), or null for no mask.
const uint8_t* mask_in_param_layout(const std::optional<at::Tensor>& mask,
                                    const at::Tensor& param, const char* op, at::Tensor& keep) {
  if (!mask.has_value()) return nullptr;
  check_same_device(*mask, param, op, "mask", "param");
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": mask must be bool, got ",
              mask->scalar_type());
  TORCH_CHECK(mask->sizes() == param.sizes(), op, ": mask must have param's shape ",
              param.sizes(), ", got ", mask->sizes());
  keep = same_layout(*mask, param) ? *mask
                                   : at::empty_like(param, param.options().dtype(at::kBool))
                                         .copy_(*mask);
  // torch stores a bool as one byte, 0 or 1.
  return static_cast<const uint8_t*>(keep.data_ptr());
}

void sgd_step_cuda(at::Tensor& param, const at::Tensor& grad, at::Tensor& momentum_buffer,
                   const std::optional<at::Tensor>& mask, double lr, double weight_decay,
                   double momentum, double dampening, bool nesterov, bool maximize,
                   bool first_step) {
  const char* op = "sparse_tickets::sgd_step_";
  check_param(param, op);
  const auto type = element_type(param, op, "param");
  const bool uses_momentum = momentum != 0.0;
  if (uses_momentum) check_state(momentum_buffer, param, op, "momentum_buffer");
  const c10::cuda::CUDAGuard device_guard(param.device());
  const at::Tensor grad_c = gradient_in_param_layout(grad, param, op);
  at::Tensor mask_c;
  const uint8_t* mask_bytes = mask_in_param_layout(mask, param, op, mask_c);
  if (param.numel() == 0) return;

  kernels::SgdHyperparameters hyperparameters{};
  hyperparameters.lr = lr;
  hyperparameters.weight_decay = weight_decay;
  hyperparameters.momentum = momentum;
  hyperparameters.dampening = dampening;
  hyperparameters.nesterov = nesterov;
  hyperparameters.maximize = maximize;
  hyperparameters.first_step = first_step;
  check_launch(kernels::launch_sgd_step(type, param.data_ptr(), grad_c.data_ptr(),
                                        uses_momentum ? momentum_buffer.data_ptr() : nullptr,
                                        mask_bytes, param.numel(), hyperparameters,
                                        at::cuda::getCurrentCUDAStream().stream()),
               op);
}

void adam_step_cuda(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                    at::Tensor& exp_avg_sq, at::Tensor& max_exp_avg_sq,
                    const std::optional<at::Tensor>& mask, double lr, double beta1, double beta2,
                    double eps, double weight_decay, double step, bool amsgrad, bool maximize,
                    bool decoupled_weight_decay) {
  const char* op = "sparse_tickets::adam_step_";
  check_param(param, op);
  const auto type = element_type(param, op, "param");
  check_state(exp_avg, param, op, "exp_avg");
  check_state(exp_avg_sq, param, op, "exp_avg_sq");
  if (amsgrad) check_state(max_exp_avg_sq, param, op, "max_exp_avg_sq");
  const c10::cuda::CUDAGuard device_guard(param.device());
  const at::Tensor grad_c = gradient_in_param_layout(grad, param, op);
  at::Tensor mask_c;
  const uint8_t* mask_bytes = mask_in_param_layout(mask, param, op, mask_c);
  if (param.numel() == 0) return;

  kernels::AdamHyperparameters hyperparameters{};
  hyperparameters.lr = lr;
  hyperparameters.beta1 = beta1;
  hyperparameters.beta2 = beta2;
  hyperparameters.eps = eps;
  hyperparameters.weight_decay = weight_decay;
  hyperparameters.step = step;
  hyperparameters.amsgrad = amsgrad;
  hyperparameters.maximize = maximize;
  hyperparameters.decoupled_weight_decay = decoupled_weight_decay;
  check_launch(kernels::launch_adam_step(type, param.data_ptr(), grad_c.data_ptr(),
                                         exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
                                         amsgrad ? max_exp_avg_sq.data_ptr() : nullptr,
                                         mask_bytes, param.numel(), hyperparameters,
                                         at::cuda::getCurrentCUDAStream().stream()),
               op);
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_tickets, CUDA, m) {
  m.impl("spmm", &spmm_cuda);
  m.impl("sddmm", &sddmm_cuda);
  m.impl("sgd_step_", &sgd_step_cuda);
  m.impl("adam_step_", &adam_step_cuda);
}
