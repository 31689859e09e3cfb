// ModelConfig parsing against the official Gemma 2 / 3 / 4 config.json files
// (tests/data/configs/, reconstructed in HF format from
// spec/gemma-architecture.md §9). Expected numbers come from the spec's tables,
// not from the parser.
#include "models/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/mmap.h"
#include "nlohmann/json.hpp"

namespace facet {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string ConfigDir(const std::string& name) { return std::string(FACET_SOURCE_DIR) + "/tests/data/configs/" + name; }

ModelConfig LoadOrDie(const std::string& name) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigDir(name));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

json ReadJson(const std::string& name) {
  absl::StatusOr<std::string> text = ReadFileToString(ConfigDir(name) + "/config.json");
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(text.ok() ? *text : "{}");
}

// first, first+step, ... <= last
std::vector<int> Every(int first, int step, int last) {
  std::vector<int> v;
  for (int i = first; i <= last; i += step) v.push_back(i);
  return v;
}

std::vector<int> GlobalLayers(const ModelConfig& c) {
  std::vector<int> v;
  for (int i = 0; i < int(c.layers.size()); ++i) {
    if (c.layers[i].attention == AttentionKind::kGlobal) v.push_back(i);
  }
  return v;
}

// One row of the spec's §9 tables.
struct Official {
  const char* dir;
  ModelFamily family;
  int hidden, layers, vocab, max_pos, intermediate;
  std::vector<int> globals;
  int heads, sliding_kv, global_kv, sliding_head_dim, global_head_dim, window;
  float sliding_theta, global_theta;
  RopeType global_rope;
  float global_factor;
  int global_rotated_pairs;
  float qpas;  // 0: Gemma 4 (scale 1.0)
  float attn_softcap, final_softcap;
  float bf16_embedding_scale;  // spec §1.1
  std::vector<int> eos;
  bool k_eq_v;
};

std::ostream& operator<<(std::ostream& os, const Official& o) { return os << o.dir; }

