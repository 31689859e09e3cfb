// The shard planner on the official configs: parameter counts match the
// published sizes, layouts are chosen as spec/distributed.md recommends
// (replicas first, experts whole), KV per token matches the hand arithmetic
// of spec/distributed.md §0, and impossible requests say why.
#include "coordinator/shard_planner.h"

#include <gtest/gtest.h>

namespace facet {
namespace {

constexpr int64_t kGB = 1000LL * 1000 * 1000;
constexpr int64_t kKiB = 1024;

ModelConfig Config(const std::string& name) {
  auto c = LoadModelConfig(std::string(FACET_SOURCE_DIR) + "/tests/data/configs/" + name + "/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::vector<RankResources> Ranks(int n, int64_t bytes) {
  std::vector<RankResources> r(n);
  for (int i = 0; i < n; ++i) {
    r[i].rank = i;
    r[i].hostname = "node" + std::to_string(i / 8);
    r[i].memory_bytes = bytes;
  }
  return r;
}

TEST(Planner, ParameterCountsMatchPublishedSizes) {
  struct Want {
    const char* name;
    double billions;
  } wants[] = {{"gemma-3-270m", 0.268}, {"gemma-3-1b-it", 1.0}, {"gemma-3-27b-it", 27.0},
               {"gemma-4-31B-it", 30.7}, {"gemma-4-26B-A4B-it", 25.2}};
  for (const Want& w : wants) {
    const double got = double(CountParameters(Config(w.name))) / 1e9;
    EXPECT_NEAR(got, w.billions, w.billions * 0.04) << w.name;
  }
}

TEST(Planner, MoeOnEightH100sIsEightReplicas) {
  auto p = PlanShards(Config("gemma-4-26B-A4B-it"), Ranks(8, 80 * kGB), {.max_context = 32768});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->tp, 1);
  EXPECT_EQ(p->ep, 1);
  EXPECT_EQ(p->groups.size(), 8u);
  EXPECT_NEAR(double(p->ranks[0].weight_bytes) / 1e9, 50.4, 2.0);
  // spec §0: 8 KiB per sliding layer and 4 KiB per global layer per token.
  ASSERT_EQ(p->kv_kinds.size(), 2u);
  for (const KvKind& k : p->kv_kinds) {
    EXPECT_EQ(k.bytes_per_token_layer, k.window > 0 ? 8 * kKiB : 4 * kKiB) << k.name;
    EXPECT_EQ(k.layers, k.window > 0 ? 25 : 5);
  }
  EXPECT_GT(p->ranks[0].kv_tokens, 32768);
  EXPECT_GE(p->ranks[7].max_sequences, 1);
}

TEST(Planner, MoeWithExpertParallelKeepsExpertsWhole) {
  auto p = PlanShards(Config("gemma-4-26B-A4B-it"), Ranks(8, 80 * kGB), {.ep = 8});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ep, 8);
  EXPECT_EQ(p->tp, 1);
  ASSERT_EQ(p->groups.size(), 1u);
  EXPECT_NE(p->ranks[3].slices.find("experts [48,64)"), std::string::npos) << p->ranks[3].slices;
  // 16 experts instead of 128 per rank: roughly 22.8B * 7/8 fewer parameters.
  auto one = PlanShards(Config("gemma-4-26B-A4B-it"), Ranks(8, 80 * kGB), {});
  ASSERT_TRUE(one.ok());
  EXPECT_LT(p->ranks[0].weight_bytes, one->ranks[0].weight_bytes / 4);
  EXPECT_EQ(PlanShards(Config("gemma-4-26B-A4B-it"), Ranks(8, 80 * kGB), {.ep = 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dense_ep = PlanShards(Config("gemma-4-31B-it"), Ranks(2, 80 * kGB), {.ep = 2});
  EXPECT_NE(dense_ep.status().message().find("no experts"), std::string::npos) << dense_ep.status();
}

TEST(Planner, Dense31BOnTwoH100s) {
  const ModelConfig c = Config("gemma-4-31B-it");
  // Short context: two TP1 replicas.
  auto p = PlanShards(c, Ranks(2, 80 * kGB), {.max_context = 8192});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->tp, 1);
  EXPECT_EQ(p->groups.size(), 2u);
  for (const KvKind& k : p->kv_kinds) EXPECT_EQ(k.bytes_per_token_layer, k.window > 0 ? 16 * kKiB : 8 * kKiB);
  // 256K context: one sequence is ~20.8 GiB of KV, which does not fit beside
  // 61 GB of weights on one rank, so the planner goes to TP2.
  auto q = PlanShards(c, Ranks(2, 80 * kGB), {});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->tp, 2);
  ASSERT_EQ(q->groups.size(), 1u);
  EXPECT_EQ(q->groups[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_NEAR(double(q->kv_bytes_per_sequence) / double(int64_t(1) << 30), 10.4, 0.3);
  EXPECT_NE(q->note.find("tp 1"), std::string::npos) << q->note;
  EXPECT_NE(q->ranks[1].slices.find("q heads [16,32)"), std::string::npos) << q->ranks[1].slices;
}

TEST(Planner, KvHeadsReplicateBeyondTheirCount) {
  // Gemma 4 31B global layers have 4 KV heads: TP8 holds one (replicated) per rank.
  auto p = PlanShards(Config("gemma-4-31B-it"), Ranks(8, 80 * kGB), {.tp = 8});
  ASSERT_TRUE(p.ok()) << p.status();
  for (const KvKind& k : p->kv_kinds) EXPECT_EQ(k.kv_heads_per_rank, k.window > 0 ? 2 : 1) << k.name;
  EXPECT_NE(p->ranks[5].slices.find("(replicated)"), std::string::npos) << p->ranks[5].slices;
}

TEST(Planner, Gemma3On24GBFailsWithAReason) {
  auto p = PlanShards(Config("gemma-3-27b-it"), Ranks(1, 24 * kGB), {});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(p.status().message().find("does not fit"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("weights"), std::string::npos) << p.status();
}

TEST(Planner, TpMustDivideHeads) {
  auto p = PlanShards(Config("gemma-3-27b-it"), Ranks(4, 80 * kGB), {.tp = 3});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("query heads"), std::string::npos) << p.status();
  // A group larger than the world.
  EXPECT_EQ(PlanShards(Config("gemma-3-27b-it"), Ranks(2, 80 * kGB), {.tp = 4}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Planner, LeftoverRanksAndBadInput) {
  auto p = PlanShards(Config("gemma-3-1b-it"), Ranks(3, 8 * kGB), {.max_context = 4096, .tp = 2});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->groups.size(), 1u);
  EXPECT_EQ(p->unused_ranks, std::vector<int>{2});
  EXPECT_FALSE(DescribePlan(*p).empty());
  EXPECT_EQ(PlanShards(Config("gemma-3-1b-it"), {}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanShards(Config("gemma-3-1b-it"), Ranks(1, 0), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanShards(Config("gemma-3-1b-it"), Ranks(1, kGB), {.memory_fraction = 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Planner, KvTokensGrowWithMemory) {
  const ModelConfig c = Config("gemma-3-27b-it");
  auto a = PlanShards(c, Ranks(1, 80 * kGB), {.max_context = 32768});
  auto b = PlanShards(c, Ranks(1, 141 * kGB), {.max_context = 32768});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GT(b->ranks[0].kv_tokens, a->ranks[0].kv_tokens * 3);
  // 62 layers x 8 KiB per token (spec §0) bounds the tokens from below.
  EXPECT_GE(a->ranks[0].kv_tokens, a->ranks[0].kv_budget_bytes / (62 * 8 * kKiB));
}

}  // namespace
}  // namespace facet
