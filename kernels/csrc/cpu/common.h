// What every CPU kernel unit shares: index arithmetic, the input checks, the one rule for
// splitting an op's work between threads, and the one batch-minor transpose.

#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "simd.h"

namespace sparse_tickets_cpu {

using index_t = int32_t;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t n, int64_t multiple) { return ceil_div(n, multiple) * multiple; }

// ---------------------------------------------------------------------------------------------
// Input checks: one line each, naming the op, the argument, what was expected and what came.

inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", t.device());
}

inline void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                             const char* like_name, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have ", like_name,
              "'s dtype ", like.scalar_type(), ", got ", t.scalar_type());
}

// An int32 1-D index vector on the CPU, made contiguous.
inline at::Tensor checked_index(const char* op, const char* name, const at::Tensor& t) {
  check_cpu(op, name, t);
  TORCH_CHECK(t.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got ", t.dim(), "-D");
  return t.contiguous();
}

// row_ptr (called `name`) must be a valid CSR row pointer over `col_name`'s nnz entries: 0
// first, nnz last, nondecreasing, and `rows` + 1 entries when rows >= 0 (the caller knows the
// row count) or at least one otherwise. (Column indices are not range-checked: that would cost
// a pass over the index per call.)
inline void check_row_ptr(const char* op, const char* name, const at::Tensor& row_ptr,
                          const char* col_name, int64_t nnz, int64_t rows = -1) {
  if (rows >= 0) {
    TORCH_CHECK(row_ptr.numel() == rows + 1, op, ": ", name, " must have ", rows + 1,
                " entries (one per row, plus one), got ", row_ptr.numel());
  } else {
    TORCH_CHECK(row_ptr.numel() >= 1, op, ": ", name, " must have rows + 1 >= 1 entries, got 0");
  }
  TORCH_CHECK(nnz <= std::numeric_limits<index_t>::max(), op, ": nnz must fit in int32, got ",
              nnz);
  const index_t* p = row_ptr.data_ptr<index_t>();
  const int64_t last = row_ptr.numel() - 1;
  TORCH_CHECK(p[0] == 0, op, ": ", name, "[0] must be 0, got ", p[0]);
  TORCH_CHECK(p[last] == nnz, op, ": ", name, "[-1] must equal ", col_name, "'s length ", nnz,
              ", got ", p[last]);
  for (int64_t r = 0; r < last; ++r)
    TORCH_CHECK(p[r] <= p[r + 1], op, ": ", name, " must be nondecreasing, but ", name, "[", r,
                "] = ", p[r], " > ", name, "[", r + 1, "] = ", p[r + 1]);
}

// ---------------------------------------------------------------------------------------------
// Splitting an op's work between threads.
//
// The work of a call is counted in multiply-adds of its inner loops (one per kept weight and
// output element, plus one per output element for its store); a thread is worth starting only
// for kMinMultiplyAddsPerThread of them, so a call takes min(threads, work / that) threads.
// A count of operations rather than a time or a size, so that it follows what a thread must
// amortise: a fork and join of the OpenMP pool (a few microseconds on any current server core,
// much more when another process holds a core the join must wait for) against the vectorised
// multiply-adds it is given. A core with wider vectors (AVX-512) does its share faster, so
// there the rule errs towards fewer threads, never towards more.
// The value was measured, not derived: on an AMD EPYC (AVX2 + FMA, 2 cores, shared with other
// work while measured), benchmarks/thread_rule.py compared the two cut-offs the kernels had
// before this rule (16384 per thread for the compact linear, 32768 for the conv): every call of
// either family between the two (LeNet-300-100's 300->100 layer at 2% density, ResNet-20's
// layers on one image at 2%) ran faster on one thread, by 9% to 3x (see
// benchmarks/results/cpu-amd-epyc-avx2-2threads/thread_rule.md). It is the larger of the two:
// too few threads on an idle machine costs at most the speedup of a call of a few tens of
// microseconds, too many on a busy one costs a wait for a core. Measure again on a machine of
// another kind before changing it.
constexpr int64_t kMinMultiplyAddsPerThread = 32768;

// Element loops with no multiply-adds to speak of (the batch-minor copies, the optimizer steps)
// go through at::parallel_for with a grain of this many elements per thread.
constexpr int64_t kMinCopiedPerThread = 32768;

inline int64_t threads_for_work(int64_t multiply_adds) {
  const int64_t available = std::max(1, at::get_num_threads());
  return std::clamp<int64_t>(multiply_adds / kMinMultiplyAddsPerThread, 1, available);
}

// Cut points of [0, rows) into `parts` ranges of about equal cost, at multiples of `block` rows.
// cost_before(r): the cost of rows [0, r), nondecreasing in r.
template <typename Cost>
std::vector<int64_t> balanced_cuts(int64_t rows, int64_t block, int64_t parts, Cost cost_before) {
  std::vector<int64_t> cuts(parts + 1, rows);
  cuts[0] = 0;
  const int64_t blocks = ceil_div(rows, block);
  auto cost = [&](int64_t b) { return cost_before(std::min(rows, b * block)); };
  const int64_t total = cost(blocks);
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = total * p / parts;
    int64_t lo = 0, hi = blocks;  // the first block boundary whose cost reaches the target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cost(mid) < target) lo = mid + 1; else hi = mid;
    }
    cuts[p] = std::max(cuts[p - 1], std::min(rows, lo * block));
  }
  return cuts;
}

