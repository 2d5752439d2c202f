// CUDA kernels of the compact sparse mode: launchers callable from plain C++.
//
// The ops and their exact semantics are those of sparse_tickets/ops/native/library.py; the
// optimizer arithmetic is that of sparse_tickets/ops/reference/optim.py. This header and
// compact_kernels.cu include no torch header (the CPU torch wheel cannot compile c10/cuda code,
// and nvcc checks these files without torch): tensors arrive as device pointers and sizes, and
// the binding (compact_cuda.cpp) does every check on them.
//
// What the launchers assume of their arguments (the binding guarantees it):
// - every pointer is a device pointer on the current device, to contiguous data of the element
//   type named by `type` (indices: int32; masks: one byte per entry, 0 = pruned);
// - index tensors are well formed: row_ptr non-decreasing from 0 to nnz, every col_idx inside
//   the other operand's rows, every value_index inside values (never checked on the device);
// - no output overlaps an input, except that the optimizer steps update param and state in place.
// Each launcher enqueues its kernel on `stream` and returns cudaGetLastError() after the launch
// (cudaSuccess when there was nothing to launch), for the binding to check.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sparse_tickets {
namespace cuda {

// The element types the kernels are compiled for. Half and bfloat16 accumulate in fp32, float32
// in fp32, float64 in fp64.
enum class ElementType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// out[b, r] = bias[r] + sum_j values[v(j)] * x_t[col_idx[j], b]   (j in row r, v(j) = value_index[j]
// or j). x_t is x transposed: (in_features, batch), row-major. out is (batch, rows), row-major.
// value_index and bias may be null.
cudaError_t launch_spmm(ElementType type, const void* x_t, const int32_t* row_ptr,
                        const int32_t* col_idx, const void* values, const int32_t* value_index,
                        const void* bias, void* out, int64_t rows, int64_t batch,
                        cudaStream_t stream);

// out[j] = sum_b grad_out_t[r(j), b] * x_t[col_idx[j], b]   (r(j): the row holding nonzero j).
// grad_out_t is (rows, batch) and x_t is (in_features, batch), both row-major; out is (nnz,).
cudaError_t launch_sddmm(ElementType type, const void* grad_out_t, const void* x_t,
                         const int32_t* row_ptr, const int32_t* col_idx, void* out, int64_t rows,
                         int64_t batch, cudaStream_t stream);

// One torch.optim.SGD step (single-tensor arithmetic), in place, on `numel` entries.
struct SgdHyperparameters {
  double lr;
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
  bool first_step;  // the momentum buffer becomes the gradient (it is written, never read)
};

// momentum_buffer is used (and may be null otherwise) only when momentum != 0; mask may be null
// (every entry steps), else where it is 0 the param and the buffer end the step as +0.0.
cudaError_t launch_sgd_step(ElementType type, void* param, const void* grad,
                            void* momentum_buffer, const uint8_t* mask, int64_t numel,
                            const SgdHyperparameters& hyperparameters, cudaStream_t stream);

// One torch.optim.Adam step (AdamW with decoupled_weight_decay), in place, on `numel` entries.
// The bias corrections are computed here on the host, in double, as torch does.
struct AdamHyperparameters {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  double step;  // the step count after this step's increment
  bool amsgrad;
  bool maximize;
  bool decoupled_weight_decay;
};

// max_exp_avg_sq is used (and may be null otherwise) only with amsgrad; mask as for SGD, zeroing
// param, exp_avg, exp_avg_sq and max_exp_avg_sq.
cudaError_t launch_adam_step(ElementType type, void* param, const void* grad, void* exp_avg,
                             void* exp_avg_sq, void* max_exp_avg_sq, const uint8_t* mask,
                             int64_t numel, const AdamHyperparameters& hyperparameters,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace sparse_tickets