const std::vector<Official>& OfficialConfigs() {
  using F = ModelFamily;
  using R = RopeType;
  // clang-format off
  static const std::vector<Official> kAll = {
      // Gemma 4 (§9.1).
      {"gemma-4-E2B-it", F::kGemma4, 1536, 35, 262144, 131072, 6144, Every(4, 5, 34), 8, 1, 1, 256, 512, 512,
       1e4f, 1e6f, R::kProportional, 1.0f, 64, 0, 0, 30, 39.25f, {1, 106}, false},
      {"gemma-4-E4B-it", F::kGemma4, 2560, 42, 262144, 131072, 10240, Every(5, 6, 41), 8, 2, 2, 256, 512, 512,
       1e4f, 1e6f, R::kProportional, 1.0f, 64, 0, 0, 30, 50.5f, {1, 106}, false},
      {"gemma-4-26B-A4B-it", F::kGemma4, 2816, 30, 262144, 262144, 2112, Every(5, 6, 29), 16, 8, 2, 256, 512, 1024,
       1e4f, 1e6f, R::kProportional, 1.0f, 64, 0, 0, 30, 53.0f, {1, 106}, true},
      {"gemma-4-31B-it", F::kGemma4, 5376, 60, 262144, 262144, 21504, Every(5, 6, 59), 32, 16, 4, 256, 512, 1024,
       1e4f, 1e6f, R::kProportional, 1.0f, 64, 0, 0, 30, 73.5f, {1, 106}, true},
      // Gemma 3 (§9.2); 4B/12B/27B are the sparse multimodal configs.
      {"gemma-3-270m", F::kGemma3, 640, 18, 262144, 32768, 2048, {5, 11, 17}, 4, 1, 1, 256, 256, 512, 1e4f, 1e6f,
       R::kDefault, 1.0f, 128, 256, 0, 0, 25.25f, {1}, false},
      {"gemma-3-1b-it", F::kGemma3, 1152, 26, 262144, 32768, 6912, {5, 11, 17, 23}, 4, 1, 1, 256, 256, 512, 1e4f, 1e6f,
       R::kDefault, 1.0f, 128, 256, 0, 0, 34.0f, {1, 106}, false},
      {"gemma-3-4b-it", F::kGemma3, 2560, 34, 262208, 131072, 10240, {5, 11, 17, 23, 29}, 8, 4, 4, 256, 256, 1024,
       1e4f, 1e6f, R::kLinear, 8.0f, 128, 256, 0, 0, 50.5f, {1, 106}, false},
      {"gemma-3-12b-it", F::kGemma3, 3840, 48, 262208, 131072, 15360, Every(5, 6, 47), 16, 8, 8, 256, 256, 1024,
       1e4f, 1e6f, R::kLinear, 8.0f, 128, 256, 0, 0, 62.0f, {1, 106}, false},
      {"gemma-3-27b-it", F::kGemma3, 5376, 62, 262208, 131072, 21504, Every(5, 6, 59), 32, 16, 16, 128, 128, 1024,
       1e4f, 1e6f, R::kLinear, 8.0f, 64, 168, 0, 0, 73.5f, {1, 106}, false},
      // Gemma 2 (§9.3): odd layers global.
      {"gemma-2-2b-it", F::kGemma2, 2304, 26, 256000, 8192, 9216, Every(1, 2, 25), 8, 4, 4, 256, 256, 4096, 1e4f, 1e4f,
       R::kDefault, 1.0f, 128, 256, 50, 30, 48.0f, {1, 107}, false},
      {"gemma-2-9b", F::kGemma2, 3584, 42, 256000, 8192, 14336, Every(1, 2, 41), 16, 8, 8, 256, 256, 4096, 1e4f, 1e4f,
       R::kDefault, 1.0f, 128, 256, 50, 30, 59.75f, {1}, false},
      {"gemma-2-27b", F::kGemma2, 4608, 46, 256000, 8192, 36864, Every(1, 2, 45), 32, 16, 16, 128, 128, 4096, 1e4f,
       1e4f, R::kDefault, 1.0f, 64, 144, 50, 30, 68.0f, {1}, false},
  };
  // clang-format on
  return kAll;
}

class ConfigOfficialTest : public ::testing::TestWithParam<Official> {};

