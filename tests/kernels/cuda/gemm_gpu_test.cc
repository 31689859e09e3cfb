// cuBLASLt bf16 GEMMs and the FP8 weight paths against ref::MatMul.
#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/twins.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace facet::cuda {
namespace {

using namespace facet::cuda::testing;

// Σ|x·w| per output, for the fp32-accumulation bound.
std::vector<float> SumAbs(const std::vector<float>& x, int64_t M, const std::vector<float>& w,
                          int64_t N, int64_t K) {
  std::vector<float> s(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double a = 0;
      for (int64_t k = 0; k < K; ++k) a += std::fabs(double(x[m * K + k]) * w[n * K + k]);
      s[m * N + n] = float(a);
    }
  return s;
}

// |got - want| <= K·u·Σ|x·w| (fp32 accumulation, any order; cuBLASLt may
// split K) + the bf16 unit roundoff when the output is bf16.
void ExpectGemmNear(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<float>& sum_abs, int64_t K, bool bf16_out, const char* what) {
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = DotTolerance(K, sum_abs[i]) + (bf16_out ? kBf16Eps * std::fabs(want[i]) : 0) + 1e-30;
    const double ratio = std::fabs(double(got[i]) - want[i]) / tol;
    if (!(ratio <= 1)) ++bad;
    if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": worst at " << worst << " got " << got[worst] << " want "
                     << want[worst] << " (" << worst_ratio << "× tolerance)";
}

TEST(CudaGemm, ArgumentErrors) {
  // No device needed: Gemm::Fp8WorkspaceBytes and the small-M argument checks run on the host.
  EXPECT_EQ(Gemm::Fp8WorkspaceBytes(16, 4096, 4096), 0u);
  EXPECT_EQ(Gemm::Fp8WorkspaceBytes(17, 64, 32), sizeof(bf16) * 64 * 32);
  uint8_t w = 0;
  float s = 1;
  bf16 x{};
  float y = 0;
  EXPECT_EQ(Fp8MatMulSmallM(&x, 17, &w, 1, 16, &s, Fp8Scaling::kPerChannel, &y, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fp8MatMulSmallM(&x, 1, &w, 1, 24, &s, Fp8Scaling::kPerChannel, &y, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fp8MatMulSmallM(&x, 1, &w, 1, 16, &s, Fp8Scaling::kPerChannel, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

class Bf16GemmTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(Bf16GemmTest, MatchesReference) {
  FACET_REQUIRE_GPU();
  const auto [M, N, K] = GetParam();
  std::vector<float> x = Random(M * K, 20), w = Random(N * K, 21, 0.1f);
  auto w_bits = ToBf16Bits(w);
  std::vector<float> want(M * N);
  ASSERT_TRUE(cpu::ref::MatMul(x.data(), M, {w_bits.data(), WeightFormat::kBF16, N, K}, want.data(), nullptr).ok());
  const std::vector<float> sum_abs = SumAbs(x, M, w, N, K);
  auto gemm = Gemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  DeviceBuffer d_x = Upload(ToBf16Bits(x)), d_w = Upload(w_bits);
  DeviceBuffer d_y32 = Zeros(sizeof(float) * M * N), d_y16 = Zeros(sizeof(bf16) * M * N);
  FACET_ASSERT_OK((*gemm)->MatMulBf16(d_x.as<bf16>(), M, d_w.as<bf16>(), N, K, d_y32.as<float>(), nullptr, nullptr));
  ExpectGemmNear(Download<float>(d_y32, M * N), want, sum_abs, K, false, "bf16 -> f32");
  FACET_ASSERT_OK((*gemm)->MatMulBf16(d_x.as<bf16>(), M, d_w.as<bf16>(), N, K, nullptr, d_y16.as<bf16>(), nullptr));
  ExpectGemmNear(FromBf16Bits(Download<uint16_t>(d_y16, M * N)), want, sum_abs, K, true, "bf16 -> bf16");
  // One plan per (shape, output type), reused on the second call.
  EXPECT_EQ((*gemm)->cached_plans(), 2u);
  FACET_ASSERT_OK((*gemm)->MatMulBf16(d_x.as<bf16>(), M, d_w.as<bf16>(), N, K, d_y32.as<float>(), nullptr, nullptr));
  EXPECT_EQ((*gemm)->cached_plans(), 2u);
  EXPECT_EQ((*gemm)->MatMulBf16(d_x.as<bf16>(), M, d_w.as<bf16>(), N, K + 1, d_y32.as<float>(), nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // A slice 16 bytes into a buffer (as a row range of a larger activation)
  // gets a plan of its own and the same result.
  DeviceBuffer d_x2 = Zeros(sizeof(bf16) * (M * K + 8));
  ASSERT_EQ(cudaMemcpy(d_x2.as<bf16>() + 8, d_x.data(), sizeof(bf16) * M * K, cudaMemcpyDeviceToDevice),
            cudaSuccess);
  FACET_ASSERT_OK((*gemm)->MatMulBf16(d_x2.as<bf16>() + 8, M, d_w.as<bf16>(), N, K, d_y32.as<float>(), nullptr, nullptr));
  EXPECT_EQ((*gemm)->cached_plans(), 3u);
  ExpectGemmNear(Download<float>(d_y32, M * N), want, sum_abs, K, false, "16-byte aligned x");
  EXPECT_EQ((*gemm)->MatMulBf16(d_x2.as<bf16>() + 1, M, d_w.as<bf16>(), N, K, d_y32.as<float>(), nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Decode (M = batch) and prefill shapes; the last is Gemma 4 26B's
// attention output (H = 2816).
INSTANTIATE_TEST_SUITE_P(Shapes, Bf16GemmTest,
                         ::testing::Values(std::make_tuple(int64_t(1), int64_t(256), int64_t(512)),
                                           std::make_tuple(int64_t(16), int64_t(1152), int64_t(640)),
                                           std::make_tuple(int64_t(64), int64_t(512), int64_t(2816)),
                                           std::make_tuple(int64_t(300), int64_t(2816), int64_t(512))));

class Fp8GemmTest : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {};

TEST_P(Fp8GemmTest, MatchesDequantizedReference) {
  FACET_REQUIRE_GPU();
  const auto [M, block128] = GetParam();
  const int64_t N = 320, K = 384;  // not multiples of 128 in N: partial scale blocks
  std::vector<uint8_t> w(N * K);
  std::vector<float> wf = Random(N * K, 30, 300.0f, false);
  for (size_t i = 0; i < w.size(); ++i) w[i] = F32ToFp8E4M3(wf[i]);
  const int64_t nb = (N + 127) / 128, kb = (K + 127) / 128;
  std::vector<float> scales = Random(block128 ? nb * kb : N, 31, 1e-3f, false);
  for (float& s : scales) s = std::fabs(s) + 1e-4f;
  const std::vector<float> wd = twin::DequantizeFp8(w.data(), N, K, scales.data(), block128);
  // The large-M path rounds the dequantized weight to bf16 before the GEMM.
  std::vector<float> wd_used = wd;
  if (M > kFp8SmallM) for (float& v : wd_used) v = RoundBf16(v);
  std::vector<float> x = Random(M * K, 32);
  std::vector<float> want(M * N);
  ASSERT_TRUE(cpu::ref::MatMul(x.data(), M, {wd_used.data(), WeightFormat::kF32, N, K}, want.data(), nullptr).ok());
  const std::vector<float> sum_abs = SumAbs(x, M, wd, N, K);

  auto gemm = Gemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  DeviceBuffer d_x = Upload(ToBf16Bits(x)), d_w = Upload(w), d_s = Upload(scales);
  DeviceBuffer d_y = Zeros(sizeof(float) * M * N);
  const size_t ws_bytes = Gemm::Fp8WorkspaceBytes(M, N, K);
  DeviceBuffer d_ws = Zeros(ws_bytes + 1);
  const Fp8Scaling scaling = block128 ? Fp8Scaling::kBlock128 : Fp8Scaling::kPerChannel;
  FACET_ASSERT_OK((*gemm)->MatMulFp8(d_x.as<bf16>(), M, d_w.as<uint8_t>(), N, K, d_s.as<float>(), scaling,
                                     d_y.as<float>(), nullptr, d_ws.data(), ws_bytes, nullptr));
  // The dequantization product is one more fp32 rounding per term.
  ExpectGemmNear(Download<float>(d_y, M * N), want, sum_abs, K + 1, false, "fp8");
  if (ws_bytes > 0) {
    EXPECT_EQ((*gemm)->MatMulFp8(d_x.as<bf16>(), M, d_w.as<uint8_t>(), N, K, d_s.as<float>(), scaling,
                                 d_y.as<float>(), nullptr, d_ws.data(), ws_bytes - 1, nullptr).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, Fp8GemmTest,
                         ::testing::Values(std::make_tuple(int64_t(1), false),
                                           std::make_tuple(int64_t(16), true),
                                           std::make_tuple(int64_t(5), true),
                                           std::make_tuple(int64_t(64), false),
                                           std::make_tuple(int64_t(64), true)));

}  // namespace
}  // namespace facet::cuda