// Runs body(begin, end) over contiguous ranges of [0, rows) (rows: CSR rows, channels) of about
// equal cost, cut at multiples of `block` rows, on as many threads as `work` is worth.
template <typename Cost, typename F>
void for_balanced_parts(int64_t rows, int64_t block, Cost cost_before, int64_t work, F body) {
  if (rows <= 0) return;
  const int64_t threads = std::min(threads_for_work(work), ceil_div(rows, block));
  if (threads == 1) {
    body(int64_t(0), rows);
    return;
  }
  const auto cuts = balanced_cuts(rows, block, threads, cost_before);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      if (cuts[part] < cuts[part + 1]) body(cuts[part], cuts[part + 1]);
  });
}

// The cost of CSR rows [0, r): their nonzeros plus one per row (a row costs about one nonzero
// on its own: its output's store).
struct CsrRowCost {
  const index_t* row_ptr;
  int64_t operator()(int64_t r) const { return int64_t(row_ptr[r]) + r; }
};

// ---------------------------------------------------------------------------------------------
// The batch-minor transpose: a panel of up to `lanes` batch items x `cols` columns to `cols`
// rows of `lanes` (batch innermost, so one kept weight's multiply-add is a vector operation
// over the batch), and back. In W x W blocks through registers.

// dst[w * dst_stride + b] = src[b * src_stride + w] for w < cols, b < lanes: zero for b >= batch
// (the padding lanes). lanes: a multiple of W.
template <typename T>
void to_batch_minor_panel(const T* src, int64_t src_stride, int64_t batch, int64_t cols,
                          T* dst, int64_t dst_stride, int64_t lanes) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const BlockTranspose<T> transpose;
  typename S::V r[W];
  for (int64_t w0 = 0; w0 < cols; w0 += W) {
    const int64_t nw = std::min<int64_t>(W, cols - w0);
    const auto column_lanes = S::lanes(nw);
    for (int64_t b0 = 0; b0 < lanes; b0 += W) {
      const int64_t nb = std::max<int64_t>(0, std::min<int64_t>(W, batch - b0));
      for (int i = 0; i < W; ++i)
        r[i] = i < nb ? S::load(src + (b0 + i) * src_stride + w0, column_lanes) : S::zero();
      transpose(r);
      for (int64_t k = 0; k < nw; ++k) S::store(dst + (w0 + k) * dst_stride + b0, r[k]);
    }
  }
}

// The inverse: dst[b * dst_stride + w] = src[w * src_stride + b] for w < cols, b < batch.
template <typename T>
void from_batch_minor_panel(const T* src, int64_t src_stride, int64_t batch, int64_t cols,
                            T* dst, int64_t dst_stride) {
  using S = Simd<T>;
  constexpr int W = S::W;
  const BlockTranspose<T> transpose;
  typename S::V r[W];
  for (int64_t w0 = 0; w0 < cols; w0 += W) {
    const int64_t nw = std::min<int64_t>(W, cols - w0);
    for (int64_t b0 = 0; b0 < batch; b0 += W) {
      for (int k = 0; k < W; ++k)
        r[k] = k < nw ? S::load(src + (w0 + k) * src_stride + b0) : S::zero();
      transpose(r);
      const int64_t nb = std::min<int64_t>(W, batch - b0);
      for (int64_t i = 0; i < nb; ++i) store_lanes<T>(dst + (b0 + i) * dst_stride + w0, r[i], nw);
    }
  }
}

}  // namespace sparse_tickets_cpu