TEST_P(ConfigOfficialTest, MatchesSpec) {
  const Official& e = GetParam();
  ModelConfig c = LoadOrDie(e.dir);
  ASSERT_EQ(c.num_layers, e.layers);
  ASSERT_EQ(c.layers.size(), size_t(e.layers));
  EXPECT_EQ(c.family, e.family);
  EXPECT_EQ(c.hidden_size, e.hidden);
  EXPECT_EQ(c.vocab_size, e.vocab);
  EXPECT_EQ(c.max_position_embeddings, e.max_pos);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(GlobalLayers(c), e.globals);
  EXPECT_EQ(c.NumGlobalLayers(), int(e.globals.size()));
  EXPECT_EQ(c.NumSlidingLayers(), e.layers - int(e.globals.size()));
  EXPECT_EQ(c.eos_token_ids, e.eos);
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(RoundBf16(c.EmbeddingScale()), e.bf16_embedding_scale);
  EXPECT_FLOAT_EQ(c.attn_logit_softcap, e.attn_softcap);
  EXPECT_FLOAT_EQ(c.final_logit_softcap, e.final_softcap);
  if (e.qpas > 0) {
    EXPECT_FLOAT_EQ(c.attention_scale, 1.0f / std::sqrt(e.qpas));
  } else {
    EXPECT_EQ(c.attention_scale, 1.0f);
  }
  // Norm form and the extra Gemma 3/4 norms (§0).
  EXPECT_EQ(c.norm_weight_plus_one, e.family != ModelFamily::kGemma4);
  EXPECT_EQ(c.qk_norm, e.family != ModelFamily::kGemma2);
  EXPECT_EQ(c.v_norm, e.family == ModelFamily::kGemma4);
  EXPECT_EQ(c.layer_scalar, e.family == ModelFamily::kGemma4);

  for (int i = 0; i < e.layers; ++i) {
    SCOPED_TRACE(i);
    const LayerConfig& l = c.layers[i];
    EXPECT_EQ(l.num_heads, e.heads);
    if (l.is_sliding()) {
      EXPECT_EQ(l.num_kv_heads, e.sliding_kv);
      EXPECT_EQ(l.head_dim, e.sliding_head_dim);
      EXPECT_EQ(l.sliding_window, e.window);
      EXPECT_EQ(l.rope.type, RopeType::kDefault);
      EXPECT_FLOAT_EQ(l.rope.theta, e.sliding_theta);
      EXPECT_FLOAT_EQ(l.rope.factor, 1.0f);
      EXPECT_EQ(l.rope.RotatedPairs(l.head_dim), e.sliding_head_dim / 2);
      EXPECT_FALSE(l.k_eq_v);
    } else {
      EXPECT_EQ(l.num_kv_heads, e.global_kv);
      EXPECT_EQ(l.head_dim, e.global_head_dim);
      EXPECT_EQ(l.sliding_window, 0);
      EXPECT_EQ(l.rope.type, e.global_rope);
      EXPECT_FLOAT_EQ(l.rope.theta, e.global_theta);
      EXPECT_FLOAT_EQ(l.rope.factor, e.global_factor);
      EXPECT_EQ(l.rope.RotatedPairs(l.head_dim), e.global_rotated_pairs);
      EXPECT_EQ(l.k_eq_v, e.k_eq_v);
    }
    if (l.owns_kv()) EXPECT_EQ(l.intermediate_size, e.intermediate);
  }
}

