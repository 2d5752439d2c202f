// CPU kernels of the compact sparse mode: CSR SpMM, SDDMM and fused masked SGD / Adam steps.
//
// Registers implementations only; the schemas and their semantics live in
// sparse_tickets/ops/native/library.py. The direct sparse convolution is in sparse_conv.cpp;
// the SIMD layer (simd.h), the scratch buffers (scratch.h), the checks, the thread partition and
// the batch-minor transpose (common.h) are shared.
//
// Layout idea (spmm / sddmm): the dense operands are transposed once per call into "batch-minor"
// buffers xT[C][Bp] (Bp = B rounded up to a SIMD width, padding zero), so that every nonzero
// touches one contiguous Bp-wide row: spmm does out_T[r, :] += v * xT[c, :] with the accumulator
// in registers, sddmm does dot(gT[r, :], xT[c, :]). Rows are split between threads (common.h's
// rule) in blocks of one SIMD width, balanced by nnz; each block's results are transposed back
// in registers and stored straight into out[B][R], so no transposed output is ever
// materialised.
//
// The vectors are those of simd.h: AVX-512 or AVX2 + FMA intrinsics where the build targets them
// (-march=native), else a plain array of lanes, which compilers vectorise as they can.
//
// Rounding of the optimizer steps: torch's CPU kernels (Vectorized<T>, with its scalar tails
// compiled the same way) compute add(alpha) and lerp and addcmul with one fused multiply-add
// each, mul, div and addcdiv with separate roundings, and sqrt with MKL's vector sqrt. The
// element loops below repeat those operations in that order, with no other contraction (the
// build is ISO C++, so -ffp-contract=off), so kept entries match torch.optim bitwise; for
// Adam's square root see torch_sqrt_if_chosen (bitwise on request, else within an ulp or two).
// The scalar factors are computed in double as torch.optim's Python computes them, then
// rounded to the tensor dtype.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common.h"
#include "scratch.h"
#include "simd.h"

// MKL's vector square roots inside libtorch_cpu (see torch_sqrt_if_chosen).
extern "C" {
void vmsSqrt(long long n, const float* a, float* r, long long mode) __attribute__((weak));
void vmdSqrt(long long n, const double* a, double* r, long long mode) __attribute__((weak));
}

namespace sparse_tickets_cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// Batch-minor copies of the dense operands.

// dst[c][0:Bp] = src[0:B][c] for c < C, zero in the padding columns b >= B and in `extra_rows`
// all-zero rows after the last one. src rows are `src_stride` apart, columns contiguous. In
// parallel over blocks of W columns, at least kMinCopiedPerThread elements to a thread.
template <typename T>
void transpose_to_batch_minor(const T* src, int64_t src_stride, int64_t B, int64_t C, T* dst,
                              int64_t Bp, int64_t extra_rows) {
  constexpr int W = Simd<T>::W;
  const int64_t column_blocks = ceil_div(C, W);
  const int64_t grain = std::max<int64_t>(1, kMinCopiedPerThread / (W * std::max<int64_t>(Bp, 1)));
  at::parallel_for(0, column_blocks, grain, [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * W, c1 = std::min(C, end * W);
    to_batch_minor_panel<T>(src + c0, src_stride, B, c1 - c0, dst + c0 * Bp, Bp, Bp);
  });
  std::fill(dst + C * Bp, dst + (C + extra_rows) * Bp, T(0));
}

// ---------------------------------------------------------------------------------------------
// spmm: out[b, r] = bias[r] + sum_j values[v(j)] * x[b, col_idx[j]]

// One row over NV vectors of the batch: dst[0:NV*W] = bias + sum_j value_j * xT[col_j, 0:NV*W].
// U independent accumulator sets hide the FMA latency (U * NV >= 8 chains).
template <typename T, int NV, bool INDIRECT>
inline void spmm_row(const T* __restrict xT, int64_t ld, const index_t* __restrict col,
                     const T* __restrict values, const index_t* __restrict value_index,
                     int64_t begin, int64_t end, T bias, T* __restrict dst) {
  using S = Simd<T>;
  constexpr int W = S::W;
  constexpr int U = NV == 1 ? 8 : NV == 2 ? 4 : NV == 3 ? 3 : 2;
  typename S::V acc[U][NV];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) acc[u][k] = u == 0 ? S::set1(bias) : S::zero();
  int64_t j = begin;
  for (; j + U <= end; j += U) {
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const auto v = S::set1(values[INDIRECT ? value_index[j + u] : j + u]);
      const T* p = xT + int64_t(col[j + u]) * ld;
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k) acc[u][k] = S::fmadd(v, S::load(p + k * W), acc[u][k]);
    }
  }
  for (; j < end; ++j) {
    const auto v = S::set1(values[INDIRECT ? value_index[j] : j]);
    const T* p = xT + int64_t(col[j]) * ld;
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) acc[0][k] = S::fmadd(v, S::load(p + k * W), acc[0][k]);
  }
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) {
    auto sum = acc[0][k];
#pragma GCC unroll 8
    for (int u = 1; u < U; ++u) sum = S::add(sum, acc[u][k]);
    S::store(dst + k * W, sum);
  }
}

