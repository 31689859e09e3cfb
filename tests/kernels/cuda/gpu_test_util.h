// Helpers for the GPU tests: the skip when no GPU is present, host<->device
// vectors, random inputs, and tolerances derived from the dtypes involved.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace facet::cuda::testing {

// Skips (never passes) a test that needs a GPU, saying why.
#define FACET_REQUIRE_GPU()                                                          \
  do {                                                                               \
    if (::facet::cuda::DeviceCount() == 0) {                                         \
      GTEST_SKIP() << "needs a CUDA GPU: " << ::facet::cuda::DeviceDescription(0);   \
    }                                                                                \
  } while (0)

#define FACET_ASSERT_OK(expr)                      \
  do {                                             \
    const ::absl::Status facet_s_ = (expr);        \
    ASSERT_TRUE(facet_s_.ok()) << facet_s_;        \
  } while (0)

// A device copy of `host`. Aborts the test binary on CUDA failure (the
// tests run only where a GPU is present).
template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  auto b = DeviceBuffer::Allocate(sizeof(T) * host.size());
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(CopyToDevice(b->data(), host.data(), sizeof(T) * host.size(), nullptr).ok());
  return std::move(*b);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& b, size_t n) {
  std::vector<T> host(n);
  EXPECT_TRUE(CopyToHost(host.data(), b.data(), sizeof(T) * n, nullptr).ok());
  return host;
}

inline DeviceBuffer Zeros(size_t bytes) {
  auto b = DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(cudaMemset(b->data(), 0, bytes), cudaSuccess);
  return std::move(*b);
}

// Uniform in [-scale, scale], rounded to bf16 when `bf16_exact` so that the
// CPU twin sees exactly the values the GPU reads.
std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f, bool bf16_exact = true);
std::vector<uint16_t> ToBf16Bits(const std::vector<float>& v);
std::vector<float> FromBf16Bits(const std::vector<uint16_t>& v);

// Expects |got - want| <= abs_tol + rel_tol · |want| elementwise; reports the
// worst element.
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double rel_tol,
                double abs_tol, const char* what);

// Unit roundoffs: the tolerances below are these times a small count of
// roundings, never guessed constants.
// Unit roundoff u (half an ulp at 1): rounding to the type errs by at most
// u·|x|. bf16 keeps 8 significant bits, fp32 24.
inline constexpr double kBf16Eps = 1.0 / 256;       // 2^-8
inline constexpr double kF32Eps = 1.0 / 16777216;  // 2^-24
// A length-n fp32 dot product (any order) errs by at most n·u·Σ|x_i·y_i|.
inline double DotTolerance(int64_t n, double sum_abs) { return double(n) * kF32Eps * sum_abs; }

}  // namespace facet::cuda::testing
