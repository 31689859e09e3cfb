// SIMD targets the CPU kernels are compiled for, and per-thread scratch.
// Include before any Highway header.
//
// Highway would otherwise build every x86 target (SSSE3, SSE4, AVX2, AVX-512)
// plus the emulated baseline; our CI has two cores, so we keep AVX-512 (the
// servers we run on), AVX2 (laptops, AMD before Zen 4) and the portable
// fallback that keeps any other x86-64 correct.
#pragma once

#include <cstddef>
#include <new>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif

namespace facet::cpu::internal {

// A growable 64-byte-aligned float buffer, meant to live in a thread_local so
// each pool thread keeps its packing tiles across calls instead of allocating.
class ScratchFloats {
 public:
  ScratchFloats() = default;
  ScratchFloats(const ScratchFloats&) = delete;
  ScratchFloats& operator=(const ScratchFloats&) = delete;
  ~ScratchFloats() { Free(); }

  float* Get(size_t n) {
    if (n > size_) {
      Free();
      data_ = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t{64}));
      size_ = n;
    }
    return data_;
  }

 private:
  void Free() {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t{64});
    data_ = nullptr;
    size_ = 0;
  }
  float* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace facet::cpu::internal
