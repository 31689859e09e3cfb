// The device sampler must pick the same token as the CPU Sampler for the same
// logits, parameters, seed and step. The reference here is its twin,
// twin::Sample, which twins_test checks against facet::Sampler in the CPU
// suite (worker/ is not linked into the GPU binary).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/cuda/ops.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "kernels/cuda/twins.h"

namespace facet::cuda {
namespace {

using namespace facet::cuda::testing;

TEST(CudaSample, ArgumentErrors) {
  EXPECT_EQ(Sample(nullptr, 1, 10, nullptr, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  float l = 0;
  SampleParams p;
  int32_t id = 0;
  EXPECT_EQ(Sample(&l, 0, 10, &p, &id, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sample(&l, 1, int64_t(1) << 31, &p, &id, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

struct Case {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
};

TEST(CudaSample, SameTokenAsCpuSampler) {
  FACET_REQUIRE_GPU();
  const int64_t V = 262144;
  const std::vector<Case> cases = {
      {0.0f, 0, 1.0f, 0.0f},   {1.0f, 0, 1.0f, 0.0f},  {0.7f, 40, 1.0f, 0.0f},
      {1.0f, 0, 0.9f, 0.0f},   {0.8f, 64, 0.95f, 0.05f}, {1.3f, 1, 1.0f, 0.0f},
      {0.5f, 0, 0.5f, 0.0f},   {1.0f, 0, 1.0f, 0.1f},
  };
  const int64_t seeds = 6;
  const int64_t B = int64_t(cases.size()) * seeds;
  std::vector<float> logits(B * V);
  std::mt19937 rng(40);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& v : logits) v = normal(rng);
  // A few rows with ties at the top and -inf entries, as masked vocabularies have.
  for (int64_t b = 0; b < B; b += 5) {
    logits[b * V + 7] = logits[b * V + 9] = 20.0f;
    logits[b * V + 11] = -INFINITY;
  }
  std::vector<SampleParams> params(B);
  std::vector<int32_t> want(B);
  for (int64_t b = 0; b < B; ++b) {
    const Case& c = cases[b / seeds];
    SampleParams& p = params[b];
    p.temperature = c.temperature, p.top_k = c.top_k, p.top_p = c.top_p, p.min_p = c.min_p;
    p.seed = 1000 + uint64_t(b), p.step = b % 3;
    twin::SampleArgs a;
    a.temperature = c.temperature, a.top_k = c.top_k, a.top_p = c.top_p, a.min_p = c.min_p;
    a.seed = p.seed, a.step = p.step;
    want[b] = twin::Sample(logits.data() + b * V, V, a);
  }
  DeviceBuffer d_logits = Upload(logits), d_params = Upload(params);
  DeviceBuffer d_ids = Zeros(sizeof(int32_t) * B);
  FACET_ASSERT_OK(Sample(d_logits.as<float>(), B, V, d_params.as<SampleParams>(), d_ids.as<int32_t>(), nullptr));
  const std::vector<int32_t> got = Download<int32_t>(d_ids, B);
  for (int64_t b = 0; b < B; ++b) {
    const Case& c = cases[b / seeds];
    EXPECT_EQ(got[b], want[b]) << "row " << b << ": T " << c.temperature << ", top_k " << c.top_k
                               << ", top_p " << c.top_p << ", min_p " << c.min_p;
  }
  // The draws are not all the argmax (the test would not see a broken noise otherwise).
  int differ = 0;
  for (int64_t b = seeds; b < B; ++b) {
    const float* row = logits.data() + b * V;
    differ += got[b] != int32_t(std::max_element(row, row + V) - row);
  }
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace facet::cuda
