// Causal softmax attention on the CPU, forward and backward, as two XLA FFI custom calls.
//
// Why a kernel: XLA's CPU backend runs each batched attention dot on one thread, at about half
// the speed of a 2-D matmul, and spends as long again in the small ops around it. Here one work
// item is one (batch row, head) for the forward and one (batch row, key/value head) for the
// backward, spread over XLA's intra-op thread pool, and every product is a cache-sized GEMM.
//
// Layouts are the model's: q, out, dq [B, T, H, Dh]; k, v, dk, dv [B, T, K, Dh] with H = K * G
// (grouped-query attention); lse [B, H, T] is each query row's log-sum-exp of its scaled logits,
// the forward's only residual besides its inputs and output. Queries go in blocks of q_block
// rows and block i reads only the keys up to its own last position; inside a block the softmax
// is exact (no online rescaling), so scratch is q_block x T floats per product.
//
// The backward is FlashAttention-2's: recompute P = exp(scale * q k^T - lse), then
// dS = P * (dO v^T - delta) with delta = rowsum(dO * O), dq = scale * dS k,
// dk = scale * dS^T q, dv = P^T dO.
//
// Built and loaded by llm/kernels/cpu_attention.py with the host compiler (-O3 -march=native).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "parallel_for.h"
#include "vec.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace llm_kernels;

// The GEMM's register tile is kRows x kCols floats, kCols = two native vectors (vec.h), sized to
// the instruction set's register file: 2 * kRows accumulators + 2 B vectors + 1 broadcast must
// fit, or the accumulators spill to the stack on every k step (an 8 x 32 tile needs the 32
// registers of AVX-512; on a 16-register AVX2 build it ran at half the speed of XLA's attention).
#if defined(__AVX512F__)
constexpr int kRows = 8;  // 32 zmm: 16 accumulators
#elif defined(__AVX__)
constexpr int kRows = 6;  // 16 ymm: 12 accumulators (AVX, AVX2)
#elif defined(__aarch64__)
constexpr int kRows = 8;  // 32 NEON q registers: 16 accumulators
#else
constexpr int kRows = 6;  // 16 xmm (SSE2)
#endif
constexpr int kCols = 2 * kLanes;

// C[MR x kCols] (+)= A[MR x K] B[K x kCols], row-major with leading dimensions, or A^T B when A
// is stored transposed ([K x MR]); the tile of C lives in 2 * MR registers for the whole K loop.
template <int MR, bool kTransA>
inline void tile(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc, bool accumulate) {
  vf c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      c0[r] = loadv(C + r * ldc);
      c1[r] = loadv(C + r * ldc + kLanes);
    } else {
      c0[r] = vf{};
      c1[r] = vf{};
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const vf b0 = loadv(B + k * ldb), b1 = loadv(B + k * ldb + kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float a = kTransA ? A[k * lda + r] : A[r * lda + k];
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    storev(C + r * ldc, c0[r]);
    storev(C + r * ldc + kLanes, c1[r]);
  }
}

template <int MR, bool kTransA>
void rows_tile(int64_t rows, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
               float* C, int64_t ldc, bool accumulate) {
  if (rows >= MR) {
    tile<MR, kTransA>(K, A, lda, B, ldb, C, ldc, accumulate);
  } else if constexpr (MR > 1) {
    rows_tile<MR - 1, kTransA>(rows, K, A, lda, B, ldb, C, ldc, accumulate);
  }
}

constexpr int64_t kDepth = 256;  // K per pass, so a kCols-column panel of B stays in L1

// C[M x N] (+)= A[M x K] B[K x N], row-major with leading dimensions; with kTransA, A is stored
// as its transpose [K x M] (the backward's P^T dO and dS^T q, without transposing P or dS).
template <bool kTransA = false>
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  const int64_t n_tiled = N - N % kCols;
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    const int64_t depth = std::min(kDepth, K - k0);
    const bool acc = accumulate || k0 > 0;
    for (int64_t j = 0; j < n_tiled; j += kCols) {
      for (int64_t i = 0; i < M; i += kRows) {
        const float* a = kTransA ? A + k0 * lda + i : A + i * lda + k0;
        rows_tile<kRows, kTransA>(std::min<int64_t>(kRows, M - i), depth, a, lda, B + k0 * ldb + j, ldb,
                                  C + i * ldc + j, ldc, acc);
      }
    }
    for (int64_t i = 0; i < M; ++i) {  // the columns past the last multiple of kCols
      for (int64_t j = n_tiled; j < N; ++j) {
        float sum = acc ? C[i * ldc + j] : 0.0f;
        for (int64_t k = k0; k < k0 + depth; ++k) {
          sum += (kTransA ? A[k * lda + i] : A[i * lda + k]) * B[k * ldb + j];
        }
        C[i * ldc + j] = sum;
      }
    }
  }
}

