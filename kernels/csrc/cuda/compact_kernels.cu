// CUDA kernels of the compact sparse mode and their launchers (declared in compact_kernels.cuh).
//
// spmm and sddmm read the dense operands transposed, batch innermost: a warp owns one row of
// the sparse matrix and its lanes cover the batch, so every load of a dense row is one
// coalesced (and, where the batch allows, vectorised) read. Both accumulate in fp32 (fp64 for
// double) and round once at the store. The optimizer steps are grid-stride elementwise kernels
// in the same accumulation type; they round once at the store too, so for float16/bfloat16 they
// are close to torch (which rounds after every op), not bitwise equal. Pruned entries are set
// with a select, never a multiply, which would leave -0.0 or NaN.
#include "compact_kernels.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace sparse_tickets {
namespace cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarpMask = 0xffffffffu;

// A row of the sparse matrix per warp, 8 warps a block: 256 threads keep enough warps resident
// to hide the latency of the gathered row loads, and the spmm output tile staged in shared memory
// for the transposed store (8 rows x 128 batch entries) stays small.
constexpr int kRowsPerBlock = 8;
constexpr int kRowBlockThreads = kRowsPerBlock * kWarpSize;
// At least 4 spmm blocks (1024 threads) per SM: 64 registers a thread, where ptxas stops
// spilling the accumulators (it otherwise aims at 40 and spills); the inner loop, unrolled by 4,
// keeps 4 row loads in flight per warp to make up for the lower occupancy.
constexpr int kSpmmBlocksPerSm = 4;
// gridDim.y's hardware limit; spmm loops over any further batch tiles.
constexpr int64_t kMaxGridY = 65535;

// Elementwise steps: 256 threads a block and at most 8 blocks per SM, the 2048 resident threads
// an sm_80/sm_90 SM holds; more blocks than that would only queue, so each thread strides.
constexpr int kElementwiseThreads = 256;
constexpr int kElementwiseBlocksPerSm = 8;

// The storage type T, its accumulation type Acc, and the conversions between them. Only the
// explicit conversion intrinsics are used: torch builds with __CUDA_NO_HALF_CONVERSIONS__ and
// __CUDA_NO_BFLOAT16_CONVERSIONS__.
template <typename T>
struct Element;

template <>
struct Element<float> {
  using Acc = float;
  __device__ __forceinline__ static float load(float value) { return value; }
  __device__ __forceinline__ static float store(float value) { return value; }
};

template <>
struct Element<double> {
  using Acc = double;
  __device__ __forceinline__ static double load(double value) { return value; }
  __device__ __forceinline__ static double store(double value) { return value; }
};

template <>
struct Element<__half> {
  using Acc = float;
  __device__ __forceinline__ static float load(__half value) { return __half2float(value); }
  __device__ __forceinline__ static __half store(float value) { return __float2half_rn(value); }
};

template <>
struct Element<__nv_bfloat16> {
  using Acc = float;
  __device__ __forceinline__ static float load(__nv_bfloat16 value) {
    return __bfloat162float(value);
  }
  __device__ __forceinline__ static __nv_bfloat16 store(float value) {
    return __float2bfloat16_rn(value);
  }
};

template <typename T>
using acc_t = typename Element<T>::Acc;

// VEC consecutive elements read as one aligned vector load (16 bytes for 4 floats).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T element[VEC];
};

