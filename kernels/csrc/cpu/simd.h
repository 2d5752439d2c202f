// The SIMD layer of the CPU kernels (compact_ops.cpp, sparse_conv.cpp): one vector of W lanes,
// a lane mask, and the two register shuffles the kernels need (a W x W transpose and a fold of
// W vectors into their W lane sums).
//
// Chosen at build time from the compiler's target macros (the build uses -march=native):
//   AVX-512 (F + BW + VL + DQ)  16 fp32 / 8 fp64 lanes, mask registers, two-source permutes;
//   AVX2 + FMA                  8 fp32 / 4 fp64 lanes, masks as all-ones lanes, the shuffles as
//                               unpack / shuffle / 128-bit lane permutes;
//   anything else               the same kernels over a plain array of 64 bytes of lanes, which
//                               compilers vectorise as they can.
// Every path rounds alike: fmadd is one fused multiply-add (std::fma in the portable one), and
// nothing else contracts (ISO C++ build, -ffp-contract=off), so the optimizer steps keep their
// bitwise contract with torch.optim on each of them.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
#define SPARSE_TICKETS_AVX512 1
#define SPARSE_TICKETS_AVX2 0
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define SPARSE_TICKETS_AVX512 0
#define SPARSE_TICKETS_AVX2 1
#include <immintrin.h>
#else
#define SPARSE_TICKETS_AVX512 0
#define SPARSE_TICKETS_AVX2 0
#endif

namespace sparse_tickets_cpu {

// ---------------------------------------------------------------------------------------------
// SIMD abstraction: one vector of W lanes (64 bytes), a lane mask and a permutation index.
// Element loops pass either a lane mask (the last, partial vector) or AllLanes (every other).

struct AllLanes {};

template <typename T>
struct Simd;

#if SPARSE_TICKETS_AVX512

template <>
struct Simd<float> {
  static constexpr int W = 16;
  using V = __m512;
  using M = __mmask16;
  using Idx = __m512i;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static V load(const float* p, AllLanes) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, V v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  static void store(float* p, V v, AllLanes) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V neg(V a) { return _mm512_xor_ps(a, _mm512_set1_ps(-0.0f)); }
  // torch.maximum: NaN if either is NaN (Vectorized<float>::maximum's order and NaN).
  static V maximum(V a, V b) {
    const V m = _mm512_max_ps(a, b);
    const M nan = _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, m, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  }
  static V keep(V a, M m) { return _mm512_maskz_mov_ps(m, a); }
  static M lanes(int64_t n) { return n >= W ? M(0xFFFF) : M((1u << n) - 1u); }
  static M nonzero_bytes(const bool* p, M m) {
    const __m128i bytes = _mm_maskz_loadu_epi8(m, p);
    return _mm_test_epi8_mask(bytes, bytes);
  }
  static M nonzero_bytes(const bool* p, AllLanes) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm_test_epi8_mask(bytes, bytes);
  }
  static Idx make_idx(const int* lane) {
    alignas(64) int32_t v[W];
    for (int i = 0; i < W; ++i) v[i] = lane[i];
    return _mm512_load_si512(v);
  }
  static V permute2(V a, Idx idx, V b) { return _mm512_permutex2var_ps(a, idx, b); }
};

