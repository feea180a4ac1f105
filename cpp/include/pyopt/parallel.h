// Work splitting for multi-tensor steps, and a small thread pool for front ends that have
// none of their own (the NumPy bindings; TensorFlow passes its intra-op pool instead).
//
// Each tensor is cut at its own multiples of kChunkElems elements (so pieces start on
// cache-line boundaries and a tensor is split the same way whatever else is in the step),
// and consecutive pieces are packed into chunks of at most kChunkElems elements (so many
// small tensors share a chunk). The cut does not depend on the thread count or on the
// other tensors, so partial sums (clip norms) are reduced in the same order however the
// step is run: results are bit-for-bit reproducible, and a tensor updated in a multi call
// gets exactly the result of updating it alone.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pyopt {

constexpr std::int64_t kChunkElems = 32768;  // a unit of work; a step this small runs on the calling thread

// Runs fn(begin, end) over sub-ranges covering [0, n) (possibly in parallel) and returns
// when all are done.
using Executor = std::function<void(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn)>;

inline void run_inline(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (n > 0) fn(0, n);
}

// A contiguous piece [begin, end) of one tensor.
struct Slice {
  std::int64_t tensor, begin, end;
};

struct ChunkPlan {
  std::vector<Slice> slices;              // ordered by tensor, then begin
  std::vector<std::int64_t> chunk_start;  // slices of chunk k: [chunk_start[k], chunk_start[k+1])
  std::int64_t total = 0;
  std::int64_t num_chunks() const { return std::int64_t(chunk_start.size()) - 1; }
};

inline ChunkPlan plan_chunks(const std::vector<std::int64_t>& sizes, std::int64_t chunk = kChunkElems) {
  ChunkPlan plan;
  std::size_t pieces = 0;
  for (std::int64_t size : sizes) pieces += std::size_t((size + chunk - 1) / chunk);
  plan.slices.reserve(pieces);
  plan.chunk_start.reserve(pieces + 2);
  plan.chunk_start.push_back(0);
  std::int64_t filled = 0;  // elements in the chunk being packed
  for (std::int64_t t = 0; t < std::int64_t(sizes.size()); ++t) {
    const std::int64_t size = sizes[size_t(t)];
    for (std::int64_t b = 0; b < size; b += chunk) {
      const std::int64_t e = std::min(size, b + chunk);
      if (filled > 0 && filled + (e - b) > chunk) {
        plan.chunk_start.push_back(std::int64_t(plan.slices.size()));
        filled = 0;
      }
      plan.slices.push_back({t, b, e});
      filled += e - b;
    }
    plan.total += size;
  }
  plan.chunk_start.push_back(std::int64_t(plan.slices.size()));
  if (plan.chunk_start.size() > 2 && plan.chunk_start[plan.chunk_start.size() - 2] == plan.chunk_start.back())
    plan.chunk_start.pop_back();  // no empty trailing chunk
  return plan;
}

// Calls fn(slice_index) for every slice, chunks spread over the executor. `reverse` hands
// out the last chunks first: right after a pass over the same data in forward order (the
// clip-norm pass), the data it touched last is still in cache.
template <class F>
void for_each_slice(const ChunkPlan& plan, const Executor& exec, F&& fn, bool reverse = false) {
  const std::int64_t chunks = plan.num_chunks();
  auto body = [&](std::int64_t k0, std::int64_t k1) {
    for (std::int64_t k = k0; k < k1; ++k) {
      const std::int64_t c = reverse ? chunks - 1 - k : k;
      for (std::int64_t s = plan.chunk_start[size_t(c)]; s < plan.chunk_start[size_t(c + 1)]; ++s) fn(s);
    }
  };
  if (chunks <= 1) {
    body(0, chunks);
    return;
  }
  exec(chunks, body);
}

// The indices [0, n) of one parallel loop, handed out one at a time to every thread that
// calls drain(). Threads take chunks as they get CPU time, so a thread descheduled on a
// busy machine delays one chunk, not a fixed share of the loop. Held in a shared_ptr by
// every helper: a helper that starts after the last index was taken returns without
// touching `fn`, so the caller never waits for helpers that have not started (no deadlock
// when the pool is busy, or the caller is itself one of its threads).
class SharedLoop {
 public:
  using Fn = std::function<void(std::int64_t, std::int64_t)>;
  SharedLoop(std::int64_t n, const Fn& fn) : n_(n), fn_(&fn) {}

  // Runs indices until none are left (any thread, any number of times).
  void drain() {
    std::int64_t count = 0;
    for (std::int64_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) {
      (*fn_)(i, i + 1);
      ++count;
    }
    if (count == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    done_ += count;
    if (done_ == n_) finished_.notify_all();
  }

  // The caller's part: drains, then waits until every index taken elsewhere has finished.
  void run_and_wait() {
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [&] { return done_ == n_; });
  }

 private:
  const std::int64_t n_;
  const Fn* fn_;  // dereferenced only for an index < n_, i.e. before run_and_wait() returns
  std::atomic<std::int64_t> next_{0};
  std::mutex mutex_;
  std::condition_variable finished_;
  std::int64_t done_ = 0;
};

// A fixed set of worker threads for a SharedLoop at a time; the calling thread works too.
// If the pool is already busy (another Python thread is mid-step), the caller runs its work
// inline instead of waiting.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> busy(busy_);
    stop();
    quit_ = false;
    for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void parallel_for(std::int64_t n, const SharedLoop::Fn& fn) {
    if (n <= 0) return;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || workers_.empty() || n == 1) {
      fn(0, n);
      return;
    }
    auto loop = std::make_shared<SharedLoop>(n, fn);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = loop;
      ++generation_;
    }
    wake_.notify_all();
    loop->run_and_wait();
    std::lock_guard<std::mutex> lock(mutex_);
    job_.reset();
  }

 private:
  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<SharedLoop> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        job = job_;
      }
      if (job) job->drain();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // one job at a time
  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_;
  std::shared_ptr<SharedLoop> job_;
  std::uint64_t generation_ = 0;
  bool quit_ = false;
};

}  // namespace pyopt
