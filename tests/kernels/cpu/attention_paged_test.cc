// The paged / split-KV / K=V-source CPU twin (kernels/cpu/attention_paged.h)
// against the contiguous CPU attention (ops.h Attention) on gathered K/V.
#include "kernels/cpu/attention_paged.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace facet::cpu {
namespace {

struct Case {
  std::vector<int32_t> q_lens, kv_lens;
  int64_t num_heads = 4, num_kv_heads = 2, head_dim = 64, block_size = 16, window = 0;
  float scale = 0.125f, softcap = 0.0f;
  bool kv_source = false;  // Gemma 4 K = V source cache
};

// A paged cache filled at random, with physical blocks shuffled and blocks
// below every query's window released (-1), as KvBlockManager leaves them.
struct Paged {
  AttentionParams p;
  std::vector<int32_t> q_start, kv_len, table;
  std::vector<float> k, v, q, w, inv_freq;
  PagedKvLayer kv;
  KvSourceRebuild rebuild;
  PagedBatch batch;
};

Paged Build(const Case& c, uint32_t seed) {
  Paged g;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const int64_t S = int64_t(c.q_lens.size()), D = c.head_dim, Nkv = c.num_kv_heads;
  g.p.num_heads = c.num_heads;
  g.p.num_kv_heads = Nkv;
  g.p.head_dim = D;
  g.p.scale = c.scale;
  g.p.softcap = c.softcap;
  g.p.window = c.window;
  g.q_start = {0};
  for (int32_t n : c.q_lens) g.q_start.push_back(g.q_start.back() + n);
  g.p.num_q_tokens = g.q_start.back();
  g.kv_len = c.kv_lens;
  int64_t max_blocks = 1;
  for (int32_t l : c.kv_lens) max_blocks = std::max<int64_t>(max_blocks, (l + c.block_size - 1) / c.block_size);
  const int64_t num_blocks = S * max_blocks + 3;  // a few never used
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  g.table.assign(S * max_blocks, -1);
  int64_t next = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t first_pos = c.kv_lens[s] - c.q_lens[s];
    const int64_t keep_from = c.window > 0 ? std::max<int64_t>(0, first_pos - c.window + 1) : 0;
    for (int64_t blk = keep_from / c.block_size; blk * c.block_size < c.kv_lens[s]; ++blk) {
      g.table[s * max_blocks + blk] = ids[next++];
    }
  }
  const int64_t row = Nkv * D;
  g.k.resize(num_blocks * c.block_size * row);
  for (float& x : g.k) x = uni(rng);
  if (!c.kv_source) {
    g.v.resize(g.k.size());
    for (float& x : g.v) x = uni(rng);
  }
  g.q.resize(g.p.num_q_tokens * c.num_heads * D);
  for (float& x : g.q) x = uni(rng);
  g.w.resize(D);
  for (float& x : g.w) x = 0.5f + 0.5f * (uni(rng) + 1.0f);
  g.inv_freq = RopeInvFreq(D, 1e6f, 1.0f, 0.25f, /*proportional=*/true);
  g.kv = {g.k.data(), c.kv_source ? nullptr : g.v.data(), g.table.data(), num_blocks, c.block_size,
          max_blocks};
  g.rebuild = {g.w.data(), g.inv_freq.data()};
  g.batch = {S, g.q_start.data(), g.kv_len.data()};
  return g;
}

