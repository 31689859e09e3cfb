// CUDA paged attention (kernels/cuda/attention/attention.h) against its
// plain-C++ twin (kernels/cpu/attention_paged.h) on the same bf16-rounded
// inputs. Device tests skip, saying so, where there is no GPU; the plan and
// argument checks run everywhere.
//
// Tolerances (|v| <= 1, outputs are convex combinations of v, so |out| < 1;
// bf16 keeps 8 significant bits):
//   output rounded to bf16              <= 2^-9 absolute (half an ulp below 1)
//   P rounded to bf16 before P·V        <= 2^-8 relative per weight (l sums the
//                                          fp32 weights), so <= 2^-8 · max|v|
//   fp32 vs double score accumulation   ~ D · 2^-24 · |q||k|, negligible here
//   K = V source: the kernel rounds the rebuilt K to bf16 and so does the
//     twin (round_key_to_bf16); fma contraction may flip a rare element by
//     one ulp: one more 2^-9.
// Queries are scaled so scores have a standard deviation of ~4 (12 with a
// softcap, which then bites): the softmax is peaked and outputs are O(0.1–1),
// so a wrong mask, split or merge shows far above the tolerance.
#include "kernels/cuda/attention/attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/attention_paged.h"

namespace facet::cuda {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU()                                                      \
  do {                                                                          \
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: GPU attention not run";    \
  } while (0)

// Owns one cudaMalloc'd array (test-local; the runtime's buffers belong to
// another part of kernels/cuda).
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    if (count > 0) EXPECT_EQ(cudaMalloc(&p, count * sizeof(T)), cudaSuccess);
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) {
    if (n > 0) EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> Get() const {
    std::vector<T> h(n);
    if (n > 0) EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t bits = F32ToBf16(x[i]).bits;
    std::memcpy(&y[i], &bits, 2);
  }
  return y;
}
std::vector<float> FromBf16(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &x[i], 2);
    y[i] = Bf16ToF32(bf16{bits});
  }
  return y;
}

struct Case {
  std::vector<int32_t> q_lens, kv_lens;
  int num_heads = 8, num_kv_heads = 2, head_dim = 128, block_size = 16, window = 0;
  float scale = 1.0f, softcap = 0.0f;
  float score_std = 4.0f;  // sets |q|: std(q·k·scale) = q_amp · sqrt(D) · scale / 3
  bool kv_source = false;
  int splits = 0;  // 0: the plan's choice; else forced
};

struct Host {
  std::vector<int32_t> q_start, kv_len, table;
  std::vector<float> q, k, v, w, inv_freq;  // bf16-rounded values (w, inv_freq fp32)
  int64_t num_blocks = 0, max_blocks = 0;
  int max_q = 0, max_kv = 0, total_q = 0;
};

Host Build(const Case& c, uint32_t seed) {
  Host h;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const int64_t S = int64_t(c.q_lens.size()), D = c.head_dim;
  h.q_start = {0};
  for (int32_t n : c.q_lens) h.q_start.push_back(h.q_start.back() + n);
  h.total_q = h.q_start.back();
  h.kv_len = c.kv_lens;
  h.max_blocks = 1;
  for (int64_t s = 0; s < S; ++s) {
    h.max_blocks = std::max<int64_t>(h.max_blocks, (c.kv_lens[s] + c.block_size - 1) / c.block_size);
    h.max_q = std::max(h.max_q, c.q_lens[s]);
    h.max_kv = std::max(h.max_kv, c.kv_lens[s]);
  }
  h.num_blocks = S * h.max_blocks + 2;
  std::vector<int32_t> ids(h.num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  h.table.assign(S * h.max_blocks, -1);
  int64_t next = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t first = c.kv_lens[s] - c.q_lens[s];
    const int64_t keep = c.window > 0 ? std::max<int64_t>(0, first - c.window + 1) : 0;
    for (int64_t b = keep / c.block_size; b * c.block_size < c.kv_lens[s]; ++b) {
      h.table[s * h.max_blocks + b] = ids[next++];
    }
  }
  const size_t cache = size_t(h.num_blocks) * c.block_size * c.num_kv_heads * D;
  auto fill = [&](std::vector<float>& x, size_t n, float amp) {
    x.resize(n);
    for (float& e : x) e = RoundBf16(amp * uni(rng));
  };
  fill(h.k, cache, 1.0f);
  if (!c.kv_source) fill(h.v, cache, 1.0f);
  const float q_amp = 3.0f * c.score_std / (std::sqrt(float(D)) * std::fabs(c.scale));
  fill(h.q, size_t(h.total_q) * c.num_heads * D, q_amp);
  h.w.resize(D);
  for (float& e : h.w) e = 0.5f + 0.5f * (uni(rng) + 1.0f);
  // Proportional RoPE (spec §4.7): the first D/8 pairs turn, denominator D.
  // (ops.h RopeInvFreq lives in a Highway translation unit this binary cannot link.)
  h.inv_freq.assign(D / 2, 0.0f);
  for (int64_t i = 0; i < D / 8; ++i) h.inv_freq[i] = float(1.0 / std::pow(1e6, double(2 * i) / D));
  return h;
}