INSTANTIATE_TEST_SUITE_P(ConfigOfficial, ConfigOfficialTest, ::testing::ValuesIn(OfficialConfigs()),
                         [](const auto& info) {
                           std::string n = info.param.dir;
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// E2B (§4.10): layers 15-34 reuse KV; sliding ones read layer 13, global ones
// layer 14; those shared layers get the double-wide 12288 MLP.
TEST(ConfigTest, Gemma4E2BSharesKvAndWidensSharedMlp) {
  ModelConfig c = LoadOrDie("gemma-4-E2B-it");
  ASSERT_EQ(c.layers.size(), 35u);
  EXPECT_EQ(c.num_kv_shared_layers, 20);
  EXPECT_EQ(c.FirstKvSharedLayer(), 15);
  EXPECT_EQ(c.NumKvLayers(), 15);
  for (int i = 0; i < 35; ++i) {
    SCOPED_TRACE(i);
    const LayerConfig& l = c.layers[i];
    if (i < 15) {
      EXPECT_EQ(l.kv_source_layer, -1);
      EXPECT_EQ(l.intermediate_size, 6144);
    } else {
      EXPECT_EQ(l.kv_source_layer, l.is_sliding() ? 13 : 14);
      EXPECT_EQ(l.intermediate_size, 12288);
    }
  }
  EXPECT_TRUE(c.HasPerLayerEmbeddings());
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
  EXPECT_EQ(c.vocab_size_per_layer_input, 262144);
  EXPECT_FALSE(c.HasMoe());
  // KV-owning layers by kind (§9.5): 12 sliding + 3 global.
  int sliding_owners = 0, global_owners = 0;
  for (const LayerConfig& l : c.layers) {
    if (l.owns_kv()) (l.is_sliding() ? sliding_owners : global_owners)++;
  }
  EXPECT_EQ(sliding_owners, 12);
  EXPECT_EQ(global_owners, 3);
}

TEST(ConfigTest, Gemma4E4BSharesKvWithoutWideMlp) {
  ModelConfig c = LoadOrDie("gemma-4-E4B-it");
  ASSERT_EQ(c.layers.size(), 42u);
  EXPECT_EQ(c.FirstKvSharedLayer(), 24);
  EXPECT_EQ(c.NumKvLayers(), 24);
  for (int i = 24; i < 42; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(c.layers[i].kv_source_layer, c.layers[i].is_sliding() ? 22 : 23);
    EXPECT_EQ(c.layers[i].intermediate_size, 10240);
  }
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
}

TEST(ConfigTest, Gemma4MoeEveryLayer) {
  ModelConfig c = LoadOrDie("gemma-4-26B-A4B-it");
  EXPECT_TRUE(c.HasMoe());
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.top_k_experts, 8);
  EXPECT_EQ(c.moe_intermediate_size, 704);
  for (const LayerConfig& l : c.layers) {
    EXPECT_TRUE(l.moe);
    EXPECT_EQ(l.intermediate_size, 2112);
    EXPECT_TRUE(l.owns_kv());
  }
  EXPECT_FALSE(c.HasPerLayerEmbeddings());
  EXPECT_EQ(c.NumKvLayers(), 30);
  // Global q_proj/k_proj rows (§7.2 table): 8192 and 1024.
  EXPECT_EQ(c.layers[5].q_dim(), 8192);
  EXPECT_EQ(c.layers[5].kv_dim(), 1024);
  EXPECT_EQ(c.layers[0].kv_dim(), 2048);
}

TEST(ConfigTest, Gemma4DenseHasNoMoe) {
  ModelConfig c = LoadOrDie("gemma-4-31B-it");
  EXPECT_FALSE(c.HasMoe());
  EXPECT_FALSE(c.HasPerLayerEmbeddings());
  for (const LayerConfig& l : c.layers) EXPECT_FALSE(l.moe);
  EXPECT_EQ(c.layers[59].q_dim(), 16384);
  EXPECT_EQ(c.layers[59].kv_dim(), 2048);
  EXPECT_TRUE(c.nested_text_config);
  EXPECT_EQ(c.model_type, "gemma4");
}

TEST(ConfigTest, LoadsFileOrDirectory) {
  absl::StatusOr<ModelConfig> from_file = LoadModelConfig(ConfigDir("gemma-3-1b-it") + "/config.json");
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->num_layers, 26);
  EXPECT_FALSE(from_file->nested_text_config);
  absl::StatusOr<ModelConfig> missing = LoadModelConfig("/nonexistent/facet-config");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/facet-config"));
}

TEST(ConfigTest, DescribeHasOneLinePerLayerKind) {
  ModelConfig c = LoadOrDie("gemma-4-E2B-it");
  std::string d = DescribeConfig(c);
  // Model line + 4 kinds: own/shared x sliding/global.
  EXPECT_EQ(std::count(d.begin(), d.end(), '\n'), 5) << d;
  EXPECT_THAT(d, HasSubstr("12 x sliding"));
  EXPECT_THAT(d, HasSubstr("KV from layer 13"));
  EXPECT_THAT(d, HasSubstr("16 x sliding"));
  EXPECT_THAT(d, HasSubstr("mlp 12288"));
  std::string g2 = DescribeConfig(LoadOrDie("gemma-2-27b"));
  EXPECT_THAT(g2, HasSubstr("23 x sliding"));
  EXPECT_THAT(g2, HasSubstr("attn softcap 50"));
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ParseModelConfig(j.dump(), "test/config.json"); }

json MinimalGemma4Text() {
  return {
      {"model_type", "gemma4_text"}, {"hidden_size", 64},        {"num_hidden_layers", 8}, {"intermediate_size", 128},
      {"num_attention_heads", 4},    {"num_key_value_heads", 2}, {"head_dim", 16},         {"global_head_dim", 32}};
}