template <typename T, bool INDIRECT>
void spmm_rows(const T* xT, int64_t Bp, int64_t B, const index_t* row_ptr, const index_t* col,
               const T* values, const index_t* value_index, const T* bias, int64_t R,
               int64_t row_begin, int64_t row_end, T* out) {
  constexpr int W = Simd<T>::W;
  // The batch in passes of CH vectors (64 fp32 / 32 fp64 columns), outermost, so that a pass
  // reads only its own slice of every xT row.
  constexpr int64_t CH = 4, ld = CH * W;
  alignas(64) T tile[W * ld];  // tile[i][b]: row r0 + i of the block, batch b0 + b
  for (int64_t b0 = 0; b0 < Bp; b0 += ld) {
    const int64_t nv = std::min<int64_t>(CH, (Bp - b0) / W);
    const T* x = xT + b0;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += W) {
      const int64_t nr = std::min<int64_t>(W, row_end - r0);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t row = r0 + i, begin = row_ptr[row], end = row_ptr[row + 1];
        const T b = bias != nullptr ? bias[row] : T(0);
        T* dst = tile + i * ld;
        const auto* v = values;
        const auto* vi = value_index;
        switch (nv) {
          case 4: spmm_row<T, 4, INDIRECT>(x, Bp, col, v, vi, begin, end, b, dst); break;
          case 3: spmm_row<T, 3, INDIRECT>(x, Bp, col, v, vi, begin, end, b, dst); break;
          case 2: spmm_row<T, 2, INDIRECT>(x, Bp, col, v, vi, begin, end, b, dst); break;
          default: spmm_row<T, 1, INDIRECT>(x, Bp, col, v, vi, begin, end, b, dst);
        }
      }
      from_batch_minor_panel<T>(tile, ld, std::min(nv * W, B - b0), nr, out + b0 * R + r0, R);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// sddmm: out[j] = sum_b grad_out[b, r(j)] * x[b, col_idx[j]]

// W nonzeros at a time: acc_t = gT[r, :] * xT[col_t, :] lane-wise over the batch, then one
// fold of the W accumulators gives their W dot products in one vector. A row's last, partial
// group points its unused slots at xT's extra zero row. A batch of up to four vectors keeps
// gT[r] in registers (sddmm_rows_one_chunk); a wider one goes in chunks of four.
template <typename T, int NV>
inline void sddmm_accumulate(typename Simd<T>::V* acc, const T* const* rows, int64_t b0,
                             const typename Simd<T>::V* g) {
  using S = Simd<T>;
  constexpr int W = S::W;
#pragma GCC unroll 16
  for (int t = 0; t < W; ++t) {
    auto a = acc[t];
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) a = S::fmadd(g[k], S::load(rows[t] + b0 + k * W), a);
    acc[t] = a;
  }
}

template <typename T, int NV>
void sddmm_rows_one_chunk(const T* xT, const T* gT, int64_t Bp, const index_t* row_ptr,
                          const index_t* col, int64_t zero_row, int64_t row_begin,
                          int64_t row_end, T* out) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const LaneSums<T> fold;
  typename S::V acc[W], g[NV];
  const T* rows[W];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t begin = row_ptr[r], end = row_ptr[r + 1];
    if (begin == end) continue;
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) g[k] = S::load(gT + r * Bp + k * W);
    for (int64_t j = begin; j < end; j += W) {
      const int64_t n = std::min<int64_t>(W, end - j);
      for (int t = 0; t < W; ++t) rows[t] = xT + (t < n ? int64_t(col[j + t]) : zero_row) * Bp;
      for (int t = 0; t < W; ++t) acc[t] = S::zero();
      sddmm_accumulate<T, NV>(acc, rows, 0, g);
      store_lanes<T>(out + j, fold(acc), n);
    }
  }
}