cpu::AttentionParams CpuParams(const Case& c, const Host& h) {
  cpu::AttentionParams p;
  p.num_q_tokens = h.total_q;
  p.num_heads = c.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.scale = c.scale;
  p.softcap = c.softcap;
  p.window = c.window;
  return p;
}

AttentionShape Shape(const Case& c) {
  return {c.num_heads, c.num_kv_heads, c.head_dim, c.scale, c.softcap, c.window};
}

std::vector<float> Twin(const Case& c, const Host& h) {
  const cpu::AttentionParams p = CpuParams(c, h);
  cpu::PagedKvLayer kv{h.k.data(), c.kv_source ? nullptr : h.v.data(), h.table.data(),
                       h.num_blocks, c.block_size, h.max_blocks};
  cpu::KvSourceRebuild rb{h.w.data(), h.inv_freq.data(), /*round_key_to_bf16=*/true};
  cpu::PagedBatch b{int64_t(c.q_lens.size()), h.q_start.data(), h.kv_len.data()};
  std::vector<float> out(h.q.size());
  const absl::Status st = cpu::PagedAttention(p, b, kv, &rb, h.q.data(), 1, nullptr, out.data());
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

int NumSms() {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0);
  return std::max(n, 1);
}

// Runs the GPU kernel; returns its output as floats.
std::vector<float> Gpu(const Case& c, const Host& h, int* splits_used) {
  Dev<__nv_bfloat16> q(ToBf16(h.q)), k(ToBf16(h.k)), v(ToBf16(c.kv_source ? std::vector<float>() : h.v));
  Dev<int32_t> q_start(h.q_start), kv_len(h.kv_len), table(h.table);
  Dev<float> w(h.w), inv(h.inv_freq);
  Dev<__nv_bfloat16> out(h.q.size());
  const AttentionShape shape = Shape(c);
  AttentionBatch batch{int(c.q_lens.size()), q_start.p, kv_len.p, h.total_q, h.max_q, h.max_kv};
  absl::StatusOr<AttentionPlan> plan = PlanAttention(shape, batch, NumSms());
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (!plan.ok()) return {};
  if (c.splits > 0) {
    plan->splits = c.splits;
    plan->workspace_bytes = AttentionWorkspaceBytes(shape, h.total_q, c.splits);
  }
  *splits_used = plan->splits;
  Dev<unsigned char> ws(plan->workspace_bytes);
  PagedKvCache kv{k.p, c.kv_source ? nullptr : v.p, table.p, h.num_blocks, c.block_size,
                  int(h.max_blocks)};
  KvSourceRebuild rb{w.p, inv.p, int(c.head_dim / 8)};  // 0.25 · D / 2 pairs turn
  const absl::Status st =
      PagedAttention(*plan, shape, batch, kv, &rb, q.p, out.p, ws.p, ws.n, /*stream=*/nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return FromBf16(out.Get());
}

float Tolerance(const Case& c) {
  const float bound = std::ldexp(1.0f, -9) + std::ldexp(1.0f, -8) + 1e-4f;
  return c.kv_source ? bound + std::ldexp(1.0f, -9) : bound;
}

// Runs the kernel with each forced split count (0: the plan's) against one
// twin answer.
void Check(Case c, uint32_t seed = 11, const std::vector<int>& splits_list = {0}) {
  const Host h = Build(c, seed);
  const std::vector<float> want = Twin(c, h);
  const float tol = Tolerance(c);
  // The comparison means something only if outputs stand well above it.
  double sq = 0.0;
  for (float x : want) sq += double(x) * x;
  ASSERT_GT(std::sqrt(sq / double(want.size())), 10.0 * tol) << "test inputs give too flat a softmax";
  for (int forced : splits_list) {
    c.splits = forced;
    int splits = 0;
    const std::vector<float> got = Gpu(c, h, &splits);
    ASSERT_EQ(got.size(), want.size());
    float worst = 0.0f;
    size_t at = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << "non-finite output at " << i << ", splits " << splits;
      const float e = std::fabs(got[i] - want[i]);
      if (e > worst) worst = e, at = i;
    }
    EXPECT_LE(worst, tol) << "splits " << splits << ", worst at " << at << " (token "
                          << at / (size_t(c.num_heads) * c.head_dim) << ", head "
                          << at / c.head_dim % c.num_heads << "): " << got[at] << " vs " << want[at];
  }
}