template <>
struct Simd<double> {
  static constexpr int W = 8;
  using V = __m512d;
  using M = __mmask8;
  using Idx = __m512i;
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V load(const double* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static V load(const double* p, AllLanes) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store(double* p, V v, M m) { _mm512_mask_storeu_pd(p, m, v); }
  static void store(double* p, V v, AllLanes) { _mm512_storeu_pd(p, v); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V div(V a, V b) { return _mm512_div_pd(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V sqrt(V a) { return _mm512_sqrt_pd(a); }
  static V neg(V a) { return _mm512_xor_pd(a, _mm512_set1_pd(-0.0)); }
  static V maximum(V a, V b) {
    const V m = _mm512_max_pd(a, b);
    const M nan = _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q);
    return _mm512_mask_blend_pd(nan, m, _mm512_set1_pd(std::numeric_limits<double>::quiet_NaN()));
  }
  static V keep(V a, M m) { return _mm512_maskz_mov_pd(m, a); }
  static M lanes(int64_t n) { return n >= W ? M(0xFF) : M((1u << n) - 1u); }
  static M nonzero_bytes(const bool* p, M m) {
    const __m128i bytes = _mm_maskz_loadu_epi8(__mmask16(m), p);
    return M(_mm_test_epi8_mask(bytes, bytes));
  }
  static M nonzero_bytes(const bool* p, AllLanes) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return M(_mm_test_epi8_mask(bytes, bytes));
  }
  static Idx make_idx(const int* lane) {
    alignas(64) int64_t v[W];
    for (int i = 0; i < W; ++i) v[i] = lane[i];
    return _mm512_load_si512(v);
  }
  static V permute2(V a, Idx idx, V b) { return _mm512_permutex2var_pd(a, idx, b); }
};

#elif SPARSE_TICKETS_AVX2

// Masks are vectors whose kept lanes are all ones (what maskload / maskstore / and read).
template <>
struct Simd<float> {
  static constexpr int W = 8;
  using V = __m256;
  using M = __m256i;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static V load(const float* p, AllLanes) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, V v, M m) { _mm256_maskstore_ps(p, m, v); }
  static void store(float* p, V v, AllLanes) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static V maximum(V a, V b) {
    const V m = _mm256_max_ps(a, b);
    const V nan = _mm256_cmp_ps(a, b, _CMP_UNORD_Q);
    return _mm256_blendv_ps(m, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), nan);
  }
  static V keep(V a, M m) { return _mm256_and_ps(a, _mm256_castsi256_ps(m)); }
  static M lanes(int64_t n) {
    const int32_t count = int32_t(std::min<int64_t>(n, W));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static M nonzero_bytes(const bool* p, AllLanes) {
    int64_t bytes;
    std::memcpy(&bytes, p, sizeof(bytes));
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
    return _mm256_xor_si256(_mm256_cmpeq_epi32(wide, _mm256_setzero_si256()),
                            _mm256_set1_epi32(-1));
  }
  static M nonzero_bytes(const bool* p, M m) {  // reads only the lanes of m
    const int kept = _mm256_movemask_ps(_mm256_castsi256_ps(m));
    alignas(32) int32_t v[W];
    for (int i = 0; i < W; ++i) v[i] = ((kept >> i) & 1) && p[i] ? -1 : 0;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
  }
};

template <>
struct Simd<double> {
  static constexpr int W = 4;
  using V = __m256d;
  using M = __m256i;
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V load(const double* p, M m) { return _mm256_maskload_pd(p, m); }
  static V load(const double* p, AllLanes) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void store(double* p, V v, M m) { _mm256_maskstore_pd(p, m, v); }
  static void store(double* p, V v, AllLanes) { _mm256_storeu_pd(p, v); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V div(V a, V b) { return _mm256_div_pd(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V sqrt(V a) { return _mm256_sqrt_pd(a); }
  static V neg(V a) { return _mm256_xor_pd(a, _mm256_set1_pd(-0.0)); }
  static V maximum(V a, V b) {
    const V m = _mm256_max_pd(a, b);
    const V nan = _mm256_cmp_pd(a, b, _CMP_UNORD_Q);
    return _mm256_blendv_pd(m, _mm256_set1_pd(std::numeric_limits<double>::quiet_NaN()), nan);
  }
  static V keep(V a, M m) { return _mm256_and_pd(a, _mm256_castsi256_pd(m)); }
  static M lanes(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(std::min<int64_t>(n, W)),
                              _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static M nonzero_bytes(const bool* p, AllLanes) {
    int32_t bytes;
    std::memcpy(&bytes, p, sizeof(bytes));
    const __m256i wide = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(bytes));
    return _mm256_xor_si256(_mm256_cmpeq_epi64(wide, _mm256_setzero_si256()),
                            _mm256_set1_epi64x(-1));
  }
  static M nonzero_bytes(const bool* p, M m) {
    const int kept = _mm256_movemask_pd(_mm256_castsi256_pd(m));
    alignas(32) int64_t v[W];
    for (int i = 0; i < W; ++i) v[i] = ((kept >> i) & 1) && p[i] ? -1 : 0;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
  }
};

#else  // portable lanes: the same kernels, vectorised by the compiler where it can

template <typename T>
struct Simd {
  static constexpr int W = 64 / int(sizeof(T));
  struct V {
    T v[W];
  };
  using M = uint32_t;
  struct Idx {
    int v[W];
  };
  template <typename F>
  static V map(F f) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = f(i);
    return r;
  }
  static V zero() { return set1(T(0)); }
  static V set1(T x) { return map([&](int) { return x; }); }
  static V load(const T* p) { return map([&](int i) { return p[i]; }); }
  static V load(const T* p, M m) { return map([&](int i) { return (m >> i) & 1u ? p[i] : T(0); }); }
  static V load(const T* p, AllLanes) { return load(p); }
  static void store(T* p, V v) {
    for (int i = 0; i < W; ++i) p[i] = v.v[i];
  }
  static void store(T* p, V v, AllLanes) { store(p, v); }
  static void store(T* p, V v, M m) {
    for (int i = 0; i < W; ++i)
      if ((m >> i) & 1u) p[i] = v.v[i];
  }
  static V add(V a, V b) { return map([&](int i) { return a.v[i] + b.v[i]; }); }
  static V sub(V a, V b) { return map([&](int i) { return a.v[i] - b.v[i]; }); }
  static V mul(V a, V b) { return map([&](int i) { return a.v[i] * b.v[i]; }); }
  static V div(V a, V b) { return map([&](int i) { return a.v[i] / b.v[i]; }); }
  static V fmadd(V a, V b, V c) {
    return map([&](int i) { return std::fma(a.v[i], b.v[i], c.v[i]); });
  }
  static V sqrt(V a) { return map([&](int i) { return std::sqrt(a.v[i]); }); }
  static V neg(V a) { return map([&](int i) { return -a.v[i]; }); }
  static V maximum(V a, V b) {
    return map([&](int i) {
      if (std::isnan(a.v[i]) || std::isnan(b.v[i])) return std::numeric_limits<T>::quiet_NaN();
      return a.v[i] > b.v[i] ? a.v[i] : b.v[i];
    });
  }
  static V keep(V a, M m) { return map([&](int i) { return (m >> i) & 1u ? a.v[i] : T(0); }); }
  static M lanes(int64_t n) { return n >= W ? M((1ull << W) - 1u) : M((1u << n) - 1u); }
  static M nonzero_bytes(const bool* p, AllLanes) { return nonzero_bytes(p, lanes(W)); }
  static M nonzero_bytes(const bool* p, M m) {
    M r = 0;
    for (int i = 0; i < W; ++i)
      if (((m >> i) & 1u) && p[i]) r |= M(1) << i;
    return r;
  }
  static Idx make_idx(const int* lane) {
    Idx r;
    for (int i = 0; i < W; ++i) r.v[i] = lane[i];
    return r;
  }
  static V permute2(V a, Idx idx, V b) {
    return map([&](int i) { return idx.v[i] < W ? a.v[idx.v[i]] : b.v[idx.v[i] - W]; });
  }
};

#endif

// Stores the first n lanes of v, all of them when n >= W, with a plain store when it can:
// masked stores are microcoded on AMD's Zen cores (a dozen cycles and more each; VMASKMOVPS),
// and a kernel that stores every full vector masked pays that on every store.
template <typename T>
inline void store_lanes(T* p, typename Simd<T>::V v, int64_t n) {
  if (n >= Simd<T>::W) Simd<T>::store(p, v);
  else Simd<T>::store(p, v, Simd<T>::lanes(n));
}

// An empty statement the compiler must keep in order with memory accesses. In a loop of vector
// stores it stops the loop from being turned into a memset or memcpy call, which for the short
// rows those loops copy (tens of elements) costs more than the stores themselves.
inline void keep_as_stores() { asm volatile("" ::: "memory"); }

template <typename T>
constexpr int log2_width() {
  return Simd<T>::W == 16 ? 4 : Simd<T>::W == 8 ? 3 : 2;
}

// A W x W transpose in registers: stage s swaps bit s of the row index with bit s of the column
// index by exchanging the off-diagonal s x s blocks of each pair of rows (i, i + s).
template <typename T>
struct BlockTranspose {
  using S = Simd<T>;
  static constexpr int W = S::W;
  static constexpr int STAGES = log2_width<T>();
  typename S::Idx low[STAGES], high[STAGES];

  BlockTranspose() {
    int stage = 0;
    for (int s = W / 2; s >= 1; s /= 2, ++stage) {
      int lo[W], hi[W];
      for (int c = 0; c < W; ++c) {
        lo[c] = (c & s) ? W + c - s : c;
        hi[c] = (c & s) ? W + c : c + s;
      }
      low[stage] = S::make_idx(lo);
      high[stage] = S::make_idx(hi);
    }
  }

  void operator()(typename S::V* r) const {
#pragma GCC unroll 4
    for (int stage = 0; stage < STAGES; ++stage) {
      const int s = W >> (stage + 1);
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) {
        if (i & s) continue;
        const auto a = r[i], b = r[i + s];
        r[i] = S::permute2(a, low[stage], b);
        r[i + s] = S::permute2(a, high[stage], b);
      }
    }
  }
};

// Folds W vectors into one whose lane t is the sum of the lanes of vector t: at each stage,
// pairs (t, t + s) fold each block of 2s partial sums to s and pack the two halves together.
template <typename T>
struct LaneSums {
  using S = Simd<T>;
  static constexpr int W = S::W;
  static constexpr int STAGES = log2_width<T>();
  typename S::Idx low[STAGES], high[STAGES];