template <typename T>
void sddmm_rows_chunked(const T* xT, const T* gT, int64_t Bp, const index_t* row_ptr,
                        const index_t* col, int64_t zero_row, int64_t row_begin, int64_t row_end,
                        T* out) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const LaneSums<T> fold;
  typename S::V acc[W], g[4];
  const T* rows[W];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t begin = row_ptr[r], end = row_ptr[r + 1];
    for (int64_t j = begin; j < end; j += W) {
      const int64_t n = std::min<int64_t>(W, end - j);
      for (int t = 0; t < W; ++t) rows[t] = xT + (t < n ? int64_t(col[j + t]) : zero_row) * Bp;
      for (int t = 0; t < W; ++t) acc[t] = S::zero();
      for (int64_t b0 = 0; b0 < Bp; b0 += 4 * W) {
        const int64_t nv = std::min<int64_t>(4, (Bp - b0) / W);
        for (int64_t k = 0; k < nv; ++k) g[k] = S::load(gT + r * Bp + b0 + k * W);
        switch (nv) {
          case 4: sddmm_accumulate<T, 4>(acc, rows, b0, g); break;
          case 3: sddmm_accumulate<T, 3>(acc, rows, b0, g); break;
          case 2: sddmm_accumulate<T, 2>(acc, rows, b0, g); break;
          default: sddmm_accumulate<T, 1>(acc, rows, b0, g); break;
        }
      }
      store_lanes<T>(out + j, fold(acc), n);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Optimizer steps: torch.optim's single-tensor arithmetic per element, then the mask.

// Calls body(i, lanes) for the vectors of [begin, end): AllLanes for every full one, a lane
// mask for the partial last one.
template <typename T, typename F>
inline void for_vectors(int64_t begin, int64_t end, F&& body) {
  using S = Simd<T>;
  int64_t i = begin;
  for (; i + S::W <= end; i += S::W) body(i, AllLanes{});
  if (i < end) body(i, S::lanes(end - i));
}

// Runs body(begin, end) over [0, n) in parallel, in pieces of whole chunks of `chunk` elements.
template <typename F>
void for_chunks(int64_t n, int64_t chunk, F&& body) {
  const int64_t chunks = ceil_div(n, chunk);
  const int64_t grain = std::max<int64_t>(1, kMinCopiedPerThread / chunk);
  at::parallel_for(0, chunks, grain, [&](int64_t first, int64_t last) {
    body(first * chunk, std::min(n, last * chunk));
  });
}

template <typename T>
void sgd_step_kernel(T* param, const T* grad, T* buffer, const bool* mask, int64_t n, double lr,
                     double weight_decay, double momentum, double dampening, bool nesterov,
                     bool maximize, bool first_step) {
  using S = Simd<T>;
  const auto neg_lr = S::set1(T(-lr));
  const auto decay = S::set1(T(weight_decay));
  const auto mom = S::set1(T(momentum));
  const auto keep_fraction = S::set1(T(1.0 - dampening));
  const bool use_decay = weight_decay != 0, use_momentum = momentum != 0;
  for_chunks(n, 1024, [&](int64_t begin, int64_t end) {
    for_vectors<T>(begin, end, [&](int64_t i, auto lanes) {
      auto p = S::load(param + i, lanes);
      auto g = S::load(grad + i, lanes);
      if (maximize) g = S::neg(g);
      if (use_decay) g = S::fmadd(p, decay, g);                     // grad.add(param, alpha=wd)
      typename S::V buf;
      if (use_momentum) {
        buf = first_step ? g                                         // clone(grad)
                         : S::fmadd(g, keep_fraction, S::mul(S::load(buffer + i, lanes), mom));
        g = nesterov ? S::fmadd(buf, mom, g) : buf;                  // grad.add(buf, alpha=mom)
      }
      p = S::fmadd(g, neg_lr, p);                                    // param.add_(grad, alpha=-lr)
      if (mask != nullptr) {
        const auto kept = S::nonzero_bytes(mask + i, lanes);
        p = S::keep(p, kept);
        if (use_momentum) buf = S::keep(buf, kept);
      }
      S::store(param + i, p, lanes);
      if (use_momentum) S::store(buffer + i, buf, lanes);
    });
  });
}

// Adam's square root. torch.sqrt on CPU is MKL's vector sqrt (at::vml::vsqrt, high-accuracy
// mode) wherever torch is built with MKL, and that is not always the correctly rounded root
// (on this AMD machine it differs in about 1 of 6 floats, by one ulp, and costs ~0.5 ns per
// element). Two choices, by SPARSE_TICKETS_CPU_ADAM_SQRT:
//   torch (default) MKL's own function (exported by libtorch_cpu; declared weak, so a torch
//                   without MKL leaves it null and its correctly rounded sqrt is used): every
//                   number bitwise torch.optim's, as the masked optimizers promise;
//   fast            the correctly rounded instruction in the one pass (torch's fused=True
//                   Adam does the same): exp_avg, exp_avg_sq, max_exp_avg_sq stay bitwise
//                   torch.optim's, the param within an ulp or two of the step it takes; about
//                   2.3x faster per step here.
// `n` is passed as 64 bits so that LP64 (32-bit MKL_INT) and ILP64 builds both read it right.
constexpr long long kVmlHighAccuracyNoFtzIgnoreErrors = 0x2 | 0x140000 | 0x100;
constexpr const char* kAdamSqrtVariable = "SPARSE_TICKETS_CPU_ADAM_SQRT";

template <typename T>
using VmlSqrt = void (*)(long long, const T*, T*, long long);

template <typename T>
VmlSqrt<T> torch_sqrt_if_chosen() {
  const char* choice = std::getenv(kAdamSqrtVariable);
  const std::string value = choice == nullptr ? "" : choice;
  TORCH_CHECK(value.empty() || value == "fast" || value == "torch", "adam_step_: ",
              kAdamSqrtVariable, "=", value, "; expected torch (default) or fast");
  if (value == "fast") return nullptr;
  if constexpr (std::is_same_v<T, float>) return vmsSqrt;
  else return vmdSqrt;
}

// One Adam element loop, split in two stages so that the square roots can be taken in bulk
// between them: moments() updates and stores exp_avg, exp_avg_sq (and max_exp_avg_sq) and
// returns the value whose root the denominator needs; update() finishes the param.
template <typename T>
struct AdamElements {
  using S = Simd<T>;
  using V = typename S::V;
  T *param, *exp_avg, *exp_avg_sq, *max_exp_avg_sq;
  const T* grad;
  const bool* mask;
  bool amsgrad, maximize, coupled_decay, decoupled_decay, lerp_small;
  V decay, scale, lerp_coeff, b2, one_minus_b2, bc2_sqrt, epsilon, neg_step_size;

  // Returns (param after decoupled decay, exp_avg, root operand), the moments stored.
  template <typename L>
  inline void moments(int64_t i, L lanes, V& p, V& m, V& root_operand) const {
    p = S::load(param + i, lanes);
    auto g = S::load(grad + i, lanes);
    if (maximize) g = S::neg(g);
    if (decoupled_decay) p = S::mul(p, scale);                        // param.mul_(1 - lr*wd)
    if (coupled_decay) g = S::fmadd(p, decay, g);                     // grad.add(param, alpha=wd)
    m = S::load(exp_avg + i, lanes);
    m = S::fmadd(lerp_coeff, S::sub(g, m), lerp_small ? m : g);      // exp_avg.lerp_(grad, 1-b1)
    auto v = S::load(exp_avg_sq + i, lanes);
    v = S::fmadd(S::mul(one_minus_b2, g), g, S::mul(v, b2));     // mul_(b2).addcmul_(g, g, 1-b2)
    V vmax;
    if (amsgrad) vmax = S::maximum(S::load(max_exp_avg_sq + i, lanes), v);
    if (mask != nullptr) {
      const auto kept = S::nonzero_bytes(mask + i, lanes);
      m = S::keep(m, kept);
      v = S::keep(v, kept);
      if (amsgrad) vmax = S::keep(vmax, kept);
    }
    S::store(exp_avg + i, m, lanes);
    S::store(exp_avg_sq + i, v, lanes);
    if (amsgrad) S::store(max_exp_avg_sq + i, vmax, lanes);
    root_operand = amsgrad ? vmax : v;
  }

  template <typename L>
  inline void update(int64_t i, L lanes, V p, V m, V root) const {
    const auto denom = S::add(S::div(root, bc2_sqrt), epsilon);      // sqrt(v) / bc2_sqrt + eps
    p = S::add(p, S::div(S::mul(neg_step_size, m), denom));          // addcdiv_(m, denom, -step)
    if (mask != nullptr) p = S::keep(p, S::nonzero_bytes(mask + i, lanes));
    S::store(param + i, p, lanes);
  }
};

template <typename T>
void adam_step_kernel(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq,
                      const bool* mask, int64_t n, double lr, double beta1, double beta2,
                      double eps, double weight_decay, double step, bool amsgrad, bool maximize,
                      bool decoupled_weight_decay) {
  using S = Simd<T>;
  using V = typename S::V;
  // The host-side scalars of torch.optim.Adam, in double, in its order. `volatile` keeps the
  // product lr * weight_decay rounded before the subtraction (no contraction into an FMA).
  volatile double decay_product = lr * weight_decay;
  const double decay_scale = 1.0 - decay_product;
  const double bias_correction1 = 1.0 - std::pow(beta1, step);
  const double bias_correction2 = 1.0 - std::pow(beta2, step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  // lerp(start, end, w): |w| < 0.5 ? fma(w, end - start, start) : fma(w - 1, end - start, end)
  const T lerp_weight = T(1.0 - beta1);

  AdamElements<T> e;
  e.param = param, e.grad = grad, e.exp_avg = exp_avg, e.exp_avg_sq = exp_avg_sq;
  e.max_exp_avg_sq = max_exp_avg_sq, e.mask = mask;
  e.amsgrad = amsgrad, e.maximize = maximize;
  e.coupled_decay = weight_decay != 0 && !decoupled_weight_decay;
  e.decoupled_decay = weight_decay != 0 && decoupled_weight_decay;
  e.lerp_small = std::abs(lerp_weight) < T(0.5);
  e.decay = S::set1(T(weight_decay));
  e.scale = S::set1(T(decay_scale));
  e.lerp_coeff = S::set1(e.lerp_small ? lerp_weight : lerp_weight - T(1));
  e.b2 = S::set1(T(beta2));
  e.one_minus_b2 = S::set1(T(1.0 - beta2));
  e.bc2_sqrt = S::set1(T(bias_correction2_sqrt));
  e.epsilon = S::set1(T(eps));
  e.neg_step_size = S::set1(T(-step_size));

  const VmlSqrt<T> vml_sqrt = torch_sqrt_if_chosen<T>();
  if (vml_sqrt == nullptr) {  // one pass, the square root in registers
    for_chunks(n, 1024, [&](int64_t begin, int64_t end) {
      for_vectors<T>(begin, end, [&](int64_t i, auto lanes) {
        V p, m, operand;
        e.moments(i, lanes, p, m, operand);
        e.update(i, lanes, p, m, S::sqrt(operand));
      });
    });
    return;
  }
  // Two passes per chunk of 4096 elements, the second from L1/L2: the moments (and the decayed
  // param, kept in `param`), MKL's roots of the chunk in one call (a call inside a parallel
  // region costs as much as a few hundred elements), then the param.
  constexpr int64_t kChunk = 4096;  // a multiple of every vector width
  const T* operands = amsgrad ? max_exp_avg_sq : exp_avg_sq;
  for_chunks(n, kChunk, [&](int64_t first, int64_t last) {
    alignas(64) T root[kChunk];
    for (int64_t begin = first; begin < last; begin += kChunk) {
      const int64_t end = std::min(last, begin + kChunk);
      for_vectors<T>(begin, end, [&](int64_t i, auto lanes) {
        V p, m, operand;
        e.moments(i, lanes, p, m, operand);
        if (e.decoupled_decay) S::store(param + i, p, lanes);
      });
      // MKL's root takes a slow path on zero operands (every pruned entry of a masked step:
      // 4x the whole step's time at 50% density), so it gets 1 there and the root is set to
      // the operand (sqrt(+-0) = +-0) after; two passes over the chunk in L1.
      alignas(64) T operand[kChunk];
      const T* chunk_operands = operands + begin;
      const int64_t count = end - begin;
      for (int64_t k = 0; k < count; ++k)
        operand[k] = chunk_operands[k] != T(0) ? chunk_operands[k] : T(1);
      vml_sqrt(count, operand, root, kVmlHighAccuracyNoFtzIgnoreErrors);
      for (int64_t k = 0; k < count; ++k)
        root[k] = chunk_operands[k] != T(0) ? root[k] : chunk_operands[k];
      for_vectors<T>(begin, end, [&](int64_t i, auto lanes) {
        e.update(i, lanes, S::load(param + i, lanes), S::load(exp_avg + i, lanes),
                 S::load(root + (i - begin), lanes));
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Input checks and the op entry points.

// A 2-D float matrix whose rows may be strided but whose columns are contiguous.
at::Tensor row_major(const at::Tensor& t) {
  return t.size(1) <= 1 || t.stride(1) == 1 ? t : t.contiguous();
}

at::Tensor spmm_cpu(const at::Tensor& x_in, const at::Tensor& row_ptr_in,
                    const at::Tensor& col_idx_in, const at::Tensor& values_in,
                    const std::optional<at::Tensor>& value_index_in,
                    const std::optional<at::Tensor>& bias_in) {
  constexpr const char* op = "spmm";
  check_cpu(op, "x", x_in);
  check_cpu(op, "values", values_in);
  check_float_dtype(op, "x", x_in);
  TORCH_CHECK(x_in.dim() == 2, op, ": x must be 2-D (batch, columns), got ", x_in.dim(), "-D");
  check_same_dtype(op, "values", values_in, "x", x_in);
  TORCH_CHECK(values_in.dim() == 1, op, ": values must be 1-D, got ", values_in.dim(), "-D");
  const at::Tensor row_ptr = checked_index(op, "row_ptr", row_ptr_in);
  const at::Tensor col_idx = checked_index(op, "col_idx", col_idx_in);
  const int64_t nnz = col_idx.numel();
  TORCH_CHECK(values_in.numel() == nnz, op, ": values must have one entry per nonzero (",
              nnz, "), got ", values_in.numel());
  check_row_ptr(op, "row_ptr", row_ptr, "col_idx", nnz);
  at::Tensor value_index;
  if (value_index_in.has_value()) {
    value_index = checked_index(op, "value_index", *value_index_in);
    TORCH_CHECK(value_index.numel() == nnz, op, ": value_index must have col_idx's length ",
                nnz, ", got ", value_index.numel());
  }
  const int64_t B = x_in.size(0), C = x_in.size(1), R = row_ptr.numel() - 1;
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = *bias_in;
    check_cpu(op, "bias", bias);
    check_same_dtype(op, "bias", bias, "x", x_in);
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == R, op, ": bias must have shape (", R,
                ",) (one per row of row_ptr), got ", bias.sizes());
    bias = bias.contiguous();
  }
  const at::Tensor values = values_in.contiguous();
  at::Tensor out = at::empty({B, R}, x_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0 || R == 0) return out;
  if (nnz == 0 || C == 0) {
    if (bias.defined()) out.copy_(bias.unsqueeze(0).expand({B, R}));
    else out.zero_();
    return out;
  }
  const at::Tensor x = row_major(x_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_tickets_spmm", [&] {
    constexpr int W = Simd<scalar_t>::W;
    const int64_t Bp = round_up(B, W);
    scalar_t* xT = scratch<scalar_t>(ScratchSlot::kInput, C * Bp);
    transpose_to_batch_minor<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), B, C, xT, Bp, 0);
    const index_t* rp = row_ptr.data_ptr<index_t>();
    const index_t* ci = col_idx.data_ptr<index_t>();
    const index_t* vi = value_index.defined() ? value_index.data_ptr<index_t>() : nullptr;
    const scalar_t* v = values.data_ptr<scalar_t>();
    const scalar_t* b = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t* xt = xT;
    scalar_t* o = out.data_ptr<scalar_t>();
    for_balanced_parts(R, W, CsrRowCost{rp}, (nnz + R) * Bp, [&](int64_t begin, int64_t end) {
      if (vi != nullptr)
        spmm_rows<scalar_t, true>(xt, Bp, B, rp, ci, v, vi, b, R, begin, end, o);
      else
        spmm_rows<scalar_t, false>(xt, Bp, B, rp, ci, v, vi, b, R, begin, end, o);
    });
  });
  return out;
}

at::Tensor sddmm_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                     const at::Tensor& row_ptr_in, const at::Tensor& col_idx_in) {
  constexpr const char* op = "sddmm";
  check_cpu(op, "grad_out", grad_out_in);
  check_cpu(op, "x", x_in);
  check_float_dtype(op, "x", x_in);
  check_same_dtype(op, "grad_out", grad_out_in, "x", x_in);
  TORCH_CHECK(x_in.dim() == 2, op, ": x must be 2-D (batch, columns), got ", x_in.dim(), "-D");
  TORCH_CHECK(grad_out_in.dim() == 2, op, ": grad_out must be 2-D (batch, rows), got ",
              grad_out_in.dim(), "-D");
  const at::Tensor row_ptr = checked_index(op, "row_ptr", row_ptr_in);
  const at::Tensor col_idx = checked_index(op, "col_idx", col_idx_in);
  const int64_t nnz = col_idx.numel();
  check_row_ptr(op, "row_ptr", row_ptr, "col_idx", nnz);
  const int64_t B = x_in.size(0), C = x_in.size(1), R = row_ptr.numel() - 1;
  TORCH_CHECK(grad_out_in.size(0) == B, op, ": grad_out and x must have the same batch size, got ",
              grad_out_in.size(0), " and ", B);
  TORCH_CHECK(grad_out_in.size(1) == R, op, ": grad_out must have one column per row of row_ptr (",
              R, "), got ", grad_out_in.size(1));
  at::Tensor out = at::empty({nnz}, x_in.options());
  if (nnz == 0) return out;
  if (B == 0) return out.zero_();
  const at::Tensor x = row_major(x_in), grad_out = row_major(grad_out_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_tickets_sddmm", [&] {
    constexpr int W = Simd<scalar_t>::W;
    const int64_t Bp = round_up(B, W);
    // xT gets one extra zero row: the target of the unused slots of a last, partial group.
    scalar_t* xT = scratch<scalar_t>(ScratchSlot::kInput, (C + 1) * Bp);
    scalar_t* gT = scratch<scalar_t>(ScratchSlot::kGradOutput, R * Bp);
    transpose_to_batch_minor<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), B, C, xT, Bp, 1);
    transpose_to_batch_minor<scalar_t>(grad_out.data_ptr<scalar_t>(), grad_out.stride(0), B, R,
                                       gT, Bp, 0);
    const index_t* rp = row_ptr.data_ptr<index_t>();
    const index_t* ci = col_idx.data_ptr<index_t>();
    const scalar_t* xt = xT;
    const scalar_t* gt = gT;
    scalar_t* o = out.data_ptr<scalar_t>();
    for_balanced_parts(R, 1, CsrRowCost{rp}, (nnz + R) * Bp, [&](int64_t begin, int64_t end) {
      switch (Bp / W) {
        case 1: sddmm_rows_one_chunk<scalar_t, 1>(xt, gt, Bp, rp, ci, C, begin, end, o); break;
        case 2: sddmm_rows_one_chunk<scalar_t, 2>(xt, gt, Bp, rp, ci, C, begin, end, o); break;
        case 3: sddmm_rows_one_chunk<scalar_t, 3>(xt, gt, Bp, rp, ci, C, begin, end, o); break;
        case 4: sddmm_rows_one_chunk<scalar_t, 4>(xt, gt, Bp, rp, ci, C, begin, end, o); break;
        default: sddmm_rows_chunked<scalar_t>(xt, gt, Bp, rp, ci, C, begin, end, o); break;
      }
    });
  });
  return out;
}