// dst[cols x rows] = src[rows x cols]^T.
void transpose(int64_t rows, int64_t cols, const float* src, int64_t ld_src, float* dst,
               int64_t ld_dst) {
  constexpr int64_t kBlock = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock) {
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
      const int64_t i1 = std::min(rows, i0 + kBlock), j1 = std::min(cols, j0 + kBlock);
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t i = i0; i < i1; ++i) dst[j * ld_dst + i] = src[i * ld_src + j];
      }
    }
  }
}

// From the raw scores in prow[0, n) and dP in dsrow[0, n): P = exp(scale * s - lse) into prow
// and dS = scale * P * (dP - delta) into dsrow.
void softmax_backward_row(float* prow, float* dsrow, int64_t n, float scale, float lse,
                          float delta) {
  const int64_t nv = n - n % kLanes;
  for (int64_t j = 0; j < nv; j += kLanes) {
    const vf p = expv(loadv(prow + j) * scale - lse);
    storev(prow + j, p);
    storev(dsrow + j, p * (loadv(dsrow + j) - delta) * scale);
  }
  for (int64_t j = nv; j < n; ++j) {
    prow[j] = exp1(prow[j] * scale - lse);
    dsrow[j] = prow[j] * (dsrow[j] - delta) * scale;
  }
}

// Per-thread scratch, grown on demand and kept between calls.
float* scratch(int slot, size_t floats) {
  thread_local std::vector<float> buffers[5];
  if (buffers[slot].size() < floats) buffers[slot].resize(floats);
  return buffers[slot].data();
}

struct Shape {
  int64_t B, T, H, K, Dh, G;
};

ffi::Error check(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k,
                 const ffi::Buffer<ffi::F32>& v, Shape* s) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4) {
    return ffi::Error::InvalidArgument("cpu attention: q, k, v must be [B, T, heads, head_dim]");
  }
  *s = Shape{qd[0], qd[1], qd[2], kd[2], qd[3], 0};
  if (kd[0] != s->B || kd[1] != s->T || kd[3] != s->Dh || vd[0] != s->B || vd[1] != s->T ||
      vd[2] != s->K || vd[3] != s->Dh || s->K == 0 || s->H % s->K != 0) {
    return ffi::Error::InvalidArgument("cpu attention: k and v must be [B, T, K, head_dim], K | H");
  }
  s->G = s->H / s->K;
  return ffi::Error::Success();
}

// The GEMMs' B operands are packed into contiguous rows first: read in place, a head's rows sit
// H * Dh floats apart, and at 1 KiB strides 64 of them share a handful of L1 sets. For the same
// reason row-blocks of T floats get a padded leading dimension (padded(T)).
inline int64_t padded(int64_t n) { return n + 16; }

