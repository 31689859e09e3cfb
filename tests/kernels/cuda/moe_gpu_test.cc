// MoE router, permutation, grouped GEMM and the whole expert block against
// ref::MoeRoute / twin::MoePermute / ref::MoeExperts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/half.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/twins.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace facet::cuda {
namespace {

using namespace facet::cuda::testing;

TEST(CudaMoe, ArgumentErrors) {
  // Checked on the host before any launch.
  EXPECT_EQ(MoeRoute(nullptr, 1, 64, nullptr, nullptr, 8, nullptr, 9, 1e-6f, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // top_k > E
  EXPECT_EQ(MoeGroupedGemm(nullptr, nullptr, 1, nullptr, 1, 100, 64, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // N % 64
  int32_t ids = 0;
  float w = 1;
  bf16 x{};
  const size_t need = MoeExpertsWorkspaceBytes(4, 64, 64, 8, 2);
  EXPECT_GT(need, 0u);
  absl::Status s = MoeExperts(&x, 4, 64, &ids, &w, 2, &x, &x, 8, 64, &w, &w, need - 1, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("workspace"), std::string::npos) << s;
}

struct MoeShape {
  const char* name;
  int64_t T, H, F, E, k;
};
void PrintTo(const MoeShape& c, std::ostream* os) { *os << c.name; }

class MoeTest : public ::testing::TestWithParam<MoeShape> {};

TEST_P(MoeTest, RouteMatchesReference) {
  FACET_REQUIRE_GPU();
  const MoeShape c = GetParam();
  std::vector<float> x1 = Random(c.T * c.H, 50, 3.0f, false);
  std::vector<float> scale = Random(c.H, 51, 1.0f, false), pes = Random(c.E, 52, 1.0f, false);
  for (float& v : pes) v = 0.5f + std::fabs(v);
  std::vector<float> proj = Random(c.E * c.H, 53, 1.0f);
  auto proj_bits = ToBf16Bits(proj);
  std::vector<int32_t> want_ids(c.T * c.k);
  std::vector<float> want_w(c.T * c.k);
  ASSERT_TRUE(cpu::ref::MoeRoute(x1.data(), c.T, c.H, scale.data(), {proj_bits.data(), WeightFormat::kBF16, c.E, c.H},
                                 pes.data(), c.k, 1e-6f, want_ids.data(), want_w.data(), nullptr)
                  .ok());
  DeviceBuffer d_x = Upload(x1), d_s = Upload(scale), d_p = Upload(proj_bits), d_pes = Upload(pes);
  DeviceBuffer d_ids = Zeros(sizeof(int32_t) * c.T * c.k), d_w = Zeros(sizeof(float) * c.T * c.k);
  FACET_ASSERT_OK(MoeRoute(d_x.as<float>(), c.T, c.H, d_s.as<float>(), d_p.as<bf16>(), c.E,
                           d_pes.as<float>(), c.k, 1e-6f, d_ids.as<int32_t>(), d_w.as<float>(), nullptr));
  EXPECT_EQ(Download<int32_t>(d_ids, c.T * c.k), want_ids);
  // Softmax over E in fp32 then a k-term renormalisation: a few·E ulps.
  ExpectNear(Download<float>(d_w, c.T * c.k), want_w, 4 * (c.E + c.H) * kF32Eps, 0, "weights");
}

TEST_P(MoeTest, PermuteMatchesTwinAndExpertsMatchReference) {
  FACET_REQUIRE_GPU();
  const MoeShape c = GetParam();
  // Distinct experts per token (as top-k gives), spread unevenly.
  std::vector<int32_t> ids(c.T * c.k);
  std::mt19937 rng(60);
  for (int64_t t = 0; t < c.T; ++t) {
    std::vector<int32_t> all(c.E);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::sort(all.begin(), all.begin() + std::min<int64_t>(c.E, c.k + 2));  // bias to low ids
    for (int64_t j = 0; j < c.k; ++j) ids[t * c.k + j] = all[j];
  }
  std::vector<float> weights = Random(c.T * c.k, 61, 1.0f, false);
  std::vector<float> x = Random(c.T * c.H, 62, 2.0f);
  std::vector<float> gate_up = Random(c.E * 2 * c.F * c.H, 63, 0.05f), down = Random(c.E * c.H * c.F, 64, 0.05f);
  auto gu_bits = ToBf16Bits(gate_up), down_bits = ToBf16Bits(down);

  const int64_t tiles = MoeMaxTiles(c.T, c.E, c.k), rows = MoeMaxRows(c.T, c.E, c.k);
  auto twin_perm = twin::MoePermute(ids.data(), c.T, c.k, c.E, kMoeTileRows, tiles);
  ASSERT_TRUE(twin_perm.ok()) << twin_perm.status();
  DeviceBuffer d_ids = Upload(ids), d_x = Upload(ToBf16Bits(x));
  DeviceBuffer d_off = Zeros(sizeof(int32_t) * (c.E + 1)), d_rs = Zeros(sizeof(int32_t) * rows);
  DeviceBuffer d_pr = Zeros(sizeof(int32_t) * c.T * c.k), d_te = Zeros(sizeof(int32_t) * tiles);
  DeviceBuffer d_xp = Zeros(sizeof(bf16) * rows * c.H), d_bad = Zeros(sizeof(int32_t));
  FACET_ASSERT_OK(MoePermute(d_ids.as<int32_t>(), c.T, c.k, c.E, d_x.as<bf16>(), c.H, d_off.as<int32_t>(),
                             d_rs.as<int32_t>(), d_pr.as<int32_t>(), d_te.as<int32_t>(), d_xp.as<bf16>(),
                             d_bad.as<int32_t>(), nullptr));
  EXPECT_EQ(Download<int32_t>(d_off, c.E + 1), twin_perm->offsets);
  EXPECT_EQ(Download<int32_t>(d_rs, rows), twin_perm->row_src);
  EXPECT_EQ(Download<int32_t>(d_pr, c.T * c.k), twin_perm->pair_row);
  EXPECT_EQ(Download<int32_t>(d_te, tiles), twin_perm->tile_expert);
  EXPECT_EQ(Download<int32_t>(d_bad, 1)[0], 0);
  // Gathered rows are the tokens' rows, padding zero.
  const std::vector<float> xp = FromBf16Bits(Download<uint16_t>(d_xp, rows * c.H));
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t p = twin_perm->row_src[r];
    for (int64_t i = 0; i < c.H; i += 17) {
      ASSERT_EQ(xp[r * c.H + i], p < 0 ? 0.0f : x[(p / c.k) * c.H + i]) << "row " << r;
    }
  }

  std::vector<float> want(c.T * c.H);
  ASSERT_TRUE(cpu::ref::MoeExperts(x.data(), c.T, ids.data(), weights.data(), c.k,
                                   {gu_bits.data(), WeightFormat::kBF16, c.E * 2 * c.F, c.H},
                                   {down_bits.data(), WeightFormat::kBF16, c.E * c.H, c.F}, c.E,
                                   want.data(), nullptr, nullptr)
                  .ok());
  DeviceBuffer d_w = Upload(weights), d_gu = Upload(gu_bits), d_down = Upload(down_bits);
  DeviceBuffer d_out = Zeros(sizeof(float) * c.T * c.H);
  const size_t ws_bytes = MoeExpertsWorkspaceBytes(c.T, c.H, c.F, c.E, c.k);
  DeviceBuffer d_ws = Zeros(ws_bytes);
  FACET_ASSERT_OK(MoeExperts(d_x.as<bf16>(), c.T, c.H, d_ids.as<int32_t>(), d_w.as<float>(), c.k,
                             d_gu.as<bf16>(), d_down.as<bf16>(), c.E, c.F, d_out.as<float>(),
                             d_ws.data(), ws_bytes, nullptr));
  // The activation between the two GEMMs is rounded to bf16 on the GPU:
  // each of the F terms of the down projection carries a relative error up
  // to u_bf16, independent in sign, so the output errs by about
  // u_bf16 · |output| (random signs add like the output itself); fp32
  // accumulation over H then F terms adds (H + F)·u. Scaled by the largest
  // output and a factor 4 for the tail of the rounding distribution.
  double max_abs = 0;
  for (float v : want) max_abs = std::max(max_abs, double(std::fabs(v)));
  const double abs_tol = (kBf16Eps + (c.H + c.F) * kF32Eps) * 4 * max_abs + 1e-6;
  ExpectNear(Download<float>(d_out, c.T * c.H), want, 0, abs_tol, "MoeExperts");
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeTest,
                         ::testing::Values(MoeShape{"small", 9, 128, 64, 8, 2},
                                           MoeShape{"gemma4_26b", 5, 2816, 704, 128, 8}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace facet::cuda