// Keys absent from a gemma4_text config take Gemma4TextConfig defaults: the
// 5:1 pattern with the last layer forced global, proportional RoPE with 0.25,
// PLE 256, window 512, no softcap.
TEST(ConfigTest, Gemma4DefaultsWhenKeysAbsent) {
  absl::StatusOr<ModelConfig> c = Parse(MinimalGemma4Text());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(GlobalLayers(*c), (std::vector<int>{5, 7}));
  const LayerConfig& g = c->layers[5];
  EXPECT_EQ(g.rope.type, RopeType::kProportional);
  EXPECT_FLOAT_EQ(g.rope.partial_rotary_factor, 0.25f);
  EXPECT_FLOAT_EQ(g.rope.theta, 1e6f);
  EXPECT_EQ(g.rope.RotatedPairs(32), 4);
  EXPECT_EQ(g.num_kv_heads, 2);  // no K=V: global layers keep num_key_value_heads
  EXPECT_EQ(c->layers[0].sliding_window, 512);
  EXPECT_FLOAT_EQ(c->layers[0].rope.theta, 1e4f);
  EXPECT_EQ(c->hidden_size_per_layer_input, 256);
  EXPECT_EQ(c->final_logit_softcap, 0.0f);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{1});
}

TEST(ConfigTest, Gemma4IgnoresGlobalKvHeadsWithoutKEqV) {
  json j = MinimalGemma4Text();
  j["num_global_key_value_heads"] = 1;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers[5].num_kv_heads, 2);
  j["attention_k_eq_v"] = true;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers[5].num_kv_heads, 1);
  EXPECT_TRUE(c->layers[5].k_eq_v);
  EXPECT_FALSE(c->layers[4].k_eq_v);
  EXPECT_EQ(c->layers[4].num_kv_heads, 2);
  // query_pre_attn_scalar means nothing to Gemma 4.
  j["query_pre_attn_scalar"] = 64;
  EXPECT_EQ(Parse(j)->attention_scale, 1.0f);
}

TEST(ConfigTest, Gemma4ForcesLastLayerGlobal) {
  json j = MinimalGemma4Text();
  j["num_hidden_layers"] = 4;
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "sliding_attention"};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(GlobalLayers(*c), (std::vector<int>{1, 3}));
}

// Gemma 3 keeps its last layer sliding when the pattern says so (1B: layer 25).
TEST(ConfigTest, Gemma3DoesNotForceLastLayerGlobal) {
  ModelConfig c = LoadOrDie("gemma-3-1b-it");
  EXPECT_TRUE(c.layers.back().is_sliding());
}

// Newer transformers spell Gemma 3 RoPE as rope_parameters per layer type,
// keeping the legacy theta keys beside them.
TEST(ConfigTest, Gemma3RopeParametersPerLayerType) {
  json j = ReadJson("gemma-3-4b-it")["text_config"];
  j.erase("rope_scaling");
  j["rope_theta"] = 1e6;
  j["rope_local_base_freq"] = 1e4;
  j["rope_parameters"] = {{"full_attention", {{"factor", 8.0}, {"rope_type", "linear"}}},
                          {"sliding_attention", {{"rope_type", "default"}}}};
  j["model_type"] = "gemma3_text";
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layers[5].rope.type, RopeType::kLinear);
  EXPECT_FLOAT_EQ(c->layers[5].rope.factor, 8.0f);
  EXPECT_FLOAT_EQ(c->layers[5].rope.theta, 1e6f);
  EXPECT_EQ(c->layers[0].rope.type, RopeType::kDefault);
  EXPECT_FLOAT_EQ(c->layers[0].rope.theta, 1e4f);
  EXPECT_FALSE(c->nested_text_config);
  EXPECT_EQ(c->vocab_size, 262208);  // Gemma3TextConfig default
}

