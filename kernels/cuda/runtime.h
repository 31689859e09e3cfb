// CUDA runtime pieces: RAII, move-only handles for device memory, streams,
// events and pinned host memory, plus a caching device allocator
// (STYLE.md §12). Every failure that a caller can act on (out of memory, no
// device) comes back as a Status; destructors abort on a failing CUDA call,
// because a failing free or destroy means the context is already broken.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "core/status.h"

namespace facet::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never an
// error: a build machine without a GPU is a normal place to be).
int DeviceCount();
// One line naming the device, its compute capability and memory, or why
// there is none.
std::string DeviceDescription(int device = 0);

class CachingAllocator;

// Device memory: owns `bytes` at `data()`. From cudaMalloc, or borrowed from
// a CachingAllocator, which takes it back on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  void Reset();

 private:
  friend class CachingAllocator;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  CachingAllocator* owner_ = nullptr;  // null: cudaFree on Reset
};

// Page-locked host memory for fast, asynchronous host<->device copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  static absl::StatusOr<PinnedBuffer> Allocate(size_t bytes);
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  void Reset();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() = default;
  // A non-blocking stream (does not synchronise with the legacy stream 0).
  static absl::StatusOr<Stream> Create();
  ~Stream() { Reset(); }
  Stream(Stream&& o) noexcept { *this = std::move(o); }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  absl::Status Synchronize() const;
  void Reset();

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() = default;
  // timing = false gives a lighter event for ordering only.
  static absl::StatusOr<Event> Create(bool timing = true);
  ~Event() { Reset(); }
  Event(Event&& o) noexcept { *this = std::move(o); }
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  absl::Status Record(cudaStream_t stream) const;
  absl::Status Synchronize() const;
  // Milliseconds from `start` to this event; both must have completed.
  absl::StatusOr<float> ElapsedMsSince(const Event& start) const;
  void Reset();

 private:
  cudaEvent_t event_ = nullptr;
};

// Caches freed device blocks by rounded size so a step's many short-lived
// buffers cost no cudaMalloc/cudaFree (each of which synchronises the
// device). Sizes round up to 512 B below 1 MiB and to 2 MiB blocks above;
// a free block is reused for a request of the same rounded size only, which
// keeps the bookkeeping obvious. On out-of-memory the cache is released and
// the allocation retried once. Thread-safe. Blocks are returned to the cache
// without stream ordering: the caller must not free a buffer that a stream
// still uses (synchronise first), as with cudaFree.
class CachingAllocator {
 public:
  CachingAllocator() = default;
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  // Returns every cached (free) block to the driver.
  absl::Status ReleaseCache();

  static size_t RoundSize(size_t bytes);
  size_t cached_bytes() const;
  size_t in_use_bytes() const;
  int64_t device_mallocs() const;  // cudaMalloc calls so far (cache misses)

 private:
  friend class DeviceBuffer;
  void Return(void* p, size_t bytes);

  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // rounded size -> block
  size_t cached_bytes_ = 0;
  size_t in_use_bytes_ = 0;
  int64_t device_mallocs_ = 0;
};

// Copies host -> device / device -> host on `stream` and waits for it.
absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream);
absl::Status CopyToHost(void* dst, const void* src, size_t bytes, cudaStream_t stream);

}  // namespace facet::cuda