// Independent answer: per sequence, gather the held positions into contiguous
// K/V (rebuilding K with RmsNorm-weight multiply + Rope from ops.h for a
// source cache) and run the contiguous CPU attention.
std::vector<float> Expected(const Paged& g) {
  const AttentionParams& p = g.p;
  const int64_t D = p.head_dim, Nkv = p.num_kv_heads, Nq = p.num_heads, bs = g.kv.block_size;
  std::vector<float> out(p.num_q_tokens * Nq * D, 0.0f);
  for (int64_t s = 0; s < g.batch.num_seqs; ++s) {
    const int64_t n = g.q_start[s + 1] - g.q_start[s];
    if (n == 0) continue;
    const int64_t first_pos = g.kv_len[s] - n;
    const int64_t pos0 = p.window > 0 ? std::max<int64_t>(0, first_pos - p.window + 1) : 0;
    const int64_t num = g.kv_len[s] - pos0;
    std::vector<float> k(num * Nkv * D), v(num * Nkv * D);
    std::vector<int32_t> kpos(num), qpos(n);
    for (int64_t j = 0; j < num; ++j) {
      const int64_t pos = pos0 + j;
      const int32_t blk = g.table[s * g.kv.max_blocks + pos / bs];
      const float* src = g.k.data() + (int64_t(blk) * bs + pos % bs) * Nkv * D;
      std::copy(src, src + Nkv * D, k.begin() + j * Nkv * D);
      const float* vsrc = g.kv.v ? g.v.data() + (int64_t(blk) * bs + pos % bs) * Nkv * D : src;
      std::copy(vsrc, vsrc + Nkv * D, v.begin() + j * Nkv * D);
      kpos[j] = int32_t(pos);
    }
    if (g.kv.v == nullptr) {
      for (int64_t r = 0; r < num * Nkv; ++r) {
        for (int64_t d = 0; d < D; ++d) k[r * D + d] *= g.w[d];
      }
      Rope(k.data(), kpos.data(), num, Nkv, D, g.inv_freq.data());
    }
    for (int64_t i = 0; i < n; ++i) qpos[i] = int32_t(first_pos + i);
    AttentionParams ps = p;
    ps.num_q_tokens = n;
    const absl::Status st = Attention(ps, g.q.data() + g.q_start[s] * Nq * D, qpos.data(), k.data(),
                                      v.data(), num, pos0, out.data() + g.q_start[s] * Nq * D,
                                      nullptr);
    EXPECT_TRUE(st.ok()) << st;
  }
  return out;
}

// Both sides are fp32 with different summation orders over at most a few
// hundred terms of |q·k| <= D: scores agree to ~D·2^-23 relative, outputs
// (convex combinations of values in [-1, 1]) to a few 1e-6.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  float worst = 0.0f;
  int64_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "at " << i;
    const float e = std::fabs(got[i] - want[i]);
    if (e > worst) worst = e, at = int64_t(i);
  }
  EXPECT_LE(worst, tol) << "at " << at << ": " << got[at] << " vs " << want[at];
}

void RunCase(const Case& c, const std::vector<int64_t>& splits, float tol, uint32_t seed = 7) {
  Paged g = Build(c, seed);
  const std::vector<float> want = Expected(g);
  for (int64_t sp : splits) {
    SCOPED_TRACE(testing::Message() << "splits " << sp);
    std::vector<float> ws(PagedAttentionWorkspaceFloats(g.p, sp)), out(want.size(), NAN);
    const absl::Status st =
        PagedAttention(g.p, g.batch, g.kv, &g.rebuild, g.q.data(), sp, ws.data(), out.data());
    ASSERT_TRUE(st.ok()) << st;
    ExpectClose(out, want, tol);
  }
}

TEST(PagedAttention, GqaSoftcapVarlenOddBlocks) {
  Case c;
  c.q_lens = {5, 1, 13, 1};
  c.kv_lens = {5, 37, 20, 1};  // a fresh prefill, decodes, a chunk after a prefix
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  c.block_size = 7;  // divides none of the lengths
  c.scale = 1.0f / 16.0f;
  c.softcap = 50.0f;
  RunCase(c, {1, 2, 5}, 2e-5f);
}

TEST(PagedAttention, SlidingWindowEdgesWithReleasedBlocks) {
  for (int64_t window : {1, 2, 7, 16}) {
    SCOPED_TRACE(testing::Message() << "window " << window);
    Case c;
    // Lengths on both sides of the window, chunks straddling its edge.
    c.q_lens = {1, 1, 6, 9, 1};
    c.kv_lens = {int32_t(window), int32_t(window + 1), 30, 9, 50};
    c.block_size = 3;
    c.window = window;
    c.num_heads = 6;
    c.num_kv_heads = 3;
    c.head_dim = 32;
    RunCase(c, {1, 3, 4}, 2e-5f, uint32_t(window));
  }
}

TEST(PagedAttention, HeadDim512ManySplits) {
  Case c;
  c.q_lens = {1, 3, 1};
  c.kv_lens = {300, 3, 11};
  c.num_heads = 8;
  c.num_kv_heads = 1;
  c.head_dim = 512;
  c.block_size = 16;
  c.scale = 1.0f;
  // 17 pieces leave empty pieces for the 3- and 11-key rows.
  RunCase(c, {1, 4, 17}, 3e-5f);
}