  LaneSums() {
    int stage = 0;
    for (int s = W / 2; s >= 1; s /= 2, ++stage) {
      int lo[W], hi[W];
      for (int c = 0; c < W; ++c) {
        const int base = c - c % (2 * s), k = c % (2 * s);
        lo[c] = k < s ? base + k : W + base + k - s;
        hi[c] = k < s ? base + k + s : W + base + k;
      }
      low[stage] = S::make_idx(lo);
      high[stage] = S::make_idx(hi);
    }
  }

  typename S::V operator()(typename S::V* v) const {
#pragma GCC unroll 4
    for (int stage = 0; stage < STAGES; ++stage) {
      const int s = W >> (stage + 1);
#pragma GCC unroll 8
      for (int t = 0; t < s; ++t) {
        const auto a = v[t], b = v[t + s];
        v[t] = S::add(S::permute2(a, low[stage], b), S::permute2(a, high[stage], b));
      }
    }
    return v[0];
  }
};

#if SPARSE_TICKETS_AVX2
// AVX2 has no two-source permute: the transposes and folds are the classic unpack / shuffle /
// 128-bit-lane sequences.

template <>
struct BlockTranspose<float> {
  void operator()(__m256* r) const {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
  }
};

template <>
struct BlockTranspose<double> {
  void operator()(__m256d* r) const {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

template <>
struct LaneSums<float> {
  __m256 operator()(__m256* v) const {
    const __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
    // q0 lane t (t < 4): the low half's sum of v[t]; lane 4 + t: its high half's sum.
    const __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
  }
};

template <>
struct LaneSums<double> {
  __m256d operator()(__m256d* v) const {
    const __m256d h01 = _mm256_hadd_pd(v[0], v[1]), h23 = _mm256_hadd_pd(v[2], v[3]);
    return _mm256_add_pd(_mm256_permute2f128_pd(h01, h23, 0x20),
                         _mm256_permute2f128_pd(h01, h23, 0x31));
  }
};
#endif

}  // namespace sparse_tickets_cpu
