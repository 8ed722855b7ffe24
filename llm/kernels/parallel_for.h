// parallel_for over XLA's intra-op thread pool, shared by the CPU kernels of this folder.
#ifndef LLM_KERNELS_PARALLEL_FOR_H_
#define LLM_KERNELS_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace llm_kernels {

// Runs fn(0..n-1) on the calling thread and up to num_threads - 1 pool tasks. The caller waits
// only for the items, never for a task to start, so it cannot deadlock on a busy pool; tasks
// that start late find no items left and touch nothing but the shared counters.
template <typename Fn>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t n, const Fn& fn) {
  struct Counters {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, n, &fn] {
    for (int64_t i; (i = counters->next.fetch_add(1)) < n;) {
      fn(i);
      counters->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t tasks = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < tasks; ++t) pool.Schedule([work] { work(); });
  work();
  while (counters->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace llm_kernels

#endif  // LLM_KERNELS_PARALLEL_FOR_H_
