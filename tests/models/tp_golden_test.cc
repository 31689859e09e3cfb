// Tensor and expert parallelism against the single-rank model, on the golden
// checkpoints, under `mpirun -np N` (N = 2, 4): every rank of the world is one
// TP (and/or EP) rank of a single model replica. Greedy tokens must be
// identical to TP=1 (and to the HF goldens); logits within kRelTol.
//
// Tolerance. Sharding changes only the order of fp32 summation: o_proj and
// down_proj become tp partial dot products of length K/tp added by the
// all-reduce, and the expert outputs are added in the same ascending-id
// order as the single-rank kernel. Each reordered sum of length K ≤ 512
// differs by ≲ sqrt(K)·u·Σ|x·w| (u = 2^-24); through ~2 reordered
// reductions per layer × 7 layers, with norms keeping every stage O(1), the
// logits move by ~14·sqrt(512)·6e-8 ≈ 2e-5 relative. We allow
// 1e-4·(1 + |logit|) (5x), measured max printed per case; any real bug
// (a wrong head slice, a missed all-reduce, a double-counted duplicate
// head) moves logits by O(1e-1).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "models/model.h"
#include "parallel/communicator.h"
#include "tests/parallel/test_world.h"
#include "worker/sampler.h"

namespace facet {
namespace {

constexpr float kRelTol = 1e-4f;

std::string GoldenDir(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

int Argmax(const float* x, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = int(i);
  return best;
}

float MaxRelErr(const float* a, const float* b, int64_t n) {
  float worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1.0f + std::fabs(b[i])));
  return worst;
}

struct Case {
  std::string model;
  bool tp, ep;  // which groups the world serves as
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.model + (info.param.tp ? "_tp" : "") + (info.param.ep ? "_ep" : "");
}

class TpGoldenTest : public ::testing::TestWithParam<Case> {};

TEST_P(TpGoldenTest, MatchesSingleRank) {
  const Case& cs = GetParam();
  parallel::Communicator& world = parallel::TestWorld();
  const int n = world.size();
  ThreadPool pool(1);
  auto ref = Model::Load(GoldenDir(cs.model), &pool);
  ASSERT_TRUE(ref.ok()) << ref.status();
  Model::LoadOptions opt;
  opt.tp = cs.tp ? &world : nullptr;
  opt.ep = cs.ep ? &world : nullptr;
  auto par = Model::Load(GoldenDir(cs.model), &pool, opt);
  ASSERT_TRUE(par.ok()) << par.status();
  Model& m = **par;
  const int64_t V = m.config().vocab_size;

  // The shard's config: heads split, or replicated where tp exceeds them.
  const ModelConfig& full = m.full_config();
  for (size_t l = 0; l < full.layers.size(); ++l) {
    const LayerConfig& f = full.layers[l];
    const LayerConfig& s = m.config().layers[l];
    const int tp = cs.tp ? n : 1;
    EXPECT_EQ(s.num_heads, std::max(1, f.num_heads / tp)) << "layer " << l;
    EXPECT_EQ(s.num_kv_heads, std::max(1, f.num_kv_heads / tp)) << "layer " << l;
    EXPECT_EQ(s.intermediate_size, f.intermediate_size / tp) << "layer " << l;
  }
  EXPECT_EQ(m.vocab_shard().size, cs.tp ? V / n : V);

  std::ifstream in(GoldenDir(cs.model) + "/golden.json");
  ASSERT_TRUE(in.good());
  nlohmann::json meta = nlohmann::json::parse(in);
  float worst = 0;
  for (const auto& prompt : meta["prompts"]) {
    std::vector<int32_t> ids = prompt["input_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> greedy = prompt["greedy_ids"].get<std::vector<int32_t>>();
    const int64_t cap = int64_t(ids.size() + greedy.size()) + 1;
    KvCache ref_cache((*ref)->config(), cap), cache(m.config(), cap);
    std::vector<float> want, got;
    ASSERT_TRUE((*ref)->Forward(ids, &ref_cache, true, &want).ok());
    ASSERT_TRUE(m.Forward(ids, &cache, true, &got).ok());
    ASSERT_EQ(got.size(), want.size());
    for (size_t t = 0; t < ids.size(); ++t) {
      const float e = MaxRelErr(&got[t * V], &want[t * V], V);
      worst = std::max(worst, e);
      EXPECT_LT(e, kRelTol) << "prefill position " << t;
    }
    int32_t tok = Argmax(&got[(ids.size() - 1) * V], V);
    int32_t ref_tok = Argmax(&want[(ids.size() - 1) * V], V);
    EXPECT_EQ(tok, ref_tok);
    EXPECT_EQ(tok, greedy[0]);
    // Both models decode their own greedy tokens: identical sequences.
    for (size_t s = 1; s < greedy.size(); ++s) {
      ASSERT_TRUE((*ref)->Forward(std::span<const int32_t>(&ref_tok, 1), &ref_cache, false, &want).ok());
      ASSERT_TRUE(m.Forward(std::span<const int32_t>(&tok, 1), &cache, false, &got).ok());
      const float e = MaxRelErr(got.data(), want.data(), V);
      worst = std::max(worst, e);
      EXPECT_LT(e, kRelTol) << "decode step " << s;
      tok = Argmax(got.data(), V);
      ref_tok = Argmax(want.data(), V);
      EXPECT_EQ(tok, ref_tok) << "decode step " << s;
      EXPECT_EQ(tok, greedy[s]) << "decode step " << s;
    }
  }
  // Every rank must hold the same gathered logits.
  float max_worst = worst;
  ASSERT_TRUE(world.AllReduce(std::span<float>(&max_worst, 1), parallel::ReduceOp::kMax).ok());
  if (world.rank() == 0) {
    std::printf("[ measured ] %s n=%d tp=%d ep=%d max rel logit error vs TP=1: %.3g\n",
                cs.model.c_str(), n, cs.tp, cs.ep, double(max_worst));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Golden, TpGoldenTest,
    ::testing::Values(Case{"gemma2", true, false}, Case{"gemma3", true, false},
                      Case{"gemma4", true, false}, Case{"gemma4_moe", true, false},
                      Case{"gemma4_moe", false, true}, Case{"gemma4_moe", true, true}),
    CaseName);

// The sampler path that never gathers: the model returns [V/tp] logits for
// its vocab_shard() and SampleSharded draws the token Sample() draws from
// the single-rank model's full row (greedy, temperature, top-k, top-p).
TEST(TpGoldenShard, ShardedLogitsSampleLikeSingleRank) {
  parallel::Communicator& world = parallel::TestWorld();
  ThreadPool pool(1);
  auto ref = Model::Load(GoldenDir("gemma4"), &pool);
  Model::LoadOptions opt;
  opt.tp = &world;
  auto m = Model::Load(GoldenDir("gemma4"), &pool, opt);
  ASSERT_TRUE(ref.ok() && m.ok());
  (*m)->set_gather_logits(false);
  const int64_t V = (*ref)->config().vocab_size;
  const parallel::Range vocab = (*m)->vocab_shard();
  EXPECT_EQ(vocab.size * world.size(), V);
  std::vector<SamplingParams> cases(4);
  cases[1].temperature = 1.0f;
  cases[2].temperature = 0.8f, cases[2].top_k = 5;
  cases[3].temperature = 1.2f, cases[3].top_p = 0.7f;
  for (size_t c = 0; c < cases.size(); ++c) {
    cases[c].seed = 11 + c;
    Sampler single(cases[c]), sharded(cases[c]);
    KvCache c1((*ref)->config(), 32), c2((*m)->config(), 32);
    std::vector<int32_t> hist = {2, 17, 33, 5};
    std::vector<float> a, b;
    ASSERT_TRUE((*ref)->Forward(hist, &c1, false, &a).ok());
    ASSERT_TRUE((*m)->Forward(hist, &c2, false, &b).ok());
    for (int step = 0; step < 8; ++step) {
      ASSERT_EQ(int64_t(b.size()), vocab.size);
      const int32_t want = single.Sample(a.data(), V, hist, step);
      auto got = sharded.SampleSharded(world, b.data(), vocab, V, hist, step);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(*got, want) << "case " << c << " step " << step;
      hist.push_back(want);
      ASSERT_TRUE((*ref)->Forward(std::span<const int32_t>(&want, 1), &c1, false, &a).ok());
      ASSERT_TRUE((*m)->Forward(std::span<const int32_t>(&want, 1), &c2, false, &b).ok());
    }
  }
}

// Gemma 4's global layer has one KV head: with tp ≥ 2 it is replicated on
// every rank, and with tp = 4 > 2 query heads the query heads are too.
TEST(TpGoldenShard, Gemma4GlobalKvHeadsReplicated) {
  parallel::Communicator& world = parallel::TestWorld();
  if (world.size() < 2) GTEST_SKIP() << "needs tp >= 2";
  ThreadPool pool(1);
  Model::LoadOptions opt;
  opt.tp = &world;
  auto m = Model::Load(GoldenDir("gemma4"), &pool, opt);
  ASSERT_TRUE(m.ok()) << m.status();
  bool saw_global = false;
  for (size_t l = 0; l < (*m)->config().layers.size(); ++l) {
    const LayerConfig& f = (*m)->full_config().layers[l];
    if (f.is_sliding()) continue;
    saw_global = true;
    EXPECT_LT(f.num_kv_heads, world.size());
    EXPECT_EQ((*m)->config().layers[l].num_kv_heads, 1);
    EXPECT_EQ((*m)->weights().layers[l].heads.kv_heads.begin, 0);
    EXPECT_EQ((*m)->weights().layers[l].k.rows, f.head_dim);
  }
  EXPECT_TRUE(saw_global);
}

TEST(TpGoldenShard, IndivisibleShardsAreErrors) {
  parallel::Communicator& world = parallel::TestWorld();
  if (world.size() < 2) GTEST_SKIP() << "needs tp >= 2";
  ModelConfig cfg;
  auto c = LoadModelConfig(GoldenDir("gemma3"));
  ASSERT_TRUE(c.ok());
  ShardSpec bad;
  bad.tp = 3;  // 4 query heads, 2 KV heads, width 64: none divide by 3
  EXPECT_EQ(ShardConfig(*c, bad).status().code(), absl::StatusCode::kInvalidArgument);
  ShardSpec ep;
  ep.ep = 2;
  EXPECT_EQ(ShardConfig(*c, ep).status().code(), absl::StatusCode::kInvalidArgument);  // no experts
}

}  // namespace
}  // namespace facet
