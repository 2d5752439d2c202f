// The two inner kernels of the direct sparse convolution (see sparse_conv.cpp): a gather of
// kept weights times shifted input windows into a block of outputs (forward, input gradient),
// and the dot products of the weight gradient. Both variants use them; they know nothing of the
// layout beyond the offsets and steps they are given.

#pragma once

#include <algorithm>
#include <cstdint>

#include "common.h"
#include "simd.h"

namespace sparse_tickets_cpu {

// dst[p * dst_step + k * W] = init + sum_{j < count} val[j] * src[off[j] + p * step + k * W]
// for P blocks p of NV vectors: P * NV accumulators, one broadcast per kept weight.
template <typename T, int P, int NV>
inline void gather_block(const T* __restrict src, int64_t step, const int64_t* __restrict off,
                         const T* __restrict val, int64_t count, T init, T* __restrict dst,
                         int64_t dst_step) {
  using S = Simd<T>;
  constexpr int W = S::W;
  typename S::V acc[P][NV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) acc[p][k] = S::set1(init);
  for (int64_t j = 0; j < count; ++j) {
    const auto v = S::set1(val[j]);
    const T* s = src + off[j];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k)
        acc[p][k] = S::fmadd(v, S::load(s + p * step + k * W), acc[p][k]);
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) S::store(dst + p * dst_step + k * W, acc[p][k]);
}

// gather_block over `blocks` consecutive blocks, as many at a time as 8 accumulators allow.
template <typename T, int NV>
void gather_run(const T* src, int64_t step, const int64_t* off, const T* val, int64_t count,
                T init, T* dst, int64_t dst_step, int64_t blocks) {
  constexpr int P = NV == 1 ? 8 : NV == 2 ? 4 : 2;
  int64_t b = 0;
  for (; b + P <= blocks; b += P)
    gather_block<T, P, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                           dst_step);
  if constexpr (P >= 8) {
    if (b + 4 <= blocks) {
      gather_block<T, 4, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                             dst_step);
      b += 4;
    }
  }
  if constexpr (P >= 4) {
    if (b + 2 <= blocks) {
      gather_block<T, 2, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                             dst_step);
      b += 2;
    }
  }
  for (; b < blocks; ++b)
    gather_block<T, 1, NV>(src + b * step, step, off, val, count, init, dst + b * dst_step,
                           dst_step);
}

// A row of `vectors` contiguous vectors, in pieces of at most four.
template <typename T>
void gather_wide(const T* src, int64_t step, const int64_t* off, const T* val, int64_t count,
                 T init, T* dst, int64_t dst_step, int64_t blocks, int64_t vectors) {
  constexpr int W = Simd<T>::W;
  for (int64_t k = 0; k < vectors; k += 4) {
    const T* s = src + k * W;
    T* d = dst + k * W;
    switch (std::min<int64_t>(4, vectors - k)) {
      case 4: gather_run<T, 4>(s, step, off, val, count, init, d, dst_step, blocks); break;
      case 3: gather_run<T, 3>(s, step, off, val, count, init, d, dst_step, blocks); break;
      case 2: gather_run<T, 2>(s, step, off, val, count, init, d, dst_step, blocks); break;
      default: gather_run<T, 1>(s, step, off, val, count, init, d, dst_step, blocks);
    }
  }
}

// acc[t][0:W] += sum_{r < rows, p < pixels} g[r * grow + p * gstep] *
//                 x[off[t] + r * xrow + p * xstep]
// lane-wise, for J kept weights t: the weight gradient's dot products, J chains in flight.
// Several rows per call when rows are short (a 2x2 image, an 8-wide row), so that the
// accumulators' trip through memory is paid once per many products, not once per row.
template <typename T, int J>
inline void dot_block(const T* __restrict g, int64_t gstep, int64_t grow,
                      const T* __restrict x, int64_t xstep, int64_t xrow,
                      const int64_t* __restrict off, int64_t pixels, int64_t rows,
                      T* __restrict acc) {
  using S = Simd<T>;
  constexpr int W = S::W;
  typename S::V a[J];
  const T* xs[J];
#pragma GCC unroll 8
  for (int t = 0; t < J; ++t) a[t] = S::zero(), xs[t] = x + off[t];
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * grow;
    const int64_t xr = r * xrow;
    for (int64_t p = 0; p < pixels; ++p) {
      const auto gv = S::load(gr + p * gstep);
#pragma GCC unroll 8
      for (int t = 0; t < J; ++t) a[t] = S::fmadd(gv, S::load(xs[t] + xr + p * xstep), a[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < J; ++t) S::store(acc + t * W, S::add(S::load(acc + t * W), a[t]));
}

// dot_block over `count` kept weights, eight at a time, then four, two, one.
template <typename T>
void dot_run(const T* g, int64_t gstep, int64_t grow, const T* x, int64_t xstep, int64_t xrow,
             const int64_t* off, int64_t count, int64_t pixels, int64_t rows, T* acc) {
  constexpr int W = Simd<T>::W;
  int64_t t = 0;
  for (; t + 8 <= count; t += 8)
    dot_block<T, 8>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
  if (t + 4 <= count) {
    dot_block<T, 4>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
    t += 4;
  }
  if (t + 2 <= count) {
    dot_block<T, 2>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
    t += 2;
  }
  if (t < count)
    dot_block<T, 1>(g, gstep, grow, x, xstep, xrow, off + t, pixels, rows, acc + t * W);
}

// Output rows per dot_run call: enough for `vectors_per_row` vector products per row to add up
// to about 16 per accumulator trip; one row when rows are long (whose input window then stays
// in cache from one output channel to the next).
inline int64_t dot_rows(int64_t vectors_per_row, int64_t rows) {
  return std::min(rows, std::max<int64_t>(1, ceil_div(16, vectors_per_row)));
}

}  // namespace sparse_tickets_cpu