// Elements [first, first + VEC) of `row` in the accumulation type, zeros past `length`. With
// VEC > 1 the caller guarantees length % VEC == 0, first % VEC == 0 and an aligned row, so a
// pack is either wholly inside or wholly outside.
template <typename T, int VEC>
__device__ __forceinline__ void load_pack(const T* __restrict__ row, int64_t first,
                                          int64_t length, acc_t<T> (&out)[VEC]) {
  if (first < length) {
    const Pack<T, VEC> pack = *reinterpret_cast<const Pack<T, VEC>*>(row + first);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = Element<T>::load(pack.element[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = acc_t<T>(0);
  }
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc value) {
  // Butterfly: every lane ends with the sum of all 32.
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(kFullWarpMask, value, offset);
  }
  return value;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kRowBlockThreads, kSpmmBlocksPerSm)
    spmm_kernel(const T* __restrict__ x_t, const int32_t* __restrict__ row_ptr,
                const int32_t* __restrict__ col_idx, const T* __restrict__ values,
                const int32_t* __restrict__ value_index, const T* __restrict__ bias,
                T* __restrict__ out, int64_t rows, int64_t batch) {
  // out[b, r] = bias[r] + sum_{j in row r} values[v(j)] * x_t[col_idx[j], b]
  using Acc = acc_t<T>;
  constexpr int kTile = kWarpSize * VEC;  // batch entries a warp covers per pass
  // The block's output tile, staged so that the (batch, rows) store writes runs of consecutive
  // rows instead of one scattered element per lane. +1 spreads the columns over the banks.
  __shared__ Acc staged[kRowsPerBlock][kTile + 1];

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t row = first_row + warp;
  const int64_t num_tiles = (batch + kTile - 1) / kTile;

  for (int64_t tile = blockIdx.y; tile < num_tiles; tile += gridDim.y) {
    const int64_t tile_start = tile * kTile;
    const int64_t first = tile_start + static_cast<int64_t>(lane) * VEC;  // this lane's batch
    Acc acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = Acc(0);

    if (row < rows) {  // uniform across the warp: the shuffles below see all 32 lanes
      const int64_t begin = row_ptr[row];
      const int64_t end = row_ptr[row + 1];
      for (int64_t chunk = begin; chunk < end; chunk += kWarpSize) {
        // The warp loads 32 nonzeros at once, then broadcasts them one by one.
        const int64_t j = chunk + lane;
        int32_t my_col = 0;
        Acc my_value = Acc(0);
        if (j < end) {
          my_col = col_idx[j];
          my_value = Element<T>::load(values[value_index != nullptr ? value_index[j] : j]);
        }
        const int count = static_cast<int>(end - chunk < kWarpSize ? end - chunk : kWarpSize);
#pragma unroll 4
        for (int k = 0; k < count; ++k) {
          const int32_t col = __shfl_sync(kFullWarpMask, my_col, k);
          const Acc value = __shfl_sync(kFullWarpMask, my_value, k);
          Acc x[VEC];
          load_pack<T, VEC>(x_t + static_cast<int64_t>(col) * batch, first, batch, x);
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[i] += value * x[i];
        }
      }
      if (bias != nullptr) {
        const Acc row_bias = Element<T>::load(bias[row]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[i] += row_bias;
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) staged[warp][lane * VEC + i] = acc[i];
    }
    __syncthreads();

    // Consecutive threads write consecutive rows of one batch entry: runs of kRowsPerBlock.
    for (int index = static_cast<int>(threadIdx.x); index < kRowsPerBlock * kTile;
         index += kRowBlockThreads) {
      const int tile_row = index % kRowsPerBlock;
      const int tile_column = index / kRowsPerBlock;
      const int64_t out_row = first_row + tile_row;
      const int64_t out_batch = tile_start + tile_column;
      if (out_row < rows && out_batch < batch) {
        out[out_batch * rows + out_row] = Element<T>::store(staged[tile_row][tile_column]);
      }
    }
    __syncthreads();  // the tile is rewritten by the next pass
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kRowBlockThreads)
    sddmm_kernel(const T* __restrict__ grad_out_t, const T* __restrict__ x_t,
                 const int32_t* __restrict__ row_ptr, const int32_t* __restrict__ col_idx,
                 T* __restrict__ out, int64_t rows, int64_t batch) {
  // out[j] = sum_b grad_out_t[r(j), b] * x_t[col_idx[j], b]
  using Acc = acc_t<T>;
  constexpr int kTile = kWarpSize * VEC;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + static_cast<int>(threadIdx.x) / kWarpSize;
  if (row >= rows) return;  // the whole warp; this kernel has no block-wide barrier

  const T* grad_row = grad_out_t + row * batch;
  const int64_t first = static_cast<int64_t>(lane) * VEC;
  // When the batch fits one pass (the common case) the row of grad_out stays in registers for
  // every nonzero of the row; otherwise it is re-read per nonzero (from L1).
  const bool single_tile = batch <= kTile;
  Acc grad_cached[VEC];
  load_pack<T, VEC>(grad_row, first, batch, grad_cached);

  const int64_t begin = row_ptr[row];
  const int64_t end = row_ptr[row + 1];
  for (int64_t chunk = begin; chunk < end; chunk += kWarpSize) {
    const int64_t j = chunk + lane;
    const int32_t my_col = j < end ? col_idx[j] : 0;
    const int count = static_cast<int>(end - chunk < kWarpSize ? end - chunk : kWarpSize);
    Acc my_dot = Acc(0);  // lane k keeps the dot product of nonzero chunk + k
    for (int k = 0; k < count; ++k) {
      const int32_t col = __shfl_sync(kFullWarpMask, my_col, k);
      const T* x_row = x_t + static_cast<int64_t>(col) * batch;
      Acc partial = Acc(0);
      if (single_tile) {
        Acc x[VEC];
        load_pack<T, VEC>(x_row, first, batch, x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) partial += grad_cached[i] * x[i];
      } else {
        for (int64_t start = first; start < batch; start += kTile) {
          Acc g[VEC];
          Acc x[VEC];
          load_pack<T, VEC>(grad_row, start, batch, g);
          load_pack<T, VEC>(x_row, start, batch, x);
#pragma unroll
          for (int i = 0; i < VEC; ++i) partial += g[i] * x[i];
        }
      }
      partial = warp_sum(partial);
      if (lane == k) my_dot = partial;
    }
    if (j < end) out[j] = Element<T>::store(my_dot);  // 32 consecutive nonzeros per store
  }
}

// Hyperparameters as the kernels use them: in the accumulation type, as torch converts a Python
// float scalar for an op on a tensor of that dtype.
template <typename Acc>
struct SgdScalars {
  Acc neg_lr;
  Acc weight_decay;
  Acc momentum;
  Acc one_minus_dampening;
  bool has_weight_decay;
  bool uses_momentum;
  bool nesterov;
  bool maximize;
  bool first_step;
};

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    sgd_step_kernel(T* __restrict__ param, const T* __restrict__ grad,
                    T* __restrict__ momentum_buffer, const uint8_t* __restrict__ mask,
                    int64_t numel, SgdScalars<acc_t<T>> s) {
  // g = ±grad + wd * p;  b = first_step ? g : momentum * b + (1 - dampening) * g
  // p = p - lr * (nesterov ? g + momentum * b : b);  pruned p, b = +0.0
  using Acc = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const bool kept = mask == nullptr || mask[i] != 0;
    Acc p = Element<T>::load(param[i]);
    Acc g = Element<T>::load(grad[i]);
    if (s.maximize) g = -g;
    if (s.has_weight_decay) g = g + s.weight_decay * p;
    if (s.uses_momentum) {
      Acc buffer = g;  // torch's new buffer: a copy of the (decayed) gradient, undamped
      if (!s.first_step) {
        buffer = Element<T>::load(momentum_buffer[i]) * s.momentum;
        buffer = buffer + s.one_minus_dampening * g;
      }
      g = s.nesterov ? g + s.momentum * buffer : buffer;
      momentum_buffer[i] = Element<T>::store(kept ? buffer : Acc(0));
    }
    p = p + s.neg_lr * g;
    param[i] = Element<T>::store(kept ? p : Acc(0));
  }
}

template <typename Acc>
struct AdamScalars {
  Acc lerp_weight;       // 1 - beta1
  bool lerp_weight_small;  // |lerp_weight| < 0.5: which of torch's lerp formulas applies
  Acc beta2;
  Acc one_minus_beta2;
  Acc weight_decay;
  Acc decay_factor;      // 1 - lr * weight_decay (decoupled)
  Acc neg_step_size;     // -lr / bias_correction1
  Acc bias_correction2_sqrt;
  Acc eps;
  bool has_weight_decay;
  bool decoupled_weight_decay;
  bool amsgrad;
  bool maximize;
};

__device__ __forceinline__ float correctly_rounded_sqrt(float value) { return __fsqrt_rn(value); }
__device__ __forceinline__ double correctly_rounded_sqrt(double value) { return __dsqrt_rn(value); }

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    adam_step_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                     T* __restrict__ exp_avg_sq, T* __restrict__ max_exp_avg_sq,
                     const uint8_t* __restrict__ mask, int64_t numel, AdamScalars<acc_t<T>> s) {
  // g = ±grad (+ wd * p, coupled);  p = p * (1 - lr * wd) (decoupled)
  // m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2;  vmax = max(vmax, v)
  // p = p - step_size * m / (sqrt(amsgrad ? vmax : v) / sqrt(bias_correction2) + eps)
  // pruned p, m, v, vmax = +0.0
  using Acc = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const bool kept = mask == nullptr || mask[i] != 0;
    Acc p = Element<T>::load(param[i]);
    Acc g = Element<T>::load(grad[i]);
    Acc m = Element<T>::load(exp_avg[i]);
    Acc v = Element<T>::load(exp_avg_sq[i]);
    if (s.maximize) g = -g;
    if (s.has_weight_decay) {
      if (s.decoupled_weight_decay) {
        p = p * s.decay_factor;
      } else {
        g = g + s.weight_decay * p;
      }
    }
    // torch's lerp, with its two branches: which one depends on the weight.
    if (s.lerp_weight_small) {
      m = m + s.lerp_weight * (g - m);
    } else {
      m = g - (g - m) * (Acc(1) - s.lerp_weight);
    }
    v = v * s.beta2;
    v = v + s.one_minus_beta2 * (g * g);
    Acc second_moment = v;
    if (s.amsgrad) {
      const Acc previous = Element<T>::load(max_exp_avg_sq[i]);
      // torch.maximum: a NaN on either side propagates.
      const Acc maximum = previous != previous ? previous
                          : v != v            ? v
                          : previous > v      ? previous
                                              : v;
      max_exp_avg_sq[i] = Element<T>::store(kept ? maximum : Acc(0));
      second_moment = maximum;
    }
    const Acc denominator = correctly_rounded_sqrt(second_moment) / s.bias_correction2_sqrt + s.eps;
    p = p + s.neg_step_size * (m / denominator);
    exp_avg[i] = Element<T>::store(kept ? m : Acc(0));
    exp_avg_sq[i] = Element<T>::store(kept ? v : Acc(0));
    param[i] = Element<T>::store(kept ? p : Acc(0));
  }
}

