// The backend registry and the CPU backend behind kernels/backend.h.
#include "kernels/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kernels/cpu/ops.h"

namespace facet {
namespace {

TEST(BackendRegistry, CpuIsAlwaysThereAndUnknownNamesAreNotFound) {
  const std::vector<std::string> names = RegisteredBackends();
  EXPECT_NE(std::find(names.begin(), names.end(), "cpu"), names.end());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  auto none = CreateBackend("no-such-backend");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("cpu"), std::string::npos) << none.status();
}

TEST(BackendRegistry, CudaWhenBuiltIsEitherUsableOrUnavailable) {
  const std::vector<std::string> names = RegisteredBackends();
  if (std::find(names.begin(), names.end(), "cuda") == names.end()) {
    EXPECT_EQ(CreateBackend("cuda").status().code(), absl::StatusCode::kNotFound);
    return;
  }
  auto b = CreateBackend("cuda");
  EXPECT_TRUE(b.ok() || b.status().code() == absl::StatusCode::kUnavailable) << b.status();
}

TEST(CpuBackend, OpsMatchTheCpuKernels) {
  auto b = CreateBackend("cpu");
  ASSERT_TRUE(b.ok()) << b.status();
  Backend& be = **b;
  EXPECT_EQ(be.activation_dtype(), DType::kF32);
  const int64_t rows = 2, dim = 64;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-2, 2);
  std::vector<float> x(rows * dim), w(dim), want(rows * dim), got(rows * dim);
  for (float& v : x) v = d(rng);
  for (float& v : w) v = d(rng);
  cpu::RmsNorm(x.data(), w.data(), want.data(), rows, dim, 1e-6f, true);
  auto dx = be.Allocate(x.size() * 4), dy = be.Allocate(x.size() * 4);
  ASSERT_TRUE(dx.ok() && dy.ok());
  ASSERT_TRUE(be.CopyIn(*dx, x.data(), x.size() * 4).ok());
  ASSERT_TRUE(be.RmsNorm(*dx, w.data(), *dy, rows, dim, 1e-6f, true).ok());
  ASSERT_TRUE(be.CopyOut(got.data(), *dy, got.size() * 4).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(be.RmsNorm(*dx, w.data(), *dy, 0, dim, 1e-6f, true).code(),
            absl::StatusCode::kInvalidArgument);
  // A bad token id is INVALID_ARGUMENT through the interface, not a crash.
  const WeightRef table{x.data(), WeightFormat::kF32, rows, dim};
  const int32_t ids[2] = {1, 2};
  EXPECT_EQ(be.Embed(table, ids, 2, 1.0f, got.data()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(be.Embed(table, ids, 1, 2.0f, got.data()).ok());
  EXPECT_EQ(got[0], x[dim] * 2.0f);
  be.Free(*dx);
  be.Free(*dy);
}

}  // namespace
}  // namespace facet