TEST(CudaAttention, PrefillGemma2SoftcapGqaVarlen) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.q_lens = {37, 1, 100, 5};
  c.kv_lens = {37, 50, 300, 5};
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.block_size = 13;  // divides no length
  c.scale = 1.0f / 16.0f;
  c.softcap = 50.0f;
  c.score_std = 12.0f;  // tails reach the softcap's bend
  Check(c);
}

TEST(CudaAttention, PrefillSlidingWindowEdgesReleasedBlocks) {
  SKIP_WITHOUT_GPU();
  for (int window : {1, 17, 64}) {
    SCOPED_TRACE(testing::Message() << "window " << window);
    Case c;
    c.q_lens = {70, 1, 9, 33};
    c.kv_lens = {70, 200, 9 + window, 150};
    c.num_heads = 32;
    c.num_kv_heads = 16;  // Gemma 4 31B sliding
    c.head_dim = 256;
    c.block_size = 16;
    c.window = window;
    Check(c, uint32_t(window));
  }
}

TEST(CudaAttention, PrefillHeadDim512Global) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.q_lens = {45, 3, 1};
  c.kv_lens = {45, 130, 77};
  c.num_heads = 32;
  c.num_kv_heads = 4;  // Gemma 4 31B global
  c.head_dim = 512;
  Check(c);
}

TEST(CudaAttention, DecodeSplitKvEveryHeadDim) {
  SKIP_WITHOUT_GPU();
  for (int D : {128, 256, 512}) {
    SCOPED_TRACE(testing::Message() << "D " << D);
    Case c;
    c.q_lens = {1, 1, 1};
    c.kv_lens = {1000, 2500, 17};  // 17 keys over 16 pieces: empty pieces
    c.num_heads = D == 512 ? 16 : 8;
    c.num_kv_heads = D == 512 ? 2 : 4;
    c.head_dim = D;
    Check(c, uint32_t(D), {0, 1, 3, 16});
  }
}

TEST(CudaAttention, DecodeSlidingSplitsGemma2Softcap) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.q_lens = {1, 1};
  c.kv_lens = {5000, 700};
  c.num_heads = 16;
  c.num_kv_heads = 8;
  c.head_dim = 256;
  c.window = 4096;
  c.scale = 1.0f / 16.0f;
  c.softcap = 50.0f;
  c.score_std = 12.0f;
  Check(c, 11, {0, 5});
}

TEST(CudaAttention, KeqVSourcePrefillAndDecode) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.q_lens = {20, 1, 1};
  c.kv_lens = {20, 1500, 300};
  c.num_heads = 16;
  c.num_kv_heads = 2;  // Gemma 4 26B-A4B global
  c.head_dim = 512;
  c.kv_source = true;
  Check(c, 5, {0, 4});
}

