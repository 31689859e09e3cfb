#include "kernels/cuda/runtime.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "kernels/cuda/check.h"

namespace facet::cuda {

int DeviceCount() {
  int n = 0;
  // No driver, no device, or a driver older than the runtime: all mean "no
  // GPU here". Clear the sticky error so later calls start clean.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string DeviceDescription(int device) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
           ")";
  }
  if (device >= n) return "no CUDA device " + std::to_string(device) + " (" + std::to_string(n) + " present)";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "cudaGetDeviceProperties failed";
  return std::string(p.name) + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 20) + " MiB, " + std::to_string(p.multiProcessorCount) +
         " SMs";
}

// --- DeviceBuffer ---

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  FACET_CUDA_RETURN(cudaMalloc(&b.data_, bytes));
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    owner_ = std::exchange(o.owner_, nullptr);
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (data_ != nullptr) {
    if (owner_ != nullptr) {
      owner_->Return(data_, bytes_);
    } else {
      FACET_CUDA_CHECK(cudaFree(data_));
    }
  }
  data_ = nullptr;
  bytes_ = 0;
  owner_ = nullptr;
}

// --- PinnedBuffer ---

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes) {
  PinnedBuffer b;
  if (bytes == 0) return b;
  FACET_CUDA_RETURN(cudaMallocHost(&b.data_, bytes));
  b.bytes_ = bytes;
  return b;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void PinnedBuffer::Reset() {
  if (data_ != nullptr) FACET_CUDA_CHECK(cudaFreeHost(data_));
  data_ = nullptr;
  bytes_ = 0;
}

// --- Stream ---

absl::StatusOr<Stream> Stream::Create() {
  Stream s;
  FACET_CUDA_RETURN(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
  return s;
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    Reset();
    stream_ = std::exchange(o.stream_, nullptr);
  }
  return *this;
}

absl::Status Stream::Synchronize() const {
  FACET_CUDA_RETURN(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

void Stream::Reset() {
  if (stream_ != nullptr) FACET_CUDA_CHECK(cudaStreamDestroy(stream_));
  stream_ = nullptr;
}

// --- Event ---

absl::StatusOr<Event> Event::Create(bool timing) {
  Event e;
  FACET_CUDA_RETURN(
      cudaEventCreateWithFlags(&e.event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    Reset();
    event_ = std::exchange(o.event_, nullptr);
  }
  return *this;
}

absl::Status Event::Record(cudaStream_t stream) const {
  FACET_CUDA_RETURN(cudaEventRecord(event_, stream));
  return absl::OkStatus();
}

absl::Status Event::Synchronize() const {
  FACET_CUDA_RETURN(cudaEventSynchronize(event_));
  return absl::OkStatus();
}

absl::StatusOr<float> Event::ElapsedMsSince(const Event& start) const {
  float ms = 0;
  FACET_CUDA_RETURN(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

void Event::Reset() {
  if (event_ != nullptr) FACET_CUDA_CHECK(cudaEventDestroy(event_));
  event_ = nullptr;
}

// --- CachingAllocator ---

size_t CachingAllocator::RoundSize(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
  if (bytes == 0) return 0;
  if (bytes < kSmallLimit) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

CachingAllocator::~CachingAllocator() {
  // Buffers still out keep a pointer to us: a bug in the owner's lifetimes.
  if (in_use_bytes_ != 0) {
    std::fprintf(stderr, "CachingAllocator destroyed with %zu bytes still in use\n", in_use_bytes_);
    std::abort();
  }
  for (auto& [size, p] : free_) FACET_CUDA_CHECK(cudaFree(p));
}

absl::StatusOr<DeviceBuffer> CachingAllocator::Allocate(size_t bytes) {
  DeviceBuffer b;
  const size_t rounded = RoundSize(bytes);
  if (rounded == 0) return b;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find(rounded);
  if (it != free_.end()) {
    b.data_ = it->second;
    free_.erase(it);
    cached_bytes_ -= rounded;
  } else {
    cudaError_t e = cudaMalloc(&b.data_, rounded);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      for (auto& [size, p] : free_) FACET_CUDA_RETURN(cudaFree(p));
      free_.clear();
      cached_bytes_ = 0;
      e = cudaMalloc(&b.data_, rounded);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      b.data_ = nullptr;
      return CudaStatus(e, "cudaMalloc", __FILE__, __LINE__);
    }
    ++device_mallocs_;
  }
  b.bytes_ = rounded;
  b.owner_ = this;
  in_use_bytes_ += rounded;
  return b;
}

void CachingAllocator::Return(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.emplace(bytes, p);
  cached_bytes_ += bytes;
  in_use_bytes_ -= bytes;
}

absl::Status CachingAllocator::ReleaseCache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, p] : free_) FACET_CUDA_RETURN(cudaFree(p));
  free_.clear();
  cached_bytes_ = 0;
  return absl::OkStatus();
}

size_t CachingAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_bytes_;
}
size_t CachingAllocator::in_use_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_bytes_;
}
int64_t CachingAllocator::device_mallocs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return device_mallocs_;
}

absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  FACET_CUDA_RETURN(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  FACET_CUDA_RETURN(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status CopyToHost(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  FACET_CUDA_RETURN(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  FACET_CUDA_RETURN(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace facet::cuda