TEST(ConfigTest, Gemma3PatternKeyAndLegacyScalingType) {
  json j = ReadJson("gemma-3-1b-it");
  j["sliding_window_pattern"] = 2;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(GlobalLayers(*c), Every(1, 2, 25));
  EXPECT_EQ(c->layers[1].rope.type, RopeType::kLinear);
  EXPECT_FLOAT_EQ(c->layers[1].rope.factor, 4.0f);
  EXPECT_EQ(c->layers[0].rope.type, RopeType::kDefault);  // sliding layers never scaled
}

// Gemma 2 softcaps: an absent key is the default (50 / 30), null turns it off.
TEST(ConfigTest, Gemma2SoftcapAbsentVersusNull) {
  json j = ReadJson("gemma-2-9b");
  j.erase("attn_logit_softcapping");
  j["final_logit_softcapping"] = nullptr;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attn_logit_softcap, 50.0f);
  EXPECT_EQ(c->final_logit_softcap, 0.0f);
}

TEST(ConfigTest, EosIntOrList) {
  json j = ReadJson("gemma-2-9b");
  j["eos_token_id"] = 7;
  EXPECT_EQ(Parse(j)->eos_token_ids, std::vector<int>{7});
  j["eos_token_id"] = {1, 107, 5};
  EXPECT_EQ(Parse(j)->eos_token_ids, (std::vector<int>{1, 107, 5}));
  EXPECT_TRUE(Parse(j)->IsEos(107));
  EXPECT_FALSE(Parse(j)->IsEos(106));
}

// --- bad input ---

void ExpectInvalid(const absl::StatusOr<ModelConfig>& c, const std::vector<std::string>& fragments) {
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  std::string msg(c.status().message());
  EXPECT_THAT(msg, HasSubstr("test/config.json")) << msg;
  for (const std::string& f : fragments) EXPECT_THAT(msg, HasSubstr(f));
}

TEST(ConfigErrorTest, MalformedJson) {
  ExpectInvalid(ParseModelConfig("{\"model_type\": \"gemma2\",", "test/config.json"), {"malformed JSON"});
  ExpectInvalid(ParseModelConfig("", "test/config.json"), {"malformed JSON"});
  ExpectInvalid(ParseModelConfig("[1, 2]", "test/config.json"), {"JSON object"});
  ExpectInvalid(ParseModelConfig("\"\xff\xfe\"", "test/config.json"), {"malformed JSON"});
}

TEST(ConfigErrorTest, ModelType) {
  json j = ReadJson("gemma-2-9b");
  j.erase("model_type");
  ExpectInvalid(Parse(j), {"model_type", "missing"});
  j["model_type"] = "llama";
  ExpectInvalid(Parse(j), {"model_type", "llama"});
  j["model_type"] = 3;
  ExpectInvalid(Parse(j), {"model_type", "expected a string"});
  json v = ReadJson("gemma-3-4b-it");
  v["text_config"]["model_type"] = "gemma2";
  ExpectInvalid(Parse(v), {"text_config.model_type", "gemma3_text"});
  v.erase("text_config");
  ExpectInvalid(Parse(v), {"text_config", "missing"});
  v["text_config"] = "nope";
  ExpectInvalid(Parse(v), {"text_config", "expected an object"});
}

TEST(ConfigErrorTest, MissingRequiredField) {
  for (const char* key : {"hidden_size", "num_hidden_layers", "intermediate_size"}) {
    json j = ReadJson("gemma-4-31B-it");
    j["text_config"].erase(key);
    ExpectInvalid(Parse(j), {std::string("text_config.") + key, "missing"});
  }
}

