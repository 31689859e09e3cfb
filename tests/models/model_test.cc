// Model-level behaviour that the golden test does not cover: bad input,
// bad checkpoints, and KV-cache consistency (chunked = one-shot prefill).
#include "models/model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/mmap.h"
#include "models/random_weights.h"
#include "models/safetensors.h"

namespace facet {
namespace {

namespace fs = std::filesystem;

std::string Golden(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

std::vector<int32_t> Prompt(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = 3 + (i * 37) % (vocab - 3);
  ids[0] = 2;
  return ids;
}

TEST(ModelTest, RejectsBadTokens) {
  ThreadPool pool(1);
  auto m = Model::Load(Golden("gemma3"), &pool);
  ASSERT_TRUE(m.ok()) << m.status();
  const int V = (*m)->config().vocab_size;
  KvCache cache((*m)->config(), 8);
  std::vector<float> logits;
  EXPECT_EQ((*m)->Forward({}, &cache, false, &logits).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = {2, V};
  absl::Status s = (*m)->Forward(bad, &cache, false, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find(std::to_string(V)), std::string::npos) << s;
  std::vector<int32_t> negative = {2, -1};
  EXPECT_EQ((*m)->Forward(negative, &cache, false, &logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.length(), 0);  // nothing was appended
  std::vector<int32_t> too_long = Prompt(9, V);
  EXPECT_EQ((*m)->Forward(too_long, &cache, false, &logits).code(), absl::StatusCode::kOutOfRange);
}

// Copies a golden model directory, dropping or replacing one tensor.
std::string CopyWithout(const std::string& name, const std::string& drop, const std::string& dir) {
  fs::create_directories(dir);
  fs::copy_file(Golden(name) + "/config.json", dir + "/config.json", fs::copy_options::overwrite_existing);
  auto ckpt = WeightCheckpoint::Open(Golden(name) + "/model.safetensors");
  EXPECT_TRUE(ckpt.ok());
  std::vector<NamedTensor> keep;
  for (const std::string& n : ckpt->TensorNames()) {
    if (n == drop) continue;
    keep.push_back(NamedTensor{n, *ckpt->Get(n)});
  }
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", keep).ok());
  return dir;
}

TEST(ModelTest, MissingTensorIsNamed) {
  const std::string dir = CopyWithout("gemma3", "model.layers.1.mlp.up_proj.weight",
                                      ::testing::TempDir() + "/facet_missing_tensor");
  auto m = Model::Load(dir, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(std::string(m.status().message()).find("layers.1.mlp.up_proj.weight"), std::string::npos)
      << m.status();
  fs::remove_all(dir);
}

TEST(ModelTest, ShapeMismatchWithConfigIsNamed) {
  const std::string dir = ::testing::TempDir() + "/facet_bad_shape";
  CopyWithout("gemma3", "", dir);
  // Claim a wider MLP than the weights have.
  auto text = ReadFileToString(dir + "/config.json");
  ASSERT_TRUE(text.ok());
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  const std::string from = "\"intermediate_size\": " + std::to_string(cfg->layers[0].intermediate_size);
  const size_t at = text->find(from);
  ASSERT_NE(at, std::string::npos);
  text->replace(at, from.size(), "\"intermediate_size\": " + std::to_string(cfg->layers[0].intermediate_size + 8));
  std::ofstream(dir + "/config.json") << *text;
  auto m = Model::Load(dir, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(m.status().message()).find("gate_proj"), std::string::npos) << m.status();
  fs::remove_all(dir);
}

// Prefill in one call, in chunks, and token by token must agree: this checks
// the KV cache and the sliding-window bounds across chunk boundaries.
class CacheConsistencyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CacheConsistencyTest, ChunkedPrefillMatchesOneShot) {
  ThreadPool pool(2);
  auto m = Model::Load(Golden(GetParam()), &pool);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& cfg = (*m)->config();
  const int V = cfg.vocab_size;
  std::vector<int32_t> ids = Prompt(23, V);  // crosses the tiny sliding window several times

  KvCache one(cfg, 32);
  std::vector<float> all;
  ASSERT_TRUE((*m)->Forward(ids, &one, true, &all).ok());

  for (int chunk : {1, 5, 8}) {
    KvCache c(cfg, 32);
    std::vector<float> out;
    for (size_t b = 0; b < ids.size(); b += chunk) {
      const size_t n = std::min(ids.size() - b, size_t(chunk));
      ASSERT_TRUE((*m)->Forward(std::span<const int32_t>(ids).subspan(b, n), &c, true, &out).ok());
      for (size_t t = 0; t < n; ++t) {
        for (int v = 0; v < V; ++v) {
          const float ref = all[(b + t) * V + v];
          // Same math, different accumulation order only (see golden_test.cc).
          ASSERT_NEAR(out[t * V + v], ref, 2e-4f * (1 + std::fabs(ref)))
              << GetParam() << " chunk " << chunk << " position " << b + t;
        }
      }
    }
    EXPECT_EQ(c.length(), int64_t(ids.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, CacheConsistencyTest,
                         ::testing::Values("gemma2", "gemma3", "gemma4", "gemma4_moe"));

TEST(ModelTest, RandomWeightsAreDeterministicAndFinite) {
  auto cfg = LoadModelConfig(Golden("gemma4_moe"));
  ASSERT_TRUE(cfg.ok());
  ThreadPool pool(2);
  std::vector<float> a, b;
  for (std::vector<float>* out : {&a, &b}) {
    auto w = MakeRandomWeights(*cfg, WeightFormat::kBF16, 7, &pool);
    ASSERT_TRUE(w.ok()) << w.status();
    Model m(*cfg, std::move(*w), &pool);
    KvCache cache(*cfg, 16);
    ASSERT_TRUE(m.Forward(Prompt(10, cfg->vocab_size), &cache, false, out).ok());
  }
  ASSERT_EQ(a, b);
  for (float x : a) ASSERT_TRUE(std::isfinite(x));
  EXPECT_FALSE(MakeRandomWeights(*cfg, WeightFormat::kQ4_K, 7, &pool).ok());
}

}  // namespace
}  // namespace facet
