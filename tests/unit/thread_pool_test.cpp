// The pool behind generated code's parallel loops (compiler/support/thread_pool.hpp): every
// chunk runs once, on a worker id under the job's limit that no other chunk running at the
// same time has (abi.h), however the shares and the stealing fall, also with callers of
// their own on several threads at once.
#include "compiler/support/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace slope {
namespace {

struct Count {
  std::unique_ptr<std::atomic<int>[]> runs;
  std::atomic<int> badWorker{0};
  std::atomic<int> busy[kMaxThreads] = {}; // a worker id in use by a running chunk
  int32_t limit = 0;
  explicit Count(int64_t n) : runs(new std::atomic<int>[static_cast<size_t>(n)]) {
    for (int64_t k = 0; k < n; ++k)
      runs[k] = 0;
  }
};

void countChunk(void* ctx, int64_t k, int32_t worker) {
  auto* c = static_cast<Count*>(ctx);
  c->runs[k].fetch_add(1);
  if (worker < 0 || worker >= c->limit) {
    c->badWorker.fetch_add(1);
    return;
  }
  if (c->busy[worker].exchange(1) != 0) c->badWorker.fetch_add(1); // (two chunks, one id)
  if (k % 3 == 0) std::this_thread::yield(); // (uneven chunks: the others' shares get taken)
  c->busy[worker].store(0);
}

/// Runs n chunks on `threads` threads, asking for `maxWorkers` workers; every chunk once.
void runOnce(int threads, int64_t n, int32_t maxWorkers, const std::string& what) {
  const slope_parallel* p = threadPool(threads);
  Count c(n);
  c.limit = std::min<int32_t>(maxWorkers, kMaxThreads);
  p->parallel_for(p->pool, n, maxWorkers, &countChunk, &c);
  for (int64_t k = 0; k < n; ++k)
    ASSERT_EQ(c.runs[k].load(), 1) << what << ": chunk " << k;
  EXPECT_EQ(c.badWorker.load(), 0) << what;
}

TEST(ThreadPool, EveryChunkOnceOnAWorkerUnderTheLimit) {
  for (int threads : {2, 3, 16})
    for (int64_t n : {1, 2, 3, 7, 16, 17, 64, 1000})
      for (int32_t workers : {1, 2, 3, threads, 64, 1 << 20}) {
        std::string what = std::to_string(threads) + " threads, " + std::to_string(n) +
                           " chunks, " + std::to_string(workers) + " workers";
        runOnce(threads, n, workers, what);
      }
}

// Callers with threads of their own: four at once, each with jobs of its own, share the pool.
TEST(ThreadPool, CallersOnSeveralThreadsAtOnce) {
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&, t] {
      const slope_parallel* p = threadPool(4);
      for (int round = 0; round < 200; ++round) {
        const int64_t n = 1 + (round * 7 + t) % 50;
        Count c(n);
        c.limit = 4;
        p->parallel_for(p->pool, n, 4, &countChunk, &c);
        for (int64_t k = 0; k < n; ++k)
          if (c.runs[k].load() != 1) failures.fetch_add(1);
        failures.fetch_add(c.badWorker.load());
      }
    });
  for (std::thread& c : callers)
    c.join();
  EXPECT_EQ(failures.load(), 0);
}

} // namespace
} // namespace slope