TEST(ConfigErrorTest, WrongType) {
  json j = ReadJson("gemma-3-1b-it");
  j["num_attention_heads"] = "4";
  ExpectInvalid(Parse(j), {"num_attention_heads", "expected an integer"});
  j = ReadJson("gemma-3-1b-it");
  j["head_dim"] = 255.5;
  ExpectInvalid(Parse(j), {"head_dim", "expected an integer"});
  j = ReadJson("gemma-3-1b-it");
  j["rope_theta"] = "big";
  ExpectInvalid(Parse(j), {"rope_theta", "expected a number"});
  j = ReadJson("gemma-4-E2B-it");
  j["text_config"]["use_double_wide_mlp"] = 1;
  ExpectInvalid(Parse(j), {"text_config.use_double_wide_mlp", "true or false"});
  j = ReadJson("gemma-4-E2B-it");
  j["text_config"]["layer_types"] = "sliding_attention";
  ExpectInvalid(Parse(j), {"layer_types", "expected a list"});
  j = ReadJson("gemma-4-E2B-it");
  j["eos_token_id"] = {1, "x"};
  ExpectInvalid(Parse(j), {"eos_token_id"});
  j = ReadJson("gemma-4-E2B-it");
  j["text_config"]["rope_parameters"]["full_attention"]["rope_theta"] = "1e6";
  ExpectInvalid(Parse(j), {"text_config.rope_parameters.full_attention.rope_theta"});
}

TEST(ConfigErrorTest, InconsistentValues) {
  json j = ReadJson("gemma-2-9b");
  j["num_key_value_heads"] = 3;
  ExpectInvalid(Parse(j), {"num_key_value_heads", "not a multiple"});

  j = ReadJson("gemma-3-270m");
  j["layer_types"].erase(0);
  ExpectInvalid(Parse(j), {"layer_types", "17 entries", "18"});
  j = ReadJson("gemma-3-270m");
  j["layer_types"][3] = "chunked_attention";
  ExpectInvalid(Parse(j), {"layer_types", "entry 3", "chunked_attention"});

  j = ReadJson("gemma-4-31B-it");
  j["text_config"]["num_global_key_value_heads"] = 5;
  ExpectInvalid(Parse(j), {"num_global_key_value_heads", "not a multiple"});

  j = ReadJson("gemma-4-E2B-it");
  j["text_config"]["num_kv_shared_layers"] = 35;
  ExpectInvalid(Parse(j), {"num_kv_shared_layers"});
  // Sharing layers that begin before any global layer exists has no source.
  j["text_config"]["num_kv_shared_layers"] = 32;
  ExpectInvalid(Parse(j), {"num_kv_shared_layers", "no earlier non-shared global"});

  j = ReadJson("gemma-2-9b");
  j["num_hidden_layers"] = 2000000000;
  ExpectInvalid(Parse(j), {"num_hidden_layers", "must be in"});
  j["num_hidden_layers"] = 0;
  ExpectInvalid(Parse(j), {"num_hidden_layers"});

  j = ReadJson("gemma-2-9b");
  j["head_dim"] = -256;
  ExpectInvalid(Parse(j), {"head_dim", "positive"});
  j = ReadJson("gemma-2-9b");
  j["sliding_window"] = 0;
  ExpectInvalid(Parse(j), {"sliding_window", "positive"});
  j = ReadJson("gemma-2-9b");
  j["eos_token_id"] = 256000;
  ExpectInvalid(Parse(j), {"eos_token_id", "outside the vocabulary"});
  j = ReadJson("gemma-2-9b");
  j["query_pre_attn_scalar"] = 0;
  ExpectInvalid(Parse(j), {"query_pre_attn_scalar"});
}

TEST(ConfigErrorTest, UnsupportedFeatures) {
  json j = ReadJson("gemma-3-1b-it");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  ExpectInvalid(Parse(j), {"rope_scaling.rope_type", "yarn"});
  j = ReadJson("gemma-4-31B-it");
  j["text_config"]["rope_parameters"]["sliding_attention"]["partial_rotary_factor"] = 0.5;
  ExpectInvalid(Parse(j), {"partial_rotary_factor", "proportional"});
  j = ReadJson("gemma-4-31B-it");
  j["text_config"]["rope_parameters"]["full_attention"]["partial_rotary_factor"] = 1.5;
  ExpectInvalid(Parse(j), {"partial_rotary_factor", "(0, 1]"});
  j = ReadJson("gemma-2-9b");
  j["hidden_activation"] = "silu";
  ExpectInvalid(Parse(j), {"hidden_activation", "silu"});
  j = ReadJson("gemma-3-270m");
  j["use_bidirectional_attention"] = true;
  ExpectInvalid(Parse(j), {"use_bidirectional_attention"});
}

