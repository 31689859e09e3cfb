// Tensor parallelism on a real GGUF (the cached demo Gemma 3 270M, Q4_K_M;
// skipped when scripts/fetch-demo-model.sh has not run). Quantized weights
// stay quantized per rank: rows as zero-copy views, o_proj/ffn_down columns
// as whole quant blocks. Logits are compared with dequantized weights: the
// quantized kernels round activations to int8 per block, a discontinuous
// step that turns the all-reduce's 1e-7 reordering into ~1 logit changes,
// so only the dequantized path has a meaningful bound (kRelTol, as in
// tp_golden_test.cc: fp32 reordering only).
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/thread_pool.h"
#include "models/model.h"
#include "parallel/communicator.h"
#include "tests/parallel/test_world.h"

namespace facet {
namespace {

constexpr float kRelTol = 1e-4f;

std::string DemoPath() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/facet/gemma3-270m/gemma-3-270m-q4_k_m.gguf";
}

bool HaveDemo() {
  struct stat st;
  return stat(DemoPath().c_str(), &st) == 0;
}

TEST(TpGguf, QuantizedShardsStayQuantized) {
  if (!HaveDemo()) GTEST_SKIP() << "demo model not cached";
  parallel::Communicator& w = parallel::TestWorld();
  ThreadPool pool(1);
  Model::LoadOptions opt;
  opt.tp = &w;
  auto m = Model::Load(DemoPath(), &pool, opt);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& full = (*m)->full_config();
  const LayerWeights& l0 = (*m)->weights().layers[0];
  EXPECT_EQ(l0.o.cols, full.layers[0].q_dim() / w.size());
  EXPECT_EQ(l0.down.cols, full.layers[0].intermediate_size / w.size());
  EXPECT_EQ(l0.q.rows, full.layers[0].q_dim() / w.size());
  EXPECT_NE(l0.o.format, WeightFormat::kF32);  // block-copied, not dequantized
  EXPECT_EQ((*m)->weights().lm_head.rows, full.vocab_size / w.size());
  KvCache cache((*m)->config(), 16);
  std::vector<float> logits;
  std::vector<int32_t> ids = {2, 818, 5279, 529, 7001, 563};
  ASSERT_TRUE((*m)->Forward(ids, &cache, false, &logits).ok());
  EXPECT_EQ(int64_t(logits.size()), full.vocab_size);
}

TEST(TpGguf, DequantizedMatchesSingleRank) {
  if (!HaveDemo()) GTEST_SKIP() << "demo model not cached";
  parallel::Communicator& w = parallel::TestWorld();
  ThreadPool pool(1);
  Model::LoadOptions ref_opt, opt;
  ref_opt.dequantize = opt.dequantize = true;
  opt.tp = &w;
  auto ref = Model::Load(DemoPath(), &pool, ref_opt);
  auto m = Model::Load(DemoPath(), &pool, opt);
  ASSERT_TRUE(ref.ok() && m.ok());
  const int64_t V = (*ref)->config().vocab_size;
  KvCache c1((*ref)->config(), 32), c2((*m)->config(), 32);
  std::vector<float> a, b;
  std::vector<int32_t> ids = {2, 818, 5279, 529, 7001, 563};
  ASSERT_TRUE((*ref)->Forward(ids, &c1, false, &a).ok());
  ASSERT_TRUE((*m)->Forward(ids, &c2, false, &b).ok());
  float worst = 0;
  for (int step = 0; step < 12; ++step) {
    for (int64_t i = 0; i < V; ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1 + std::fabs(a[i])));
    const int32_t ta = int32_t(std::max_element(a.begin(), a.end()) - a.begin());
    const int32_t tb = int32_t(std::max_element(b.begin(), b.end()) - b.begin());
    ASSERT_EQ(ta, tb) << "greedy step " << step;
    ASSERT_TRUE((*ref)->Forward(std::span<const int32_t>(&ta, 1), &c1, false, &a).ok());
    ASSERT_TRUE((*m)->Forward(std::span<const int32_t>(&tb, 1), &c2, false, &b).ok());
  }
  EXPECT_LT(worst, kRelTol);
  if (w.rank() == 0) std::printf("[ measured ] 270M dequantized tp=%d max rel logit error %.3g\n", w.size(), double(worst));
}

}  // namespace
}  // namespace facet
