// Embedding, RMSNorm (plain and fused), GeGLU, softcap and the fused
// QK-norm + RoPE + paged KV write against their CPU twins.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/twins.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace facet::cuda {
namespace {

using namespace facet::cuda::testing;

// An fp32 result rounded once to bf16, after fp32 arithmetic whose error is
// a few ulps of fp32: the bf16 unit roundoff plus slack for the fp32 part.
constexpr double kBf16OutRel = kBf16Eps + 64 * kF32Eps;

TEST(CudaArgs, BadShapesAreInvalidArgumentWithoutTouchingTheDevice) {
  // These checks run before any launch, so they hold on a machine without a GPU.
  EXPECT_EQ(RmsNorm(static_cast<const float*>(nullptr), nullptr, nullptr, 0, 8, 1e-6f, false,
                    nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Softcap(nullptr, 8, 30.0f, nullptr).code(), absl::StatusCode::kInvalidArgument);
  float dummy = 0;
  EXPECT_EQ(Softcap(&dummy, 1, 0.0f, nullptr).code(), absl::StatusCode::kInvalidArgument);
  QkvRopeParams p;
  p.tokens = 1, p.num_heads = 2, p.num_kv_heads = 1, p.head_dim = 96, p.num_slots = 1;
  const bf16* any = reinterpret_cast<const bf16*>(&dummy);
  p.qkv = any, p.positions = reinterpret_cast<const int32_t*>(&dummy), p.inv_freq = &dummy;
  p.slot_mapping = reinterpret_cast<const int64_t*>(&dummy);
  p.q_out = p.k_cache = p.v_cache = reinterpret_cast<bf16*>(&dummy);
  absl::Status s = QkNormRopeKv(p, nullptr, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("head_dim 96"), std::string::npos) << s;
  p.num_kv_heads = 3;
  EXPECT_EQ(QkNormRopeKv(p, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaElementwise, EmbedMatchesReferenceAndCountsBadIds) {
  FACET_REQUIRE_GPU();
  const int64_t vocab = 300, dim = 320;
  std::vector<float> table = Random(vocab * dim, 1);
  auto table_bits = ToBf16Bits(table);
  std::vector<int32_t> ids = {0, 299, 17, 17, 150};
  const float scale = RoundBf16(std::sqrt(float(dim)));
  std::vector<float> want(ids.size() * dim);
  cpu::ref::Embed({table_bits.data(), WeightFormat::kBF16, vocab, dim}, ids.data(),
                  int64_t(ids.size()), scale, want.data());
  DeviceBuffer d_table = Upload(table_bits), d_ids = Upload(ids);
  DeviceBuffer d_out = Zeros(sizeof(float) * want.size()), d_bad = Zeros(sizeof(int32_t));
  FACET_ASSERT_OK(Embed(d_table.as<bf16>(), vocab, dim, d_ids.as<int32_t>(), int64_t(ids.size()),
                        scale, d_out.as<float>(), d_bad.as<int32_t>(), nullptr));
  // bf16 · bf16-rounded scale is exact in fp32.
  ExpectNear(Download<float>(d_out, want.size()), want, 0, 0, "Embed");
  EXPECT_EQ(Download<int32_t>(d_bad, 1)[0], 0);

  std::vector<int32_t> bad_ids = {5, -1, 300};
  DeviceBuffer d_bad_ids = Upload(bad_ids);
  FACET_ASSERT_OK(Embed(d_table.as<bf16>(), vocab, dim, d_bad_ids.as<int32_t>(), 3, scale,
                        d_out.as<float>(), d_bad.as<int32_t>(), nullptr));
  EXPECT_EQ(Download<int32_t>(d_bad, 1)[0], 2);
  std::vector<float> out = Download<float>(d_out, 3 * dim);
  for (int64_t c = 0; c < dim; ++c) ASSERT_EQ(out[dim + c], 0.0f) << "bad id row must be zero";
}

class RmsNormTest : public ::testing::TestWithParam<std::tuple<int64_t, bool, bool>> {};

TEST_P(RmsNormTest, MatchesReference) {
  FACET_REQUIRE_GPU();
  const auto [dim, plus_one, with_weight] = GetParam();
  const int64_t rows = 7;
  std::vector<float> x = Random(rows * dim, 2, 3.0f);
  std::vector<float> w = Random(dim, 3, 0.5f, false);
  std::vector<float> want(rows * dim);
  cpu::ref::RmsNorm(x.data(), with_weight ? w.data() : nullptr, want.data(), rows, dim, 1e-6f,
                    plus_one);
  DeviceBuffer d_x32 = Upload(x), d_x16 = Upload(ToBf16Bits(x)), d_w = Upload(w);
  DeviceBuffer d_y = Zeros(sizeof(bf16) * rows * dim);
  const float* wp = with_weight ? d_w.as<float>() : nullptr;
  // The sum of squares has dim terms: its relative error is dim·u.
  const double rel = kBf16OutRel + dim * kF32Eps;
  FACET_ASSERT_OK(RmsNorm(d_x32.as<float>(), wp, d_y.as<bf16>(), rows, dim, 1e-6f, plus_one, nullptr));
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_y, rows * dim)), want, rel, 0, "RmsNorm f32 in");
  FACET_ASSERT_OK(RmsNorm(d_x16.as<bf16>(), wp, d_y.as<bf16>(), rows, dim, 1e-6f, plus_one, nullptr));
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_y, rows * dim)), want, rel, 0, "RmsNorm bf16 in");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(std::make_tuple(int64_t(64), false, true),
                                           std::make_tuple(int64_t(256), true, true),
                                           std::make_tuple(int64_t(2816), false, true),
                                           std::make_tuple(int64_t(1152), false, false)));

