// A fixed pool of worker threads for data-parallel loops. The calling thread
// takes part in every loop, so ThreadPool(1) runs everything inline.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace facet {

class ThreadPool {
 public:
  // num_threads counts the caller; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return int(workers_.size()) + 1; }

  // Splits [0, n) into contiguous chunks of at least `grain` items and calls
  // fn(begin, end) on them from all threads. Returns when every chunk is done.
  // Not reentrant: fn must not call ParallelFor on the same pool.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Calls fn(thread_index) once on each of num_threads() threads.
  void RunOnAll(const std::function<void(int)>& fn);

 private:
  void WorkerLoop(int index);
  void RunChunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // A job is published by storing job_ and then bumping generation_ (under
  // mu_, so a worker about to sleep cannot miss it). Workers and the caller
  // spin on the atomics for a short while before sleeping: decode issues a
  // few hundred small loops per token, and a futex wake-up each time costs
  // more than the loop.
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace facet