TEST(CudaAttention, MergeMatchesTwin) {
  SKIP_WITHOUT_GPU();
  const int S = 7, D = 256;
  const int64_t rows = 50;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> o(size_t(S) * rows * D), lse(size_t(S) * rows);
  for (float& x : o) x = uni(rng);
  for (size_t i = 0; i < lse.size(); ++i) lse[i] = (i % 5 == 0) ? -INFINITY : 10.0f * uni(rng);
  for (int s = 0; s < S; ++s) lse[s * rows + 7] = -INFINITY;  // a row empty in every piece
  std::vector<float> want(rows * D);
  cpu::MergeAttentionStates(o.data(), lse.data(), S, rows, D, want.data());
  Dev<float> d_o(o), d_lse(lse);
  Dev<__nv_bfloat16> out(rows * D);
  ASSERT_TRUE(MergeAttentionStates(d_o.p, d_lse.p, S, rows, D, out.p, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = FromBf16(out.Get());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], std::ldexp(1.0f, -8) + 1e-5f) << "at " << i;
  }
  for (int d = 0; d < D; ++d) EXPECT_EQ(got[7 * D + d], 0.0f);
}

TEST(CudaKvWrite, RowsLandInTheirSlotsBitExact) {
  SKIP_WITHOUT_GPU();
  const int T = 9, Nkv = 4, D = 256, bs = 16, blocks = 3;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> k(T * Nkv * D), v(k.size());
  for (float& x : k) x = RoundBf16(uni(rng));
  for (float& x : v) x = RoundBf16(uni(rng));
  std::vector<int64_t> slots = {5, 40, 17, -1, 0, 47, 16, 33, 2};  // token 3 is padding
  const std::vector<float> sentinel(size_t(blocks) * bs * Nkv * D, 7.0f);
  Dev<__nv_bfloat16> dk(ToBf16(k)), dv(ToBf16(v)), kc(ToBf16(sentinel)), vc(ToBf16(sentinel));
  Dev<int64_t> ds(slots);
  ASSERT_TRUE(WritePagedKv(dk.p, dv.p, ds.p, T, Nkv, D, kc.p, vc.p, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> want_k = sentinel, want_v = sentinel;
  for (int t = 0; t < T; ++t) {
    if (slots[t] < 0) continue;
    std::copy(k.begin() + t * Nkv * D, k.begin() + (t + 1) * Nkv * D, want_k.begin() + slots[t] * Nkv * D);
    std::copy(v.begin() + t * Nkv * D, v.begin() + (t + 1) * Nkv * D, want_v.begin() + slots[t] * Nkv * D);
  }
  EXPECT_EQ(FromBf16(kc.Get()), want_k);
  EXPECT_EQ(FromBf16(vc.Get()), want_v);
  EXPECT_EQ(WritePagedKv(dk.p, dv.p, ds.p, T, Nkv, D, kc.p, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaKvWrite, SourceRowsAreRmsNormalisedOnce) {
  SKIP_WITHOUT_GPU();
  const int T = 6, Nkv = 2, D = 512, bs = 4;
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> kr(T * Nkv * D);
  for (float& x : kr) x = RoundBf16(5.0f * uni(rng));
  std::vector<int64_t> slots = {4, 5, 6, 7, 0, 1};
  std::vector<float> want(size_t(2) * bs * Nkv * D, 0.0f), u(kr.size());
  cpu::KvSourceFromProjection(kr.data(), T * Nkv, D, 1e-6f, u.data());
  for (int t = 0; t < T; ++t) {
    std::copy(u.begin() + t * Nkv * D, u.begin() + (t + 1) * Nkv * D, want.begin() + slots[t] * Nkv * D);
  }
  Dev<__nv_bfloat16> dkr(ToBf16(kr)), cache(ToBf16(std::vector<float>(want.size(), 0.0f)));
  Dev<int64_t> ds(slots);
  ASSERT_TRUE(WriteKvSource(dkr.p, ds.p, T, Nkv, D, 1e-6f, cache.p, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = FromBf16(cache.Get());
  for (size_t i = 0; i < got.size(); ++i) {
    // One bf16 rounding of a value whose fp32 normaliser differs by ulps.
    ASSERT_NEAR(got[i], want[i], std::fabs(want[i]) * std::ldexp(1.0f, -8) + 1e-6f) << "at " << i;
  }
}

TEST(CudaAttention, PlanSplitsOnlyWhenBlocksCannotFillTheGpu) {
  AttentionShape shape{32, 4, 512, 1.0f, 0.0f, 0};
  AttentionBatch one{1, nullptr, nullptr, 1, 1, 131072};
  auto p1 = PlanAttention(shape, one, 132);
  ASSERT_TRUE(p1.ok()) << p1.status();
  EXPECT_EQ(p1->rows_per_block, 16);  // 1 token × 8 heads of a group
  EXPECT_EQ(p1->splits, 64);          // 4 blocks, 264 wanted, capped at 64
  EXPECT_EQ(p1->workspace_bytes, AttentionWorkspaceBytes(shape, 1, 64));
  AttentionBatch many{256, nullptr, nullptr, 256, 1, 4096};
  auto p2 = PlanAttention(shape, many, 132);
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->splits, 1);
  EXPECT_EQ(p2->workspace_bytes, 0u);
  // Short contexts never split below 256 keys a piece.
  AttentionBatch short_ctx{1, nullptr, nullptr, 1, 1, 300};
  EXPECT_EQ(PlanAttention(shape, short_ctx, 132)->splits, 1);
  // Sliding layers plan with the window, not the context.
  AttentionShape sliding{32, 16, 256, 1.0f, 0.0f, 1024};
  AttentionBatch long_ctx{1, nullptr, nullptr, 1, 1, 131072};
  // 16 blocks want ceil(264 / 16) = 17 pieces; 1024 window keys allow 4.
  EXPECT_EQ(PlanAttention(sliding, long_ctx, 132)->splits, 4);
  // Prefill picks the wide row blocks.
  AttentionBatch prefill{2, nullptr, nullptr, 4096, 2048, 2048};
  auto p3 = PlanAttention(shape, prefill, 132);
  ASSERT_TRUE(p3.ok());
  EXPECT_EQ(p3->rows_per_block, 32);
  EXPECT_EQ(p3->row_blocks, 2048 * 8 / 32);
  EXPECT_EQ(p3->splits, 1);
}

TEST(CudaAttention, BadArgumentsAreInvalidArgument) {
  AttentionShape bad_dim{8, 2, 96, 1.0f, 0.0f, 0};
  AttentionBatch b{1, nullptr, nullptr, 1, 1, 10};
  EXPECT_EQ(PlanAttention(bad_dim, b, 132).status().code(), absl::StatusCode::kInvalidArgument);
  AttentionShape bad_gqa{8, 3, 128, 1.0f, 0.0f, 0};
  EXPECT_EQ(PlanAttention(bad_gqa, b, 132).status().code(), absl::StatusCode::kInvalidArgument);
  AttentionShape shape{8, 2, 128, 1.0f, 0.0f, 0};
  AttentionBatch kv_short{1, nullptr, nullptr, 1, 5, 2};
  EXPECT_EQ(PlanAttention(shape, kv_short, 132).status().code(), absl::StatusCode::kInvalidArgument);
  // Launch-side checks fail before touching the device.
  auto plan = PlanAttention(shape, b, 132);
  ASSERT_TRUE(plan.ok());
  int32_t dummy = 0;
  __nv_bfloat16 x{};
  AttentionBatch ok_batch{1, &dummy, &dummy, 1, 1, 10};
  PagedKvCache no_table{&x, &x, nullptr, 1, 16, 1};
  EXPECT_EQ(PagedAttention(*plan, shape, ok_batch, no_table, nullptr, &x, &x, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  PagedKvCache small_table{&x, &x, &dummy, 1, 4, 1};  // 4 positions < max_kv_len 10
  EXPECT_EQ(PagedAttention(*plan, shape, ok_batch, small_table, nullptr, &x, &x, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  PagedKvCache source{&x, nullptr, &dummy, 1, 16, 1};  // K = V source without rebuild weights
  EXPECT_EQ(PagedAttention(*plan, shape, ok_batch, source, nullptr, &x, &x, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  AttentionPlan split = *plan;
  split.splits = 4;
  split.workspace_bytes = AttentionWorkspaceBytes(shape, 1, 4);
  PagedKvCache good{&x, &x, &dummy, 1, 16, 1};
  EXPECT_EQ(PagedAttention(split, shape, ok_batch, good, nullptr, &x, &x, nullptr, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // no workspace
  EXPECT_EQ(MergeAttentionStates(nullptr, nullptr, 0, 4, 128, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaAttention, KeqVSourceHalvesGlobalKvBytes) {
  // Gemma 4 31B global layer: 4 KV heads × 512.
  EXPECT_EQ(KvBytesPerToken(4, 512, false), 8192);
  EXPECT_EQ(KvBytesPerToken(4, 512, true), 4096);
}

}  // namespace
}  // namespace facet::cuda
