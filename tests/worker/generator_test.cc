#include "worker/generator.h"

#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace facet {
namespace {

std::string Golden(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::Load(Golden("gemma3"), &pool_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    std::ifstream in(Golden("gemma3") + "/golden.json");
    golden_ = nlohmann::json::parse(in);
  }
  ThreadPool pool_{2};
  std::unique_ptr<Model> model_;
  nlohmann::json golden_;
};

TEST_F(GeneratorTest, GreedyMatchesTransformers) {
  for (const auto& p : golden_["prompts"]) {
    std::vector<int32_t> prompt = p["input_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> want = p["greedy_ids"].get<std::vector<int32_t>>();
    SamplingParams sp;
    sp.max_tokens = int32_t(want.size());
    auto r = Generate(*model_, prompt, sp);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->ids, want);
    EXPECT_EQ(r->finish, FinishReason::kLength);
    EXPECT_EQ(r->prompt_tokens, int64_t(prompt.size()));
  }
}

TEST_F(GeneratorTest, StopsOnStopToken) {
  const auto& p = golden_["prompts"][0];
  std::vector<int32_t> prompt = p["input_ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> want = p["greedy_ids"].get<std::vector<int32_t>>();
  SamplingParams sp;
  sp.max_tokens = 100;
  sp.stop_token_ids = {want[2]};
  auto r = Generate(*model_, prompt, sp);
  ASSERT_TRUE(r.ok());
  // Stops at the first occurrence of the stop token, which is included.
  size_t first = std::find(want.begin(), want.end(), want[2]) - want.begin();
  EXPECT_EQ(r->ids, std::vector<int32_t>(want.begin(), want.begin() + first + 1));
  EXPECT_EQ(r->finish, FinishReason::kStop);
}

TEST_F(GeneratorTest, SeedMakesSamplingReproducible) {
  std::vector<int32_t> prompt = {2, 17, 99, 45};
  SamplingParams sp;
  sp.temperature = 1.5f;
  sp.max_tokens = 12;
  std::set<std::vector<int32_t>> outputs;
  for (uint64_t seed : {1, 1, 2, 3}) {
    sp.seed = seed;
    auto r = Generate(*model_, prompt, sp);
    ASSERT_TRUE(r.ok());
    outputs.insert(r->ids);
  }
  EXPECT_GE(outputs.size(), 2u);  // different seeds differ
  sp.seed = 1;
  auto a = Generate(*model_, prompt, sp);
  auto b = Generate(*model_, prompt, sp);
  EXPECT_EQ(a->ids, b->ids);  // the same seed repeats exactly
}

TEST_F(GeneratorTest, BadRequestsAreClearErrors) {
  SamplingParams sp;
  EXPECT_EQ(Generate(*model_, {}, sp).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> oov = {2, model_->config().vocab_size + 5};
  EXPECT_EQ(Generate(*model_, oov, sp).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> long_prompt(model_->config().max_position_embeddings + 1, 5);
  EXPECT_EQ(Generate(*model_, long_prompt, sp).status().code(), absl::StatusCode::kOutOfRange);
  SamplingParams bad;
  bad.temperature = -1;
  std::vector<int32_t> ok = {2, 5};
  EXPECT_EQ(Generate(*model_, ok, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GeneratorTest, StopsAtContextLimit) {
  const int ctx = model_->config().max_position_embeddings;
  std::vector<int32_t> prompt(ctx - 3, 5);
  prompt[0] = 2;
  SamplingParams sp;
  sp.max_tokens = 50;
  auto r = Generate(*model_, prompt, sp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LE(int64_t(prompt.size() + r->ids.size()), int64_t(ctx) + 1);
  EXPECT_EQ(r->finish, FinishReason::kLength);
}

}  // namespace
}  // namespace facet