// Runs fn(TypeTag<T>{}) for the storage type T that `type` names.
template <typename T>
struct TypeTag {
  using type = T;
};

template <typename Fn>
cudaError_t dispatch_element_type(ElementType type, Fn&& fn) {
  switch (type) {
    case ElementType::kFloat32:
      return fn(TypeTag<float>{});
    case ElementType::kFloat64:
      return fn(TypeTag<double>{});
    case ElementType::kFloat16:
      return fn(TypeTag<__half>{});
    case ElementType::kBFloat16:
      return fn(TypeTag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

bool is_aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

// Batch entries per lane: 4 (or 2) when the batch is a multiple and the dense operands are
// aligned for vector loads, and a warp's pass (32 * VEC) is not mostly idle lanes (batch 60
// takes 2: one pass of 64, rather than one of 128 with half the lanes idle).
int batch_vector_width(int64_t batch, size_t element_size, const void* first,
                       const void* second) {
  for (const int width : {4, 2}) {
    const size_t bytes = element_size * static_cast<size_t>(width);
    if (batch % width == 0 && batch > int64_t{kWarpSize} * width / 2 &&
        is_aligned(first, bytes) && is_aligned(second, bytes)) {
      return width;
    }
  }
  return 1;
}

template <typename T, int VEC>
void enqueue_spmm(const T* x_t, const int32_t* row_ptr, const int32_t* col_idx, const T* values,
                  const int32_t* value_index, const T* bias, T* out, int64_t rows, int64_t batch,
                  cudaStream_t stream) {
  const int64_t tiles = (batch + kWarpSize * VEC - 1) / (kWarpSize * VEC);
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>(std::min(tiles, kMaxGridY)));
  spmm_kernel<T, VEC><<<grid, kRowBlockThreads, 0, stream>>>(x_t, row_ptr, col_idx, values,
                                                             value_index, bias, out, rows, batch);
}

template <typename T, int VEC>
void enqueue_sddmm(const T* grad_out_t, const T* x_t, const int32_t* row_ptr,
                   const int32_t* col_idx, T* out, int64_t rows, int64_t batch,
                   cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  sddmm_kernel<T, VEC><<<blocks, kRowBlockThreads, 0, stream>>>(grad_out_t, x_t, row_ptr,
                                                                col_idx, out, rows, batch);
}

// Blocks for a grid-stride pass over numel entries: enough to fill every SM, no more.
cudaError_t elementwise_blocks(int64_t numel, unsigned* blocks) {
  int device = 0;
  int sm_count = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  error = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
  if (error != cudaSuccess) return error;
  const int64_t needed = (numel + kElementwiseThreads - 1) / kElementwiseThreads;
  const int64_t resident = static_cast<int64_t>(std::max(sm_count, 1)) * kElementwiseBlocksPerSm;
  *blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(needed, resident)));
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_spmm(ElementType type, const void* x_t, const int32_t* row_ptr,
                        const int32_t* col_idx, const void* values, const int32_t* value_index,
                        const void* bias, void* out, int64_t rows, int64_t batch,
                        cudaStream_t stream) {
  if (rows <= 0 || batch <= 0) return cudaSuccess;
  return dispatch_element_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* typed_x_t = static_cast<const T*>(x_t);
    const auto* typed_values = static_cast<const T*>(values);
    const auto* typed_bias = static_cast<const T*>(bias);
    auto* typed_out = static_cast<T*>(out);
    switch (batch_vector_width(batch, sizeof(T), x_t, x_t)) {
      case 4:
        enqueue_spmm<T, 4>(typed_x_t, row_ptr, col_idx, typed_values, value_index, typed_bias,
                           typed_out, rows, batch, stream);
        break;
      case 2:
        enqueue_spmm<T, 2>(typed_x_t, row_ptr, col_idx, typed_values, value_index, typed_bias,
                           typed_out, rows, batch, stream);
        break;
      default:
        enqueue_spmm<T, 1>(typed_x_t, row_ptr, col_idx, typed_values, value_index, typed_bias,
                           typed_out, rows, batch, stream);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_sddmm(ElementType type, const void* grad_out_t, const void* x_t,
                         const int32_t* row_ptr, const int32_t* col_idx, void* out, int64_t rows,
                         int64_t batch, cudaStream_t stream) {
  // A zero batch still launches: every nonzero's gradient is the empty sum, 0.
  if (rows <= 0 || batch < 0) return cudaSuccess;
  return dispatch_element_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* typed_grad_out_t = static_cast<const T*>(grad_out_t);
    const auto* typed_x_t = static_cast<const T*>(x_t);
    auto* typed_out = static_cast<T*>(out);
    switch (batch_vector_width(batch, sizeof(T), grad_out_t, x_t)) {
      case 4:
        enqueue_sddmm<T, 4>(typed_grad_out_t, typed_x_t, row_ptr, col_idx, typed_out, rows,
                            batch, stream);
        break;
      case 2:
        enqueue_sddmm<T, 2>(typed_grad_out_t, typed_x_t, row_ptr, col_idx, typed_out, rows,
                            batch, stream);
        break;
      default:
        enqueue_sddmm<T, 1>(typed_grad_out_t, typed_x_t, row_ptr, col_idx, typed_out, rows,
                            batch, stream);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_sgd_step(ElementType type, void* param, const void* grad,
                            void* momentum_buffer, const uint8_t* mask, int64_t numel,
                            const SgdHyperparameters& hyperparameters, cudaStream_t stream) {
  if (numel <= 0) return cudaSuccess;
  unsigned blocks = 0;
  const cudaError_t error = elementwise_blocks(numel, &blocks);
  if (error != cudaSuccess) return error;
  const SgdHyperparameters& h = hyperparameters;
  return dispatch_element_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = acc_t<T>;
    SgdScalars<Acc> scalars;
    scalars.neg_lr = static_cast<Acc>(-h.lr);
    scalars.weight_decay = static_cast<Acc>(h.weight_decay);
    scalars.momentum = static_cast<Acc>(h.momentum);
    scalars.one_minus_dampening = static_cast<Acc>(1.0 - h.dampening);
    scalars.has_weight_decay = h.weight_decay != 0.0;
    scalars.uses_momentum = h.momentum != 0.0;
    scalars.nesterov = h.nesterov;
    scalars.maximize = h.maximize;
    scalars.first_step = h.first_step;
    sgd_step_kernel<T><<<blocks, kElementwiseThreads, 0, stream>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(momentum_buffer),
        mask, numel, scalars);
    return cudaGetLastError();
  });
}

cudaError_t launch_adam_step(ElementType type, void* param, const void* grad, void* exp_avg,
                             void* exp_avg_sq, void* max_exp_avg_sq, const uint8_t* mask,
                             int64_t numel, const AdamHyperparameters& hyperparameters,
                             cudaStream_t stream) {
  if (numel <= 0) return cudaSuccess;
  unsigned blocks = 0;
  const cudaError_t error = elementwise_blocks(numel, &blocks);
  if (error != cudaSuccess) return error;
  const AdamHyperparameters& h = hyperparameters;
  // As torch's _single_tensor_adam, in Python floats (double): `beta ** step` and
  // `bias_correction2 ** 0.5` are C pow().
  const double bias_correction1 = 1.0 - std::pow(h.beta1, h.step);
  const double bias_correction2 = 1.0 - std::pow(h.beta2, h.step);
  const double step_size = h.lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  return dispatch_element_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = acc_t<T>;
    AdamScalars<Acc> scalars;
    scalars.lerp_weight = static_cast<Acc>(1.0 - h.beta1);
    scalars.lerp_weight_small = std::abs(scalars.lerp_weight) < Acc(0.5);
    scalars.beta2 = static_cast<Acc>(h.beta2);
    scalars.one_minus_beta2 = static_cast<Acc>(1.0 - h.beta2);
    scalars.weight_decay = static_cast<Acc>(h.weight_decay);
    scalars.decay_factor = static_cast<Acc>(1.0 - h.lr * h.weight_decay);
    scalars.neg_step_size = static_cast<Acc>(-step_size);
    scalars.bias_correction2_sqrt = static_cast<Acc>(bias_correction2_sqrt);
    scalars.eps = static_cast<Acc>(h.eps);
    scalars.has_weight_decay = h.weight_decay != 0.0;
    scalars.decoupled_weight_decay = h.decoupled_weight_decay;
    scalars.amsgrad = h.amsgrad;
    scalars.maximize = h.maximize;
    adam_step_kernel<T><<<blocks, kElementwiseThreads, 0, stream>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(exp_avg),
        static_cast<T*>(exp_avg_sq), static_cast<T*>(max_exp_avg_sq), mask, numel, scalars);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace sparse_tickets
