// The GPU forward (models/cuda/cuda_model.h) against the HF golden logits of
// every architecture, CUDA-graph decode against direct launches, batched and
// padded decode against one sequence at a time, and bad input. Label gpu:
// without a GPU every test but the "no device" one skips, saying so.
#include "models/cuda/cuda_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <numeric>

#include "core/thread_pool.h"
#include "kernels/cuda/runtime.h"
#include "models/model.h"
#include "tests/worker/cuda_golden.h"

namespace facet {
namespace {

#define SKIP_WITHOUT_GPU()                                                              \
  if (cuda::DeviceCount() == 0) {                                                       \
    GTEST_SKIP() << "no CUDA device (" << cuda::DeviceDescription(0)                    \
                 << "): run scripts/gpu-check-engine.sh on a GPU machine";             \
  }

CudaModelOptions SmallOptions(bool graphs, bool kv_source = true) {
  CudaModelOptions o;
  o.block_size = 4;  // several blocks even for the golden models' short prompts
  o.num_blocks = {64, 64};
  o.max_tokens = 64;
  o.max_seqs = 4;
  o.max_logit_rows = 64;
  o.max_context = 128;
  o.cuda_graphs = graphs;
  o.kv_source = kv_source;
  return o;
}

// One sequence's step. Sequence `seq` of a step owns blocks seq·16 + j (so
// sequences never share a block), slot = block·block_size + offset.
struct SeqInput {
  std::vector<int32_t> tokens;
  int64_t pos0 = 0;
  int block_base = 0;
  bool all_logits = false;
};

CudaStep MakeStep(const CudaModel& m, const std::vector<SeqInput>& seqs) {
  const int64_t M = m.max_blocks_per_seq(), bs = m.options().block_size;
  CudaStep s;
  s.q_start = {0};
  for (int p = 0; p < kNumCudaPools; ++p) {
    if (m.options().num_blocks[p] > 0) s.tables[p].assign(seqs.size() * M, -1);
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqInput& q = seqs[i];
    const int64_t T0 = int64_t(s.tokens.size()), n = int64_t(q.tokens.size());
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = q.pos0 + t;
      s.tokens.push_back(q.tokens[t]);
      s.positions.push_back(int32_t(pos));
      for (int p = 0; p < kNumCudaPools; ++p) {
        if (m.options().num_blocks[p] > 0) s.slots[p].push_back((q.block_base + pos / bs) * bs + pos % bs);
      }
      if (q.all_logits || t == n - 1) s.logit_rows.push_back(int32_t(T0 + t));
    }
    s.q_start.push_back(int32_t(T0 + n));
    s.kv_len.push_back(int32_t(q.pos0 + n));
    for (int p = 0; p < kNumCudaPools; ++p) {
      if (m.options().num_blocks[p] == 0) continue;
      for (int64_t j = 0; j * bs < q.pos0 + n; ++j) s.tables[p][i * M + j] = int32_t(q.block_base + j);
    }
  }
  return s;
}

struct Loaded {
  std::unique_ptr<Model> cpu;
  std::unique_ptr<CudaModel> gpu;
};

Loaded Load(const std::string& name, bool graphs, ThreadPool* pool, bool kv_source = true) {
  Loaded l;
  auto m = Model::Load(golden::Dir(name), pool);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return l;
  l.cpu = std::move(*m);
  auto g = CudaModel::Create(l.cpu->config(), l.cpu->weights(), SmallOptions(graphs, kv_source));
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) l.gpu = std::move(*g);
  return l;
}

TEST(CudaModelTest, NoDeviceIsUnavailable) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present; this checks the GPU-less path";
  ThreadPool pool(1);
  auto m = Model::Load(golden::Dir("gemma3"), &pool);
  ASSERT_TRUE(m.ok()) << m.status();
  auto g = CudaModel::Create((*m)->config(), (*m)->weights(), SmallOptions(true));
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable) << g.status();
}