TEST(PagedAttention, KeqVSourceRebuildsKeyWithNormWeightAndProportionalRope) {
  Case c;
  c.q_lens = {2, 1, 1};
  c.kv_lens = {40, 129, 1};
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 512;
  c.block_size = 16;
  c.scale = 1.0f;  // Gemma 4
  c.kv_source = true;
  RunCase(c, {1, 3}, 3e-5f);
}

TEST(PagedAttention, KeqVSourceIsNotPlainSharedKV) {
  // Guard against a rebuild that forgets the weight or RoPE: reading the same
  // cache as an ordinary K = V cache must give a different answer.
  Case c;
  c.q_lens = {1};
  c.kv_lens = {64};
  c.head_dim = 512;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.scale = 1.0f;
  c.kv_source = true;
  Paged g = Build(c, 3);
  std::vector<float> rebuilt(g.q.size()), plain(g.q.size());
  ASSERT_TRUE(PagedAttention(g.p, g.batch, g.kv, &g.rebuild, g.q.data(), 1, nullptr, rebuilt.data()).ok());
  PagedKvLayer shared = g.kv;
  shared.v = g.k.data();
  ASSERT_TRUE(PagedAttention(g.p, g.batch, shared, nullptr, g.q.data(), 1, nullptr, plain.data()).ok());
  float diff = 0.0f;
  for (size_t i = 0; i < plain.size(); ++i) diff = std::max(diff, std::fabs(plain[i] - rebuilt[i]));
  EXPECT_GT(diff, 1e-3f);
}

TEST(PagedAttention, KeqVSourceMatchesGemma4AttentionFromTheProjection) {
  // Spec §4.8 end to end: from one raw projection kr, the reference computes
  // K = Rope(RmsNorm(kr, k_norm)) and V = RmsNorm(kr, no weight) with ops.h;
  // the source path caches only u = KvSourceFromProjection(kr).
  const int64_t D = 512, Nkv = 2, Nq = 8, S = 70, bs = 16;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> kr(S * Nkv * D), w(D), q(Nq * D);
  for (float& x : kr) x = 3.0f * uni(rng);
  for (float& x : w) x = 1.0f + 0.5f * uni(rng);
  for (float& x : q) x = 0.2f * uni(rng);
  const std::vector<float> inv = RopeInvFreq(D, 1e6f, 1.0f, 0.25f, true);
  // Reference: contiguous K and V.
  std::vector<float> k(kr.size()), v(kr.size());
  RmsNorm(kr.data(), w.data(), k.data(), S * Nkv, D, 1e-6f, /*plus_one=*/false);
  RmsNorm(kr.data(), nullptr, v.data(), S * Nkv, D, 1e-6f, false);
  std::vector<int32_t> pos(S);
  std::iota(pos.begin(), pos.end(), 0);
  Rope(k.data(), pos.data(), S, Nkv, D, inv.data());
  AttentionParams p;
  p.num_q_tokens = 1;
  p.num_heads = Nq;
  p.num_kv_heads = Nkv;
  p.head_dim = D;
  const int32_t qpos = S - 1;
  std::vector<float> want(Nq * D), got(Nq * D);
  ASSERT_TRUE(Attention(p, q.data(), &qpos, k.data(), v.data(), S, 0, want.data(), nullptr).ok());
  // Source cache: blocks in order 4, 0, 3, 1, 2.
  std::vector<float> u(kr.size());
  KvSourceFromProjection(kr.data(), S * Nkv, D, 1e-6f, u.data());
  const std::vector<int32_t> table = {4, 0, 3, 1, 2};
  std::vector<float> cache(5 * bs * Nkv * D, NAN);
  for (int64_t t = 0; t < S; ++t) {
    std::copy(u.begin() + t * Nkv * D, u.begin() + (t + 1) * Nkv * D,
              cache.begin() + (table[t / bs] * bs + t % bs) * Nkv * D);
  }
  PagedKvLayer kv{cache.data(), nullptr, table.data(), 5, bs, 5};
  KvSourceRebuild rb{w.data(), inv.data()};
  const std::vector<int32_t> q_start = {0, 1}, kv_len = {int32_t(S)};
  PagedBatch b{1, q_start.data(), kv_len.data()};
  ASSERT_TRUE(PagedAttention(p, b, kv, &rb, q.data(), 1, nullptr, got.data()).ok());
  for (int64_t i = 0; i < Nq * D; ++i) ASSERT_NEAR(got[i], want[i], 2e-5f) << i;
}

