// Vector helpers for the CPU kernels of this folder: one native vector type, exp, reductions and
// a softmax row, compiled for the instruction set the build targets (-march).
#ifndef LLM_KERNELS_VEC_H_
#define LLM_KERNELS_VEC_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace llm_kernels {

// The native vector: kLanes floats.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;  // AVX, AVX2
#else
constexpr int kLanes = 4;  // NEON, SSE2
#endif
// One native vector of kLanes floats; aligned(4) makes loads and stores through it unaligned-safe.
// Every vector op of the kernels uses it: a wider generic vector (64 bytes on a 32-byte AVX2 unit)
// compiles its integer shifts and selects into slow split sequences.
typedef float vf __attribute__((vector_size(4 * kLanes), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

inline vf loadv(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void storev(float* p, vf x) { *reinterpret_cast<vf*>(p) = x; }

inline vf splat(float x) { return vf{} + x; }

// exp(x) for x <= 0 (every argument here is a logit minus its row's max or log-sum-exp), kLanes at
// a time: 2^n * p(r), n rounded by the 1.5 * 2^23 trick, p of degree 6; relative error ~2e-7.
inline vf expv(vf x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const vf r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
  vf p = splat(1.0f / 720);
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return reinterpret_cast<vf>(reinterpret_cast<vi>(p) + (__builtin_convertvector(n, vi) << 23));
}

inline float exp1(float x) { return expv(splat(x))[0]; }

inline float hmax(vf x) {
  float m = x[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, x[i]);
  return m;
}

inline float hsum(vf x) {
  float s = 0;
  for (int i = 0; i < kLanes; ++i) s += x[i];
  return s;
}

inline float dot(const float* x, const float* y, int64_t n) {
  const int64_t nv = n - n % kLanes;
  vf acc{};
  for (int64_t i = 0; i < nv; i += kLanes) acc += loadv(x + i) * loadv(y + i);
  float sum = hsum(acc);
  for (int64_t i = nv; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

// Softmax of row[0, n) scaled by `scale`, in place; returns the row's log-sum-exp.
inline float softmax_row(float* row, int64_t n, float scale) {
  const int64_t nv = n - n % kLanes;
  vf vmax = splat(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < nv; j += kLanes) {
    const vf x = loadv(row + j);
    vmax = x > vmax ? x : vmax;
  }
  float max = hmax(vmax);
  for (int64_t j = nv; j < n; ++j) max = std::max(max, row[j]);
  max *= scale;  // scale > 0
  vf vsum{};
  for (int64_t j = 0; j < nv; j += kLanes) {
    const vf e = expv(loadv(row + j) * scale - max);
    storev(row + j, e);
    vsum += e;
  }
  float sum = hsum(vsum);
  for (int64_t j = nv; j < n; ++j) sum += (row[j] = exp1(row[j] * scale - max));
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return max + std::log(sum);
}

}  // namespace llm_kernels

#endif  // LLM_KERNELS_VEC_H_