TEST(CudaModelTest, DecodeGraphBuckets) {
  EXPECT_EQ(DecodeGraphBucket(1, 64), 1);
  EXPECT_EQ(DecodeGraphBucket(3, 64), 4);
  EXPECT_EQ(DecodeGraphBucket(9, 64), 16);
  EXPECT_EQ(DecodeGraphBucket(17, 64), 24);
  EXPECT_EQ(DecodeGraphBucket(65, 256), 96);
  EXPECT_EQ(DecodeGraphBucket(30, 20), 30);  // never below the batch
  EXPECT_EQ(DecodeGraphBucket(5, 6), 6);     // capped at max_seqs
}

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaGoldenTest, PrefillAndGreedyDecodeMatchTransformers) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  ThreadPool pool(2);
  Loaded l = Load(name, /*graphs=*/true, &pool);
  ASSERT_TRUE(l.gpu);
  const int64_t V = l.cpu->config().vocab_size;
  std::vector<golden::Prompt> prompts = golden::Read(name);
  ASSERT_FALSE(prompts.empty()) << "no golden data for " << name;
  float worst = 0;
  size_t checked_tokens = 0;
  // Prompts run one after the other in separate blocks: the second one's
  // stale-free cache is part of the check.
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE("prompt " + std::to_string(p));
    const golden::Prompt& g = prompts[p];
    const int64_t n = int64_t(g.ids.size());
    ASSERT_EQ(int64_t(g.prefill_logits.size()), n * V);
    ASSERT_EQ(g.decode_logits.size() + V, g.greedy.size() * V);
    const int base = int(p) * 16;
    std::vector<float> logits;
    ASSERT_TRUE(l.gpu->Forward(MakeStep(*l.gpu, {{g.ids, 0, base, true}}), &logits).ok());
    ASSERT_EQ(int64_t(logits.size()), n * V);
    for (int64_t t = 0; t < n; ++t) {
      const float err = golden::RowErr(&logits[t * V], &g.prefill_logits[t * V], V);
      worst = std::max(worst, err);
      EXPECT_LT(err, golden::kBf16Tol) << name << " prefill position " << t;
    }
    const size_t clear = golden::ClearGreedyPrefix(g, V);
    if (clear > 0) EXPECT_EQ(golden::Argmax(&logits[(n - 1) * V], V), g.greedy[0]);
    for (size_t k = 0; k + 1 < g.greedy.size(); ++k) {
      // Feed the reference's token, so every step is compared on the same input.
      auto st = l.gpu->Forward(MakeStep(*l.gpu, {{{g.greedy[k]}, n + int64_t(k), base, false}}),
                               &logits);
      ASSERT_TRUE(st.ok()) << st;
      const float err = golden::RowErr(logits.data(), &g.decode_logits[k * V], V);
      worst = std::max(worst, err);
      EXPECT_LT(err, golden::kBf16Tol) << name << " decode step " << k;
      if (k + 1 < clear) {
        EXPECT_EQ(golden::Argmax(logits.data(), V), g.greedy[k + 1]) << name << " greedy step " << k;
        ++checked_tokens;
      }
    }
  }
  EXPECT_GT(l.gpu->graph_launches(), 0) << "decode steps never replayed a CUDA graph";
  std::printf("[gpu golden] %s: worst row error %.4f of the logit scale (tolerance %.2f); "
              "%zu greedy tokens with clear margins matched; %lld graph launches\n",
              name.c_str(), worst, golden::kBf16Tol, checked_tokens,
              (long long)l.gpu->graph_launches());
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, CudaGoldenTest,
                         ::testing::Values("gemma2", "gemma3", "gemma4", "gemma4_moe"));

// The same decode steps from a captured graph and from direct launches.
// Gemma 3's test model runs entirely on kernels whose work split does not
// depend on the graph's longest-context plan, so the logits are identical;
// Gemma 4's global layers use split-KV attention, whose split count the
// graph plans for the longest context: equal up to fp32 summation order.
TEST(CudaModelTest, GraphDecodeMatchesDirectLaunches) {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(2);
  for (const std::string name : {"gemma3", "gemma4"}) {
    SCOPED_TRACE(name);
    Loaded a = Load(name, true, &pool), b = Load(name, false, &pool);
    ASSERT_TRUE(a.gpu && b.gpu);
    const int64_t V = a.cpu->config().vocab_size;
    std::vector<int32_t> prompt = {2, 17, 31, 5, 9, 44, 12};
    std::vector<float> la, lb;
    ASSERT_TRUE(a.gpu->Forward(MakeStep(*a.gpu, {{prompt, 0, 0, false}}), &la).ok());
    ASSERT_TRUE(b.gpu->Forward(MakeStep(*b.gpu, {{prompt, 0, 0, false}}), &lb).ok());
    for (int step = 0; step < 6; ++step) {
      const int32_t next = golden::Argmax(la.data(), V);
      const int64_t pos = int64_t(prompt.size()) + step;
      ASSERT_TRUE(a.gpu->Forward(MakeStep(*a.gpu, {{{next}, pos, 0, false}}), &la).ok());
      ASSERT_TRUE(b.gpu->Forward(MakeStep(*b.gpu, {{{next}, pos, 0, false}}), &lb).ok());
      if (name == "gemma3") {
        EXPECT_EQ(la, lb) << "step " << step;
      } else {
        EXPECT_LT(golden::RowErr(la.data(), lb.data(), V), 1e-3f) << "step " << step;
      }
    }
    EXPECT_GT(a.gpu->graph_launches(), 0);
    EXPECT_EQ(b.gpu->graph_launches(), 0);
  }
}