TEST(PagedAttention, RebuildRotatesOnlyProportionalPairs) {
  const int64_t D = 512;
  std::vector<float> inv = RopeInvFreq(D, 1e6f, 1.0f, 0.25f, true);
  std::vector<float> u(D), w(D, 2.0f), k(D);
  for (int64_t d = 0; d < D; ++d) u[d] = float(d % 7) - 3.0f;
  KvSourceRebuild r{w.data(), inv.data()};
  RebuildKeyFromSource(u.data(), r, D, 1000, k.data());
  for (int64_t i = 64; i < 256; ++i) {  // identity pairs: only the weight
    EXPECT_EQ(k[i], 2.0f * u[i]);
    EXPECT_EQ(k[i + 256], 2.0f * u[i + 256]);
  }
  // Pair 1 turns by 1000 · 1e6^(-2/512) rad; its norm is kept.
  const float a = 2.0f * u[1], b = 2.0f * u[257];
  EXPECT_NEAR(std::hypot(k[1], k[257]), std::hypot(a, b), 1e-5f);
  EXPECT_GT(std::fabs(k[1] - a), 1e-3f);
}

TEST(MergeAttentionStates, MatchesOneSoftmaxAndHandlesEmptyPieces) {
  // Two pieces of one softmax over scores {1, 2} | {3}: merged output must be
  // the softmax-weighted mean of the three values.
  const int64_t D = 2;
  const double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0);
  const float v1[2] = {1, 0}, v2[2] = {0, 1}, v3[2] = {1, 1};
  std::vector<float> o_part(3 * 2 * D), lse(3 * 2);
  // piece 0
  o_part[0] = float((e1 * v1[0] + e2 * v2[0]) / (e1 + e2));
  o_part[1] = float((e1 * v1[1] + e2 * v2[1]) / (e1 + e2));
  lse[0] = float(std::log(e1 + e2));
  // piece 1
  o_part[2 * D + 0] = v3[0];
  o_part[2 * D + 1] = v3[1];
  lse[2] = 3.0f;
  // piece 2 empty for row 0; row 1 empty in every piece
  o_part[4 * D] = o_part[4 * D + 1] = 0.0f;
  lse[4] = -INFINITY;
  lse[1] = lse[3] = lse[5] = -INFINITY;
  std::vector<float> out(2 * D, NAN);
  MergeAttentionStates(o_part.data(), lse.data(), 3, 2, D, out.data());
  const double z = e1 + e2 + e3;
  EXPECT_NEAR(out[0], (e1 + e3) / z, 1e-6);
  EXPECT_NEAR(out[1], (e2 + e3) / z, 1e-6);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 0.0f);
}

TEST(PagedAttention, BadInputIsInvalidArgument) {
  Case c;
  c.q_lens = {2};
  c.kv_lens = {40};
  c.block_size = 8;
  c.window = 4;
  Paged g = Build(c, 1);
  std::vector<float> out(g.q.size());
  EXPECT_TRUE(PagedAttention(g.p, g.batch, g.kv, nullptr, g.q.data(), 1, nullptr, out.data()).ok());
  // A block inside the window released.
  std::vector<int32_t> table = g.table;
  table[4] = -1;  // positions 32..39
  PagedKvLayer released = g.kv;
  released.block_table = table.data();
  EXPECT_EQ(PagedAttention(g.p, g.batch, released, nullptr, g.q.data(), 1, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  // More queries than positions.
  std::vector<int32_t> short_len = {1};
  PagedBatch b = g.batch;
  b.kv_len = short_len.data();
  EXPECT_EQ(PagedAttention(g.p, b, g.kv, nullptr, g.q.data(), 1, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  // Source cache without the rebuild weights; zero splits; splits without workspace.
  PagedKvLayer source = g.kv;
  source.v = nullptr;
  EXPECT_EQ(PagedAttention(g.p, g.batch, source, nullptr, g.q.data(), 1, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagedAttention(g.p, g.batch, g.kv, nullptr, g.q.data(), 0, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagedAttention(g.p, g.batch, g.kv, nullptr, g.q.data(), 2, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  AttentionParams odd = g.p;
  odd.num_kv_heads = 3;
  EXPECT_EQ(PagedAttention(odd, g.batch, g.kv, nullptr, g.q.data(), 1, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace facet::cpu