// A state tensor of the optimizer steps: param's shape and dtype, contiguous, on the CPU.
void check_like_param(const char* op, const char* name, const at::Tensor& t,
                      const at::Tensor& param) {
  check_cpu(op, name, t);
  check_same_dtype(op, name, t, "param", param);
  TORCH_CHECK(t.sizes() == param.sizes(), op, ": ", name, " must have param's shape ",
              param.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

const bool* checked_mask(const char* op, const std::optional<at::Tensor>& mask,
                         const at::Tensor& param) {
  if (!mask.has_value()) return nullptr;
  check_cpu(op, "mask", *mask);
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": mask must be bool, got ",
              mask->scalar_type());
  TORCH_CHECK(mask->sizes() == param.sizes(), op, ": mask must have param's shape ",
              param.sizes(), ", got ", mask->sizes());
  TORCH_CHECK(mask->is_contiguous(), op, ": mask must be contiguous");
  return mask->data_ptr<bool>();
}

void check_param(const char* op, const at::Tensor& param) {
  check_cpu(op, "param", param);
  check_float_dtype(op, "param", param);
  TORCH_CHECK(param.is_contiguous(), op, ": param must be contiguous");
}

void sgd_step_cpu(at::Tensor& param, const at::Tensor& grad, at::Tensor& momentum_buffer,
                  const std::optional<at::Tensor>& mask, double lr, double weight_decay,
                  double momentum, double dampening, bool nesterov, bool maximize,
                  bool first_step) {
  constexpr const char* op = "sgd_step_";
  check_param(op, param);
  check_like_param(op, "grad", grad, param);
  if (momentum != 0) check_like_param(op, "momentum_buffer", momentum_buffer, param);
  const bool* m = checked_mask(op, mask, param);
  if (param.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "sparse_tickets_sgd_step", [&] {
    sgd_step_kernel<scalar_t>(param.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                              momentum != 0 ? momentum_buffer.data_ptr<scalar_t>() : nullptr, m,
                              param.numel(), lr, weight_decay, momentum, dampening, nesterov,
                              maximize, first_step);
  });
}

void adam_step_cpu(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                   at::Tensor& exp_avg_sq, at::Tensor& max_exp_avg_sq,
                   const std::optional<at::Tensor>& mask, double lr, double beta1, double beta2,
                   double eps, double weight_decay, double step, bool amsgrad, bool maximize,
                   bool decoupled_weight_decay) {
  constexpr const char* op = "adam_step_";
  check_param(op, param);
  check_like_param(op, "grad", grad, param);
  check_like_param(op, "exp_avg", exp_avg, param);
  check_like_param(op, "exp_avg_sq", exp_avg_sq, param);
  if (amsgrad) check_like_param(op, "max_exp_avg_sq", max_exp_avg_sq, param);
  const bool* m = checked_mask(op, mask, param);
  if (param.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "sparse_tickets_adam_step", [&] {
    adam_step_kernel<scalar_t>(param.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                               exp_avg.data_ptr<scalar_t>(), exp_avg_sq.data_ptr<scalar_t>(),
                               amsgrad ? max_exp_avg_sq.data_ptr<scalar_t>() : nullptr, m,
                               param.numel(), lr, beta1, beta2, eps, weight_decay, step, amsgrad,
                               maximize, decoupled_weight_decay);
  });
}

// Every parameter of a param group in one call: the Python loop and one op call per tensor cost
// more than the arithmetic of a small network's step. Each counter (a float32 scalar tensor on
// the CPU, as torch.optim keeps it) is incremented in float32 as torch's `step_t += 1` does,
// then read as the step count, as torch's `.item()` does.
void adam_steps_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                    const c10::List<std::optional<at::Tensor>>& masks,
                    at::TensorList state_steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, bool amsgrad, bool maximize,
                    bool decoupled_weight_decay) {
  constexpr const char* op = "adam_steps_";
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n &&
                  masks.size() == n && state_steps.size() == n &&
                  (!amsgrad || max_exp_avg_sqs.size() == n),
              op, ": every list must hold one entry per param (", n, " params)");
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& counter = state_steps[i];
    TORCH_CHECK(counter.device().is_cpu() && counter.scalar_type() == at::kFloat &&
                    counter.numel() == 1,
                op, ": state_steps[", i, "] must be a float32 scalar tensor on the CPU");
  }
  const at::Tensor unused;
  for (size_t i = 0; i < n; ++i) {
    float* counter = state_steps[i].data_ptr<float>();
    *counter += 1.0f;
    at::Tensor param = params[i], exp_avg = exp_avgs[i], exp_avg_sq = exp_avg_sqs[i];
    at::Tensor max_exp_avg_sq = amsgrad ? max_exp_avg_sqs[i] : unused;
    adam_step_cpu(param, grads[i], exp_avg, exp_avg_sq, max_exp_avg_sq, masks.get(i), lr, beta1,
                  beta2, eps, weight_decay, double(*counter), amsgrad, maximize,
                  decoupled_weight_decay);
  }
}

}  // namespace
}  // namespace sparse_tickets_cpu

TORCH_LIBRARY_IMPL(sparse_tickets, CPU, m) {
  m.impl("spmm", &sparse_tickets_cpu::spmm_cpu);
  m.impl("sddmm", &sparse_tickets_cpu::sddmm_cpu);
  m.impl("sgd_step_", &sparse_tickets_cpu::sgd_step_cpu);
  m.impl("adam_step_", &sparse_tickets_cpu::adam_step_cpu);
  m.impl("adam_steps_", &sparse_tickets_cpu::adam_steps_cpu);
}