TEST(CudaElementwise, AddRmsNormMatchesTwin) {
  FACET_REQUIRE_GPU();
  const int64_t rows = 5, dim = 1152;
  std::vector<float> branch = Random(rows * dim, 4, 2.0f);
  std::vector<float> resid = Random(rows * dim, 5, 4.0f, false);
  std::vector<float> w_post = Random(dim, 6, 0.5f, false), w_next = Random(dim, 7, 0.5f, false);
  for (const float resid_scale : {1.0f, 0.75f}) {
    std::vector<float> want_resid = resid, want_next(rows * dim);
    twin::AddRmsNorm(branch.data(), w_post.data(), want_resid.data(), resid_scale, w_next.data(),
                     want_next.data(), rows, dim, 1e-6f, true);
    DeviceBuffer d_b = Upload(ToBf16Bits(branch)), d_r = Upload(resid);
    DeviceBuffer d_wp = Upload(w_post), d_wn = Upload(w_next);
    DeviceBuffer d_next = Zeros(sizeof(bf16) * rows * dim);
    FACET_ASSERT_OK(AddRmsNorm(d_b.as<bf16>(), d_wp.as<float>(), d_r.as<float>(), resid_scale,
                               d_wn.as<float>(), d_next.as<bf16>(), rows, dim, 1e-6f, true, nullptr));
    // resid stays fp32. The branch norm's 1/rms errs by at most dim·u
    // (fp32 sum of squares) plus a few u (rsqrtf), relative, on normed
    // values of at most max|b| / rms(b) · max|1 + w| = 2 / (2/√3) · 1.5 < 4.
    const double abs_resid = (dim + 8) * kF32Eps * 4;
    ExpectNear(Download<float>(d_r, rows * dim), want_resid, 4 * kF32Eps, abs_resid, "resid");
    ExpectNear(FromBf16Bits(Download<uint16_t>(d_next, rows * dim)), want_next,
               kBf16OutRel + 2 * dim * kF32Eps, abs_resid * 2, "next");
  }
}