// Three sequences decoded in one step (padded to a graph of 4, the padding
// row in the scratch block) give each sequence's logits from running alone.
TEST(CudaModelTest, BatchedPaddedDecodeMatchesSingleSequences) {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(2);
  for (const std::string name : {"gemma2", "gemma4_moe"}) {
    SCOPED_TRACE(name);
    Loaded l = Load(name, true, &pool);
    ASSERT_TRUE(l.gpu);
    const int64_t V = l.cpu->config().vocab_size;
    const std::vector<std::vector<int32_t>> prompts = {{2, 5, 7}, {2, 9, 11, 13, 15, 17, 19}, {2, 3}};
    const std::vector<int32_t> next = {21, 22, 23};
    std::vector<std::vector<float>> alone(3);
    std::vector<float> logits;
    for (int i = 0; i < 3; ++i) {  // alone: prefill, then one decode step
      ASSERT_TRUE(l.gpu->Forward(MakeStep(*l.gpu, {{prompts[i], 0, 16 * i, false}}), &logits).ok());
      ASSERT_TRUE(l.gpu->Forward(MakeStep(*l.gpu, {{{next[i]}, int64_t(prompts[i].size()), 16 * i, false}}),
                                 &alone[i]).ok());
    }
    // Again together, from fresh blocks (48 + ...), prefills batched too.
    std::vector<SeqInput> prefill, decode;
    for (int i = 0; i < 3; ++i) {
      prefill.push_back({prompts[i], 0, 48 + 5 * i, false});
      decode.push_back({{next[i]}, int64_t(prompts[i].size()), 48 + 5 * i, false});
    }
    ASSERT_TRUE(l.gpu->Forward(MakeStep(*l.gpu, prefill), &logits).ok());
    ASSERT_EQ(int64_t(logits.size()), 3 * V);
    ASSERT_TRUE(l.gpu->Forward(MakeStep(*l.gpu, decode), &logits).ok());
    ASSERT_EQ(int64_t(logits.size()), 3 * V);
    for (int i = 0; i < 3; ++i) {
      // Different GEMM row counts may pick different cuBLASLt kernels: bf16
      // outputs equal to within a rounding step or two.
      EXPECT_LT(golden::RowErr(&logits[i * V], alone[i].data(), V), 1e-2f) << "sequence " << i;
    }
  }
}

// Gemma 4 K = V global layers: caching the source u and rebuilding K in the
// attention kernel gives the logits of caching K and V (both round to bf16
// at different points: equal to a bf16 step), in half the global KV bytes.
TEST(CudaModelTest, KvSourceCacheMatchesFullCache) {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(2);
  for (const std::string name : {"gemma4", "gemma4_moe"}) {
    SCOPED_TRACE(name);
    Loaded a = Load(name, true, &pool, /*kv_source=*/true);
    Loaded b = Load(name, true, &pool, /*kv_source=*/false);
    ASSERT_TRUE(a.gpu && b.gpu);
    EXPECT_LT(a.gpu->kv_bytes(), b.gpu->kv_bytes());
    const int64_t V = a.cpu->config().vocab_size;
    std::vector<int32_t> prompt = {2, 40, 41, 42, 7, 9, 13, 100, 3, 5, 77, 4};  // past the window of 8
    std::vector<float> la, lb;
    ASSERT_TRUE(a.gpu->Forward(MakeStep(*a.gpu, {{prompt, 0, 0, true}}), &la).ok());
    ASSERT_TRUE(b.gpu->Forward(MakeStep(*b.gpu, {{prompt, 0, 0, true}}), &lb).ok());
    for (size_t t = 0; t < prompt.size(); ++t) {
      EXPECT_LT(golden::RowErr(&la[t * V], &lb[t * V], V), 1e-2f) << "position " << t;
    }
    for (int step = 0; step < 4; ++step) {
      const int32_t next = golden::Argmax(lb.data() + (step == 0 ? (prompt.size() - 1) * V : 0), V);
      const int64_t pos = int64_t(prompt.size()) + step;
      ASSERT_TRUE(a.gpu->Forward(MakeStep(*a.gpu, {{{next}, pos, 0, false}}), &la).ok());
      ASSERT_TRUE(b.gpu->Forward(MakeStep(*b.gpu, {{{next}, pos, 0, false}}), &lb).ok());
      EXPECT_LT(golden::RowErr(la.data(), lb.data(), V), 1e-2f) << "decode step " << step;
    }
  }
}

TEST(CudaModelTest, BadInputIsInvalidArgument) {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(1);
  Loaded l = Load("gemma3", true, &pool);
  ASSERT_TRUE(l.gpu);
  std::vector<float> logits;
  const CudaStep good = MakeStep(*l.gpu, {{{2, 5, 7}, 0, 0, false}});
  ASSERT_TRUE(l.gpu->Forward(good, &logits).ok());

  CudaStep s = good;
  s.tokens[1] = l.cpu->config().vocab_size;  // outside the vocabulary
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.slots[kSlidingPool][0] = 1 << 20;  // beyond the pool
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.logit_rows = {3};
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.kv_len[0] = 2;  // fewer cached positions than queries
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.positions[2] = 5;  // not the sequence's last cached position
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.tables[kGlobalPool][0] = -7;
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.tokens.assign(65, 2);  // beyond max_tokens
  EXPECT_EQ(l.gpu->Forward(s, &logits).code(), absl::StatusCode::kInvalidArgument);
  // The model still works after refusing.
  EXPECT_TRUE(l.gpu->Forward(good, &logits).ok());
}

}  // namespace
}  // namespace facet
