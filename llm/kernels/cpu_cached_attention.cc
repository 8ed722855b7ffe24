// Attention of a few new queries per row over a KV cache, on the CPU, as an XLA FFI custom call:
// the decode step of llm/attention/kv_cache.py, the new keys and values written into the cache
// here too (the cache buffers are aliased in and out, so the write is in place). As XLA ops, the
// write was two scatters per layer, 15% of a batch-32 decode step at context 512
// (docs/performance.md).
//
// Why a kernel: a decode step is a memory-bound read of the whole cache, and XLA's CPU backend
// runs each batched attention product on one thread (about half of a batch-32 step at context
// 512; docs/performance.md). Here one work item is one (batch row, key/value head), spread over
// XLA's intra-op thread pool, and each item reads only the slots its row has filled, not the
// cache's whole length.
//
// Layouts are the cache's: q, out [B, T, H, Dh]; new_k, new_v [B, T, K, Dh]; k [B, K, Dh, S] (keys
// transposed), v [B, K, S, Dh]; lengths [B] int32, the slots each row held before these T keys.
// The new keys and values go to slots lengths[b] .. lengths[b] + T - 1 (those past S are dropped),
// and query t of row b attends to slots 0 .. lengths[b] + t (capped at S), as the XLA path does.
//
// Built into one library with cpu_attention.cc by llm/kernels/cpu_attention.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel_for.h"
#include "vec.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace llm_kernels;

constexpr int64_t kLine = 64 / sizeof(float);  // floats per cache line
constexpr int kBlockVecs = 4;                  // vectors of slots whose scores stay in registers
constexpr int64_t kBlock = kBlockVecs * kLanes;
constexpr int64_t kAheadBlocks = 2;            // key blocks requested ahead of the one computed

// The first key block of every row and the first value rows, requested together at an item's start.
void prefetch_start(const float* k, int64_t ldk, const float* v, int64_t Dh, int64_t n) {
  const int64_t width = std::min(n, kAheadBlocks * kBlock);
  for (int64_t d = 0; d < Dh; ++d)
    for (int64_t j = 0; j < width; j += kLine) __builtin_prefetch(k + d * ldk + j);
  for (int64_t i = 0; i < std::min<int64_t>(n, 8) * Dh; i += kLine) __builtin_prefetch(v + i);
}

// logits[0..n) = sum_d q[d] k[d, 0..n), the key rows ldk apart (keys transposed). kBlock slots at a
// time, their sums held in registers over all Dh rows; while a block is computed the lines of the
// block kAheadBlocks on are requested: the Dh rows are as many short streams, more than the hardware
// prefetcher follows (docs/performance.md). Past n, whole vectors run on while they stay inside the
// row (their logits are never read), so only a row ending mid-vector has a scalar tail.
void scores(const float* __restrict q, const float* __restrict k, int64_t ldk, int64_t Dh, int64_t n,
            float* __restrict logits) {
  int64_t s = 0;
  for (; s + kBlock <= n; s += kBlock) {
    vf acc[kBlockVecs] = {};
    const int64_t ahead = s + kAheadBlocks * kBlock;
    for (int64_t d = 0; d < Dh; ++d) {
      const float* row = k + d * ldk + s;
      if (ahead < n)
        for (int64_t j = 0; j < kBlock; j += kLine) __builtin_prefetch(row + kAheadBlocks * kBlock + j);
      const vf qd = splat(q[d]);
      for (int j = 0; j < kBlockVecs; ++j) acc[j] += qd * loadv(row + j * kLanes);
    }
    for (int j = 0; j < kBlockVecs; ++j) storev(logits + s + j * kLanes, acc[j]);
  }
  for (; s < n && s + kLanes <= ldk; s += kLanes) {
    vf acc{};
    for (int64_t d = 0; d < Dh; ++d) acc += splat(q[d]) * loadv(k + d * ldk + s);
    storev(logits + s, acc);
  }
  for (; s < n; ++s) {
    float acc = 0.0f;
    for (int64_t d = 0; d < Dh; ++d) acc += q[d] * k[d * ldk + s];
    logits[s] = acc;
  }
}

// out[0..DH) = sum_s p[s] v[s, 0..DH), the value rows contiguous; the sums in registers.
template <int64_t DH>
void weighted_values_fixed(const float* __restrict p, const float* __restrict v, int64_t n, float* __restrict out) {
  constexpr int kVecs = DH / kLanes;
  vf acc[kVecs] = {};
  for (int64_t s = 0; s < n; ++s) {
    const float* vs = v + s * DH;
    for (int64_t j = 0; j < DH; j += kLine) __builtin_prefetch(vs + 8 * DH + j);
    const vf ps = splat(p[s]);
    for (int j = 0; j < kVecs; ++j) acc[j] += ps * loadv(vs + j * kLanes);
  }
  for (int j = 0; j < kVecs; ++j) storev(out + j * kLanes, acc[j]);
}