TEST(CudaElementwise, MoeBlockEndMatchesTwin) {
  FACET_REQUIRE_GPU();
  const int64_t rows = 4, dim = 2816;
  std::vector<float> dense = Random(rows * dim, 13, 2.0f), experts = Random(rows * dim, 14, 0.3f, false);
  std::vector<float> resid = Random(rows * dim, 15, 4.0f, false);
  std::vector<float> w1 = Random(dim, 16, 1.0f, false), w2 = Random(dim, 17, 1.0f, false);
  std::vector<float> wp = Random(dim, 18, 1.0f, false), wn = Random(dim, 19, 1.0f, false);
  std::vector<float> want_resid = resid, want_next(rows * dim);
  twin::MoeBlockEnd(dense.data(), w1.data(), experts.data(), w2.data(), wp.data(), want_resid.data(),
                    0.5f, wn.data(), want_next.data(), rows, dim, 1e-6f);
  DeviceBuffer d_d = Upload(ToBf16Bits(dense)), d_e = Upload(experts), d_r = Upload(resid);
  DeviceBuffer d_w1 = Upload(w1), d_w2 = Upload(w2), d_wp = Upload(wp), d_wn = Upload(wn);
  DeviceBuffer d_next = Zeros(sizeof(bf16) * rows * dim);
  FACET_ASSERT_OK(MoeBlockEnd(d_d.as<bf16>(), d_w1.as<float>(), d_e.as<float>(), d_w2.as<float>(),
                              d_wp.as<float>(), d_r.as<float>(), 0.5f, d_wn.as<float>(),
                              d_next.as<bf16>(), rows, dim, 1e-6f, nullptr));
  // Three nested norms, each (dim + 8)·u relative (as AddRmsNorm's test);
  // the errors compound through the outer norm, on normed values below 8.
  const double abs_resid = 3 * (dim + 8) * kF32Eps * 8;
  ExpectNear(Download<float>(d_r, rows * dim), want_resid, 4 * kF32Eps, abs_resid, "resid");
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_next, rows * dim)), want_next,
             kBf16OutRel + 4 * dim * kF32Eps, abs_resid * 2, "next");
  EXPECT_EQ(MoeBlockEnd(d_d.as<bf16>(), nullptr, d_e.as<float>(), d_w2.as<float>(), d_wp.as<float>(),
                        d_r.as<float>(), 1.0f, nullptr, nullptr, rows, dim, 1e-6f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaElementwise, GeGluAndSoftcapMatchReference) {
  FACET_REQUIRE_GPU();
  const int64_t m = 3, inter = 704;
  std::vector<float> gu = Random(m * 2 * inter, 8, 4.0f);
  std::vector<float> want(m * inter);
  cpu::ref::GeGlu(gu.data(), m, inter, want.data());
  DeviceBuffer d_gu16 = Upload(ToBf16Bits(gu)), d_gu32 = Upload(gu);
  DeviceBuffer d_out = Zeros(sizeof(bf16) * m * inter);
  // The output rounds to bf16 (relative). For negative gates 1 + tanh
  // cancels: the fp32 tanh's absolute error (a few u) times 0.5·|g|·|up|
  // <= 8 is absolute: 4 · 8 · u.
  const double abs = 4 * 8 * kF32Eps;
  FACET_ASSERT_OK(GeGlu(d_gu16.as<bf16>(), m, inter, d_out.as<bf16>(), nullptr));
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_out, m * inter)), want, kBf16OutRel, abs, "GeGlu bf16");
  FACET_ASSERT_OK(GeGlu(d_gu32.as<float>(), m, inter, d_out.as<bf16>(), nullptr));
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_out, m * inter)), want, kBf16OutRel, abs, "GeGlu f32");

  std::vector<float> logits = Random(4096, 9, 100.0f, false);
  std::vector<float> want_cap = logits;
  cpu::ref::Softcap(want_cap.data(), int64_t(want_cap.size()), 30.0f);
  DeviceBuffer d_l = Upload(logits);
  FACET_ASSERT_OK(Softcap(d_l.as<float>(), int64_t(logits.size()), 30.0f, nullptr));
  ExpectNear(Download<float>(d_l, logits.size()), want_cap, 8 * kF32Eps, 0, "Softcap");
}

struct RopeCase {
  const char* name;
  int64_t heads, kv_heads, head_dim;
  bool k_eq_v, v_norm, qk_norm;
  float theta, partial;
  bool proportional;
};
// Names the case in test listings (ctest names) instead of its bytes.
void PrintTo(const RopeCase& c, std::ostream* os) { *os << c.name; }

class QkRopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(QkRopeTest, MatchesTwinAndWritesPagedSlots) {
  FACET_REQUIRE_GPU();
  const RopeCase c = GetParam();
  const int64_t T = 6, D = c.head_dim, block_size = 4, num_blocks = 5;
  const int64_t num_slots = block_size * num_blocks;
  const int64_t row = (c.heads + (c.k_eq_v ? 1 : 2) * c.kv_heads) * D;
  std::vector<float> qkv = Random(T * row, 10, 2.0f);
  std::vector<float> qn = Random(D, 11, 0.5f, false), kn = Random(D, 12, 0.5f, false);
  std::vector<int32_t> pos = {0, 1, 2, 3, 1000, 70000};
  // A block table [3, 0, 4] for one sequence at positions 0..3 plus two
  // tokens of another sequence; -1 is a token with no slot (skipped).
  std::vector<int64_t> slots = {3 * block_size + 0, 3 * block_size + 1, 3 * block_size + 2, -1,
                                4 * block_size + 3, 0 * block_size + 1};
  auto inv_or = twin::RopeInvFreq(D, c.theta, 1.0f, c.partial, c.proportional);
  ASSERT_TRUE(inv_or.ok()) << inv_or.status();
  const std::vector<float> inv_freq = *inv_or;
  const int64_t kv_row = c.kv_heads * D;
  std::vector<float> want_q(T * c.heads * D), want_k(num_slots * kv_row, 0.f),
      want_v(num_slots * kv_row, 0.f);
  twin::QkvRope r;
  r.tokens = T, r.num_heads = c.heads, r.num_kv_heads = c.kv_heads, r.head_dim = D;
  r.qkv = qkv.data(), r.k_eq_v = c.k_eq_v, r.v_norm = c.v_norm;
  r.q_norm = c.qk_norm ? qn.data() : nullptr, r.k_norm = c.qk_norm ? kn.data() : nullptr;
  r.positions = pos.data(), r.inv_freq = inv_freq.data(), r.slot_mapping = slots.data();
  r.num_slots = num_slots, r.q_out = want_q.data(), r.k_cache = want_k.data(), r.v_cache = want_v.data();
  ASSERT_TRUE(twin::QkNormRopeKv(r).ok());

