// A small pool: a list of open jobs under one mutex, workers that join a job while it has
// chunks left and worker slots free, and for each worker a share of the job's chunks (a range)
// handed out by an atomic counter, which workers out of chunks of their own draw on too. Why
// not oneTBB or OpenMP: generated code must not depend on either (abi.h: the caller brings the
// threads), the chunks are coarse (whole rows of data points), so a pool's cost is its wake-up
// latency, not its scheduling, and OpenMP's fork-join model multiplies threads when a caller
// with threads of its own calls in (each caller thread would start a team); here the caller
// works on its own job and the pool's threads help whichever caller has chunks left.

#include "compiler/support/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace slope {
namespace {

/// Chunks [next, end) of one worker's share of a job. The owner and any worker that ran out
/// of chunks of its own take from `next` alike.
struct alignas(64) Share {
  std::atomic<int64_t> next{0};
  int64_t end = 0;
};

struct Job {
  int32_t maxWorkers;
  slope_task task;
  void* ctx;
  Share shares[kMaxThreads]; // worker w's share of the chunks, the shares in order
  int32_t joined = 1;        // worker ids handed out (the caller is 0); under the mutex
  int32_t active = 0;        // pool threads inside the job; under the mutex

  bool chunksLeft() const {
    for (int32_t w = 0; w < maxWorkers; ++w)
      if (shares[w].next.load(std::memory_order_relaxed) < shares[w].end) return true;
    return false;
  }
};

/// Runs chunks of j until none is left: worker w's own share first, in order, then what is
/// left of the others'. With a share each (not the next chunk of one counter for all), a
/// thread takes about the same rows of the data in every loop of a call and of the next call
/// (a loop's chunks are cut by the sizes alone, the forward's and the adjoint's alike), so
/// what one loop wrote for them, the next can read from that core's cache. (GMM 10k d10
/// gradient on 2 threads: 13 % faster than with one counter; docs/benchmarks.md.)
void work(Job& j, int32_t worker) {
  for (int32_t s = 0; s < j.maxWorkers; ++s) {
    Share& share = j.shares[(worker + s) % j.maxWorkers];
    for (int64_t k; (k = share.next.fetch_add(1, std::memory_order_relaxed)) < share.end;)
      j.task(j.ctx, k, worker);
  }
}

class Pool {
public:
  /// Grows the pool to at least `threads` threads.
  void ensure(int threads) {
    std::lock_guard<std::mutex> lock(m_);
    while (static_cast<int>(threads_.size()) < threads)
      threads_.emplace_back([this] { loop(); }); // (never joined: see threadPool)
  }

  void parallelFor(int64_t n, int32_t maxWorkers, slope_task task, void* ctx) {
    if (n <= 0) return;
    if (maxWorkers < 2 || n < 2) {
      for (int64_t k = 0; k < n; ++k)
        task(ctx, k, 0);
      return;
    }
    Job job;
    job.maxWorkers = static_cast<int32_t>(std::min<int64_t>({maxWorkers, kMaxThreads, n}));
    job.task = task;
    job.ctx = ctx;
    // Shares of n / W chunks, the first n % W of them one more.
    const int64_t each = n / job.maxWorkers, more = n % job.maxWorkers;
    for (int64_t w = 0, at = 0; w < job.maxWorkers; ++w) {
      job.shares[w].next.store(at, std::memory_order_relaxed);
      at += each + (w < more ? 1 : 0);
      job.shares[w].end = at;
    }
    std::list<Job*>::iterator at;
    {
      std::lock_guard<std::mutex> lock(m_);
      at = open_.insert(open_.end(), &job);
    }
    wake_.notify_all();
    work(job, 0);
    std::unique_lock<std::mutex> lock(m_);
    if (job.joined < job.maxWorkers) open_.erase(at); // (a full job left the list when it filled)
    job.joined = job.maxWorkers;                      // no one joins from now on
    done_.wait(lock, [&] { return job.active == 0; });
  }

private:
  /// A job with chunks left and a free worker slot (under the mutex), or null.
  Job* joinable() {
    for (Job* j : open_)
      if (j->joined < j->maxWorkers && j->chunksLeft()) return j;
    return nullptr;
  }

  void loop() {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      Job* j = nullptr;
      wake_.wait(lock, [&] { return (j = joinable()) != nullptr; });
      int32_t id = j->joined++;
      ++j->active;
      if (j->joined == j->maxWorkers) open_.remove(j);
      lock.unlock();
      work(*j, id);
      lock.lock();
      if (--j->active == 0) done_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable wake_, done_;
  std::list<Job*> open_;
  std::vector<std::thread> threads_;
};

Pool& pool() {
  // Never destroyed: its threads sleep until the process exits (joining them at exit would
  // race with other static destructors, and a thread left running blocks nothing).
  static Pool* p = new Pool;
  return *p;
}

extern "C" void poolParallelFor(void* p, int64_t n, int32_t maxWorkers, slope_task task,
                                void* ctx) {
  static_cast<Pool*>(p)->parallelFor(n, maxWorkers, task, ctx);
}

} // namespace

const slope_parallel* threadPool(int threads) {
  threads = std::clamp(threads, 1, kMaxThreads);
  static std::mutex m;
  static std::map<int, slope_parallel>* made = new std::map<int, slope_parallel>;
  std::lock_guard<std::mutex> lock(m);
  auto it = made->find(threads);
  if (it != made->end()) return &it->second;
  pool().ensure(threads - 1);
  slope_parallel p{&poolParallelFor, &pool(), threads};
  return &made->emplace(threads, p).first->second;
}

int parseThreads(const std::string& text, const std::string& what) {
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < 1 || v > kMaxThreads)
    throw std::invalid_argument(what + " must be a number of threads from 1 to " +
                                std::to_string(kMaxThreads) + ", not '" + text + "'");
  return static_cast<int>(v);
}

int defaultThreads() {
  if (const char* env = std::getenv("SLOPE_NUM_THREADS"))
    return parseThreads(env, "SLOPE_NUM_THREADS");
  unsigned hw = std::thread::hardware_concurrency();
  return std::clamp(static_cast<int>(hw), 1, kMaxThreads);
}

} // namespace slope