// dst[rows x cols] = src rows, ld_src apart.
void pack_rows(int64_t rows, int64_t cols, const float* src, int64_t ld_src, float* dst) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * ld_src, src + r * ld_src + cols, dst + r * cols);
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> lse, float scale, int64_t q_block) {
  Shape s;
  if (ffi::Error e = check(q, k, v, &s); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = out->typed_data(), *lp = lse->typed_data();
  const int64_t ldq = s.H * s.Dh, ldk = s.K * s.Dh, ldt = padded(s.T);
  parallel_for(pool, s.B * s.H, [&](int64_t item) {
    const int64_t b = item / s.H, h = item % s.H, kvh = h / s.G;
    const float* q0 = qp + (b * s.T * s.H + h) * s.Dh;
    float* o0 = op + (b * s.T * s.H + h) * s.Dh;
    float* l0 = lp + (b * s.H + h) * s.T;
    float* kt = scratch(0, s.Dh * ldt);  // k^T [Dh x T]
    float* vc = scratch(1, s.T * s.Dh);  // v [T x Dh]
    float* p = scratch(2, q_block * ldt);
    transpose(s.T, s.Dh, kp + (b * s.T * s.K + kvh) * s.Dh, ldk, kt, ldt);
    pack_rows(s.T, s.Dh, vp + (b * s.T * s.K + kvh) * s.Dh, ldk, vc);
    for (int64_t start = 0; start < s.T; start += q_block) {
      const int64_t end = std::min(s.T, start + q_block), rows = end - start;
      gemm(rows, end, s.Dh, q0 + start * ldq, ldq, kt, ldt, p, ldt, false);  // scores
      for (int64_t r = 0; r < rows; ++r) {
        float* row = p + r * ldt;
        const int64_t n = start + r + 1;  // keys 0..t
        l0[start + r] = softmax_row(row, n, scale);
        std::fill(row + n, row + end, 0.0f);
      }
      gemm(rows, s.Dh, end, p, ldt, vc, s.Dh, o0 + start * ldq, ldq, false);
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, float scale,
                    int64_t q_block) {
  Shape s;
  if (ffi::Error e = check(q, k, v, &s); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *op = out.typed_data(), *lp = lse.typed_data(), *dop = dout.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  const int64_t ldq = s.H * s.Dh, ldk = s.K * s.Dh, ldt = padded(s.T), Dh = s.Dh;
  // One item per (batch row, key/value head): it owns that head's dk and dv rows and the dq rows
  // of its G query heads, so items never write the same memory.
  parallel_for(pool, s.B * s.K, [&](int64_t item) {
    const int64_t b = item / s.K, kvh = item % s.K, kv_head = (b * s.T * s.K + kvh) * Dh;
    float* kt = scratch(0, 2 * Dh * ldt);  // k^T and v^T [Dh x T]
    float* vt = kt + Dh * ldt;
    float* kqc = scratch(1, 4 * s.T * Dh);  // k, then q, dO, dk, dv [T x Dh] of one head
    float *qc = kqc + s.T * Dh, *doc = qc + s.T * Dh;
    float* p = scratch(2, q_block * ldt);
    float* ds = scratch(3, q_block * ldt);
    float* dkv = scratch(4, 2 * s.T * Dh);
    float *dk_acc = dkv, *dv_acc = dkv + s.T * Dh;
    transpose(s.T, Dh, kp + kv_head, ldk, kt, ldt);
    transpose(s.T, Dh, vp + kv_head, ldk, vt, ldt);
    pack_rows(s.T, Dh, kp + kv_head, ldk, kqc);
    std::fill(dkv, dkv + 2 * s.T * Dh, 0.0f);
    for (int64_t h = kvh * s.G; h < (kvh + 1) * s.G; ++h) {
      const int64_t head = (b * s.T * s.H + h) * Dh;
      const float* o0 = op + head;
      const float* l0 = lp + (b * s.H + h) * s.T;
      pack_rows(s.T, Dh, qp + head, ldq, qc);
      pack_rows(s.T, Dh, dop + head, ldq, doc);
      for (int64_t start = 0; start < s.T; start += q_block) {
        const int64_t end = std::min(s.T, start + q_block), rows = end - start;
        const float *q_blk = qc + start * Dh, *do_blk = doc + start * Dh;
        gemm(rows, end, Dh, q_blk, Dh, kt, ldt, p, ldt, false);   // scores
        gemm(rows, end, Dh, do_blk, Dh, vt, ldt, ds, ldt, false);  // dP
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = start + r, n = t + 1;
          const float delta = dot(do_blk + r * Dh, o0 + t * ldq, Dh);
          float *prow = p + r * ldt, *dsrow = ds + r * ldt;
          softmax_backward_row(prow, dsrow, n, scale, l0[t], delta);
          std::fill(prow + n, prow + end, 0.0f);
          std::fill(dsrow + n, dsrow + end, 0.0f);
        }
        gemm<true>(end, Dh, rows, p, ldt, do_blk, Dh, dv_acc, Dh, true);
        gemm(rows, Dh, end, ds, ldt, kqc, Dh, dqp + head + start * ldq, ldq, false);
        gemm<true>(end, Dh, rows, ds, ldt, q_blk, Dh, dk_acc, Dh, true);
      }
    }
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t at = kv_head + t * ldk;
      std::copy(dk_acc + t * Dh, dk_acc + (t + 1) * Dh, dkp + at);
      std::copy(dv_acc + t * Dh, dv_acc + (t + 1) * Dh, dvp + at);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LlmCausalAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("q_block"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LlmCausalAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dout
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dv
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("q_block"));