TEST(ConfigErrorTest, MoeFields) {
  json j = ReadJson("gemma-4-26B-A4B-it");
  j["text_config"].erase("num_experts");
  ExpectInvalid(Parse(j), {"text_config.num_experts", "enable_moe_block"});
  j = ReadJson("gemma-4-26B-A4B-it");
  j["text_config"]["top_k_experts"] = 200;
  ExpectInvalid(Parse(j), {"top_k_experts", "exceeds"});
  j = ReadJson("gemma-4-26B-A4B-it");
  j["text_config"]["moe_intermediate_size"] = 0;
  ExpectInvalid(Parse(j), {"moe_intermediate_size", "positive"});
}

// ValidateModelConfig guards configs built elsewhere (the GGUF reader).
TEST(ConfigErrorTest, ValidateCatchesBrokenLayers) {
  ModelConfig good = LoadOrDie("gemma-4-E2B-it");
  ASSERT_TRUE(ValidateModelConfig(good).ok());
  auto expect_bad = [](const ModelConfig& c, const std::string& fragment) {
    absl::Status s = ValidateModelConfig(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr(fragment));
  };
  ModelConfig c = good;
  c.layers[0].sliding_window = 0;
  expect_bad(c, "layer 0 (sliding)");
  c = good;
  c.layers[4].sliding_window = 512;
  expect_bad(c, "global layer has sliding_window");
  c = good;
  c.layers[20].kv_source_layer = 14;  // 20 is sliding, 14 global
  expect_bad(c, "different attention kind");
  c = good;
  c.layers[20].kv_source_layer = 25;
  expect_bad(c, "not an earlier layer");
  c = good;
  c.layers[20].kv_source_layer = 16;  // itself a sharer
  expect_bad(c, "does not own its KV");
  c = good;
  c.layers.pop_back();
  expect_bad(c, "layer configs");
  c = good;
  c.layers[3].num_kv_heads = 3;
  expect_bad(c, "not a multiple");
  c = good;
  c.layers[3].rope.partial_rotary_factor = 0.5f;
  expect_bad(c, "proportional");
  c = good;
  c.num_kv_shared_layers = 19;
  expect_bad(c, "num_kv_shared_layers");
  c = good;
  c.layers[0].moe = true;
  expect_bad(c, "top_k_experts");
}

// Every key of every official config, replaced by values of the wrong type or
// range, must give OK or an error naming the file — never a crash.
TEST(ConfigErrorTest, MutatedConfigsNeverCrash) {
  const std::vector<json> replacements = {nullptr, "x", -1, 0, 1.5, json::array(), json::object(), 1e300, true};
  int errors = 0, total = 0;
  for (const Official& o : OfficialConfigs()) {
    json base = ReadJson(o.dir);
    bool nested = base.contains("text_config");
    json& keys_of = nested ? base["text_config"] : base;
    std::vector<std::string> keys;
    for (auto it = keys_of.begin(); it != keys_of.end(); ++it) keys.push_back(it.key());
    for (const std::string& key : keys) {
      for (const json& r : replacements) {
        json j = base;
        (nested ? j["text_config"] : j)[key] = r;
        absl::StatusOr<ModelConfig> c = Parse(j);
        ++total;
        if (!c.ok()) {
          ++errors;
          EXPECT_THAT(std::string(c.status().message()), HasSubstr("test/config.json"));
        } else {
          EXPECT_TRUE(ValidateModelConfig(*c).ok());
        }
      }
    }
  }
  EXPECT_GT(errors, total / 4);  // most of these are rejected
}

}  // namespace
}  // namespace facet