void weighted_values(const float* __restrict p, const float* __restrict v, int64_t Dh, int64_t n,
                     float* __restrict out) {
  if (Dh == 64) return weighted_values_fixed<64>(p, v, n, out);
  if (Dh == 128) return weighted_values_fixed<128>(p, v, n, out);
  std::fill(out, out + Dh, 0.0f);
  for (int64_t s = 0; s < n; ++s) {
    const float ps = p[s];
    const float* vs = v + s * Dh;
    for (int64_t d = 0; d < Dh; ++d) out[d] += ps * vs[d];
  }
}

ffi::Error CachedAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> new_k,
                           ffi::Buffer<ffi::F32> new_v, ffi::Buffer<ffi::F32> k_in, ffi::Buffer<ffi::F32> v_in,
                           ffi::Buffer<ffi::S32> lengths, ffi::ResultBuffer<ffi::F32> out,
                           ffi::ResultBuffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> v, float scale) {
  auto qd = q.dimensions(), nd = new_k.dimensions(), kd = k_in.dimensions(), vd = v_in.dimensions(),
       ld = lengths.dimensions();
  if (qd.size() != 4 || nd.size() != 4 || new_v.dimensions().size() != 4 || kd.size() != 4 || vd.size() != 4 ||
      ld.size() != 1) {
    return ffi::Error::InvalidArgument(
        "cpu cached attention: q [B, T, H, Dh], new k and v [B, T, K, Dh], k [B, K, Dh, S], v [B, K, S, Dh], "
        "lengths [B]");
  }
  const int64_t B = qd[0], T = qd[1], H = qd[2], Dh = qd[3], K = kd[1], S = kd[3];
  if (kd[0] != B || kd[2] != Dh || vd[0] != B || vd[1] != K || vd[2] != S || vd[3] != Dh || ld[0] != B ||
      nd[0] != B || nd[1] != T || nd[2] != K || nd[3] != Dh || K == 0 || H % K != 0) {
    return ffi::Error::InvalidArgument(
        "cpu cached attention: k must be [B, K, Dh, S], v [B, K, S, Dh], new k and v [B, T, K, Dh] with K "
        "dividing H, lengths [B]");
  }
  const int64_t G = H / K;
  const float *qp = q.typed_data(), *nkp = new_k.typed_data(), *nvp = new_v.typed_data();
  // The results alias the cache arguments (input_output_aliases): the same buffers, read and written.
  float *kp = k->typed_data(), *vp = v->typed_data();
  const int32_t* lp = lengths.typed_data();
  float* op = out->typed_data();
  parallel_for(pool, B * K, [&](int64_t item) {
    const int64_t b = item / K, kvh = item % K;
    float* kc = kp + (b * K + kvh) * Dh * S;
    float* vc = vp + (b * K + kvh) * S * Dh;
    for (int64_t t = 0; t < T; ++t) {  // this item's own slots: no other item touches them
      const int64_t slot = static_cast<int64_t>(lp[b]) + t;
      if (slot < 0 || slot >= S) continue;
      const float* nk = nkp + ((b * T + t) * K + kvh) * Dh;
      const float* nv = nvp + ((b * T + t) * K + kvh) * Dh;
      for (int64_t d = 0; d < Dh; ++d) kc[d * S + slot] = nk[d];
      std::copy(nv, nv + Dh, vc + slot * Dh);
    }
    prefetch_start(kc, S, vc, Dh, std::clamp<int64_t>(static_cast<int64_t>(lp[b]) + T, 1, S));
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < S) scratch.resize(S);
    float* p = scratch.data();
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = std::clamp<int64_t>(static_cast<int64_t>(lp[b]) + t + 1, 1, S);
      for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) {
        const int64_t at = ((b * T + t) * H + h) * Dh;
        scores(qp + at, kc, S, Dh, n, p);
        softmax_row(p, n, scale);
        weighted_values(p, vc, Dh, n, op + at);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LlmCachedAttention, CachedAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q [B, T, H, Dh]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // new k [B, T, K, Dh]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // new v [B, T, K, Dh]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k [B, K, Dh, S]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v [B, K, S, Dh]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths [B]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out [B, T, H, Dh]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // k, written (aliases the k argument)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // v, written (aliases the v argument)
                                  .Attr<float>("scale"));