  DeviceBuffer d_qkv = Upload(ToBf16Bits(qkv)), d_qn = Upload(qn), d_kn = Upload(kn);
  DeviceBuffer d_pos = Upload(pos), d_slots = Upload(slots), d_f = Upload(inv_freq);
  DeviceBuffer d_q = Zeros(sizeof(bf16) * want_q.size());
  DeviceBuffer d_k = Zeros(sizeof(bf16) * want_k.size()), d_v = Zeros(sizeof(bf16) * want_v.size());
  DeviceBuffer d_bad = Zeros(sizeof(int32_t));
  QkvRopeParams p;
  p.tokens = T, p.num_heads = c.heads, p.num_kv_heads = c.kv_heads, p.head_dim = D;
  p.qkv = d_qkv.as<bf16>(), p.k_eq_v = c.k_eq_v, p.v_norm = c.v_norm;
  p.q_norm = c.qk_norm ? d_qn.as<float>() : nullptr, p.k_norm = c.qk_norm ? d_kn.as<float>() : nullptr;
  p.positions = d_pos.as<int32_t>(), p.inv_freq = d_f.as<float>();
  p.slot_mapping = d_slots.as<int64_t>(), p.num_slots = num_slots;
  p.q_out = d_q.as<bf16>(), p.k_cache = d_k.as<bf16>(), p.v_cache = d_v.as<bf16>();
  FACET_ASSERT_OK(QkNormRopeKv(p, d_bad.as<int32_t>(), nullptr));
  // Both sides compute the same fp32 angle; sincosf and the CPU's cos/sin
  // each err by about an fp32 ulp, so a rotated component errs by a few u
  // times the pair's magnitude (|a| + |b| <= ~8 after a norm with |w| <= 1.5),
  // which matters for components near zero: abs = 16 · 8 · u. The norm adds
  // D·u relative; the output rounds to bf16.
  const double rel = kBf16OutRel + D * kF32Eps, abs = 16 * 8 * kF32Eps;
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_q, want_q.size())), want_q, rel, abs, "q");
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_k, want_k.size())), want_k, rel, abs, "k cache");
  ExpectNear(FromBf16Bits(Download<uint16_t>(d_v, want_v.size())), want_v, rel, abs, "v cache");
  EXPECT_EQ(Download<int32_t>(d_bad, 1)[0], 0);

  // A slot past the cache is counted, not written.
  std::vector<int64_t> bad_slots(T, -1);
  bad_slots[2] = num_slots;
  DeviceBuffer d_bs = Upload(bad_slots);
  p.slot_mapping = d_bs.as<int64_t>();
  FACET_ASSERT_OK(QkNormRopeKv(p, d_bad.as<int32_t>(), nullptr));
  // One count per K head and per V head of the bad token.
  EXPECT_EQ(Download<int32_t>(d_bad, 1)[0], 2 * c.kv_heads);
}

INSTANTIATE_TEST_SUITE_P(
    Gemma, QkRopeTest,
    ::testing::Values(
        RopeCase{"gemma2_noqknorm", 4, 2, 128, false, false, false, 10000.f, 1.f, false},
        RopeCase{"gemma3_local", 8, 4, 256, false, false, true, 10000.f, 1.f, false},
        RopeCase{"gemma4_global_k_eq_v", 16, 2, 512, true, true, true, 1e6f, 0.25f, true},
        RopeCase{"small", 2, 1, 64, false, true, true, 10000.f, 1.f, false}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace facet::cuda
