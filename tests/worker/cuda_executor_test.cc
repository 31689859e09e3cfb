// The engine loop with the CUDA executor (worker/cuda_executor.h): several
// golden prompts served concurrently (batched prefill, batched decode from
// CUDA graphs, block tables mirrored from the engine's scheduler) give the
// greedy tokens HF transformers gave, wherever the reference's margin is
// clear of bf16 noise (tests/worker/cuda_golden.h); and GenerateOn("cuda").
// Label gpu: skips without a GPU, except the check of the GPU-less error.
#include "worker/cuda_executor.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "core/thread_pool.h"
#include "kernels/cuda/runtime.h"
#include "models/model.h"
#include "tests/worker/cuda_golden.h"
#include "worker/device_registry.h"

namespace facet {
namespace {

#define SKIP_WITHOUT_GPU()                                                              \
  if (cuda::DeviceCount() == 0) {                                                       \
    GTEST_SKIP() << "no CUDA device (" << cuda::DeviceDescription(0)                    \
                 << "): run scripts/gpu-check-engine.sh on a GPU machine";             \
  }

EngineOptions SmallEngine() {
  EngineOptions o;
  o.block_size = 4;
  o.num_blocks_global = 96;
  o.num_blocks_sliding = 96;
  o.max_batch_tokens = 16;  // the 20-token prompt arrives in two chunks
  o.max_running = 4;
  return o;
}

TEST(CudaExecutorTest, NoDeviceIsUnavailable) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present; this checks the GPU-less path";
  ThreadPool pool(1);
  auto m = Model::Load(golden::Dir("gemma3"), &pool);
  ASSERT_TRUE(m.ok()) << m.status();
  auto e = CudaExecutor::Create(std::shared_ptr<Model>(std::move(*m)), SmallEngine());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable) << e.status();
}

TEST(CudaExecutorTest, RegisteredAsCuda) {
  const std::vector<std::string> built = BuiltDevices();
  EXPECT_NE(std::find(built.begin(), built.end(), "cuda"), built.end());
  EXPECT_TRUE(CheckDevice("cuda").ok());
}

class CudaEngineTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaEngineTest, ConcurrentGoldenPromptsGiveReferenceTokens) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  ThreadPool pool(2);
  auto loaded = Model::Load(golden::Dir(name), &pool);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<Model> model(std::move(*loaded));
  const int64_t V = model->config().vocab_size;
  std::vector<golden::Prompt> prompts = golden::Read(name);
  ASSERT_FALSE(prompts.empty());

  auto exec = CudaExecutor::Create(model, SmallEngine());
  ASSERT_TRUE(exec.ok()) << exec.status();
  CudaExecutor* raw = exec->get();
  auto engine = CreateEngine(model, nullptr, SmallEngine(), std::move(*exec));
  ASSERT_TRUE(engine.ok()) << engine.status();

  // Every prompt twice: four sequences share the batch.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::vector<int32_t>> got(2 * prompts.size());
  std::vector<absl::Status> errors(got.size());
  size_t done = 0;
  for (size_t r = 0; r < got.size(); ++r) {
    const golden::Prompt& g = prompts[r % prompts.size()];
    EngineRequest req;
    req.request_id = "r" + std::to_string(r);
    req.prompt = g.ids;
    req.sampling.max_tokens = int32_t(g.greedy.size());
    ASSERT_TRUE((*engine)
                    ->Submit(std::move(req),
                             [&, r](const TokenEvent& ev) {
                               std::lock_guard<std::mutex> lock(mu);
                               got[r].insert(got[r].end(), ev.ids.begin(), ev.ids.end());
                               if (ev.finished) {
                                 errors[r] = ev.error;
                                 ++done;
                                 cv.notify_one();
                               }
                             })
                    .ok());
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return done == got.size(); }))
        << "the engine did not finish";
  }
  (*engine)->Shutdown(/*drain=*/true);
  size_t checked = 0;
  for (size_t r = 0; r < got.size(); ++r) {
    const golden::Prompt& g = prompts[r % prompts.size()];
    ASSERT_TRUE(errors[r].ok()) << errors[r];
    EXPECT_EQ(got[r].size(), g.greedy.size()) << "request " << r;
    const size_t clear = std::min(golden::ClearGreedyPrefix(g, V), got[r].size());
    for (size_t k = 0; k < clear; ++k) {
      EXPECT_EQ(got[r][k], g.greedy[k]) << name << " request " << r << " token " << k;
      ++checked;
    }
  }
  EXPECT_GT(raw->gpu().graph_launches(), 0) << "no decode step replayed a CUDA graph";
  std::printf("[gpu engine] %s: %zu greedy tokens with clear margins matched; %lld graph "
              "launches, %lld graphs\n",
              name.c_str(), checked, (long long)raw->gpu().graph_launches(),
              (long long)raw->gpu().graphs_captured());
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, CudaEngineTest,
                         ::testing::Values("gemma2", "gemma3", "gemma4", "gemma4_moe"));

// GenerateOn("cuda") through the registry: the device's greedy tokens, and
// the same refusals as Generate.
TEST(CudaExecutorTest, GenerateOnCudaMatchesReference) {
  SKIP_WITHOUT_GPU();
  ThreadPool pool(2);
  auto model = Model::Load(golden::Dir("gemma3"), &pool);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t V = (*model)->config().vocab_size;
  std::vector<golden::Prompt> prompts = golden::Read("gemma3");
  ASSERT_FALSE(prompts.empty());
  const golden::Prompt& g = prompts[0];
  SamplingParams sp;
  sp.max_tokens = int32_t(g.greedy.size());
  auto r = GenerateOn("cuda", **model, g.ids, sp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids.size(), g.greedy.size());
  EXPECT_EQ(r->finish, FinishReason::kLength);
  const size_t clear = std::min(golden::ClearGreedyPrefix(g, V), r->ids.size());
  for (size_t k = 0; k < clear; ++k) EXPECT_EQ(r->ids[k], g.greedy[k]) << "token " << k;
  EXPECT_GT(r->prefill_seconds, 0);

  std::vector<int32_t> bad = {2, int32_t(V)};
  EXPECT_EQ(GenerateOn("cuda", **model, bad, sp).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace facet
