// Batch invariance on the real Gemma 3 270M (Q4_K_M GGUF: Q5_0, Q8_0, Q4_K
// and Q6_K matrices). A token's logits must not depend on what else shares
// its forward pass, so greedy text does not depend on server load:
// * model level: the logits of every prompt position are the same bits
//   whether the prompt runs as one prefill, in chunks, or token by token;
// * engine level: a request's greedy tokens alone equal its tokens while
//   batched with other requests (decode rows in the same steps as prefill
//   chunks of 64 tokens or more) under two different step budgets.
// Skips when scripts/fetch-demo-model.sh has not fetched the model.
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/thread_pool.h"
#include "models/kv_cache.h"
#include "models/model.h"
#include "worker/engine.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

// Where scripts/fetch-demo-model.sh puts the model (as tests/models/gguf_model_test.cc).
std::string RealModelPath() {
  const char* env = std::getenv("FACET_DEMO_GGUF");
  if (env && *env) return env;
  const char* cache = std::getenv("FACET_CACHE");
  const char* home = std::getenv("HOME");
  std::string base = cache && *cache ? cache : std::string(home ? home : "/root") + "/.cache/facet";
  return base + "/gemma3-270m/gemma-3-270m-q4_k_m.gguf";
}

// Collects a request's events; Wait() returns when it has finished.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> ids;
  bool finished = false;
  EngineFinish finish = EngineFinish::kNone;

  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      if (e.finished) {
        finished = true;
        finish = e.finish;
        cv.notify_all();
      }
    };
  }
  bool Wait(std::chrono::milliseconds timeout = 300s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return finished; });
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return ids.size();
  }
};

// Deterministic pseudo-text: <bos> then ids spread over the vocabulary.
std::vector<int32_t> Prompt(int seed, int len, int vocab) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = 3 + (seed * 131 + i * 37 + i * i * 7) % (vocab - 3);
  p[0] = 2;
  return p;
}

class RealModelBatchInvarianceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(RealModelPath())) {
      GTEST_SKIP() << "real model not fetched (run scripts/fetch-demo-model.sh): " << RealModelPath();
    }
    auto m = Model::Load(RealModelPath(), &pool_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  ThreadPool pool_{2};
  std::shared_ptr<Model> model_;
};

// Logits [n, V] of `prompt` fed in chunks of the given sizes (their sum is
// the prompt length), each chunk one Forward over a shared cache.
std::vector<float> ChunkedLogits(Model& model, const std::vector<int32_t>& prompt, const std::vector<int>& chunks) {
  const int64_t V = model.config().vocab_size;
  KvCache cache(model.config(), int64_t(prompt.size()) + 1);
  std::vector<float> all, part;
  size_t at = 0;
  for (int n : chunks) {
    EXPECT_TRUE(model.Forward(std::span<const int32_t>(prompt.data() + at, size_t(n)), &cache, /*all_logits=*/true, &part).ok());
    EXPECT_EQ(int64_t(part.size()), n * V);
    all.insert(all.end(), part.begin(), part.end());
    at += size_t(n);
  }
  EXPECT_EQ(at, prompt.size());
  return all;
}

TEST_F(RealModelBatchInvarianceTest, LogitsDoNotDependOnHowThePromptIsSplit) {
  const int64_t V = model_->config().vocab_size;
  const std::vector<int32_t> prompt = Prompt(3, 100, int(V));
  const std::vector<float> whole = ChunkedLogits(*model_, prompt, {100});
  // Prefill chunks on both sides of every old path switch (m = 64), then
  // single-token decode steps.
  std::vector<int> split = {70, 17, 5};
  for (int i = 0; i < 8; ++i) split.push_back(1);
  const std::vector<float> chunked = ChunkedLogits(*model_, prompt, split);
  ASSERT_EQ(whole.size(), chunked.size());
  for (int64_t t = 0; t < int64_t(prompt.size()); ++t) {
    EXPECT_EQ(std::memcmp(whole.data() + t * V, chunked.data() + t * V, sizeof(float) * V), 0)
        << "position " << t << ": logits differ between one 100-token prefill and chunks 70+17+5+1x8";
  }
}

TEST_F(RealModelBatchInvarianceTest, GreedyAloneEqualsBatched) {
  const int V = model_->config().vocab_size;
  // Lengths around and above the 64-token mark, and short ones that start
  // decoding while the long ones still prefill.
  const std::vector<int> lengths = {5, 70, 130, 12, 200, 65, 33, 150};
  const int kMaxTokens = 24;
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < lengths.size(); ++i) prompts.push_back(Prompt(int(i) + 1, lengths[i], V));

  auto make_engine = [&](int64_t max_batch_tokens) {
    EngineOptions opt;
    opt.kv_cache_bytes = int64_t(64) << 20;
    opt.max_batch_tokens = max_batch_tokens;
    auto e = CreateLocalEngine(model_, nullptr, opt);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  };
  auto request = [&](size_t i) {
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt = prompts[i];
    r.sampling.max_tokens = kMaxTokens;
    return r;
  };

  // Alone: one request at a time.
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = make_engine(512);
    for (size_t i = 0; i < prompts.size(); ++i) {
      Collector c;
      ASSERT_TRUE(engine->Submit(request(i), c.Sink()).ok());
      ASSERT_TRUE(c.Wait());
      ASSERT_EQ(c.finish, EngineFinish::kLength);
      alone.push_back(c.ids);
    }
  }
  // Batched: (a) a 64-token budget, all at once, so every step mixes
  // prefill chunks with decode rows; (b) a 512-token budget with the second
  // half submitted while the first half decodes.
  for (int64_t budget : {64, 512}) {
    SCOPED_TRACE("max_batch_tokens=" + std::to_string(budget));
    auto engine = make_engine(budget);
    std::vector<Collector> out(prompts.size());
    const size_t first = budget == 64 ? prompts.size() : prompts.size() / 2;
    for (size_t i = 0; i < first; ++i) ASSERT_TRUE(engine->Submit(request(i), out[i].Sink()).ok());
    if (first < prompts.size()) {
      const auto until = std::chrono::steady_clock::now() + 120s;
      while (out[0].Count() < 3 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
      for (size_t i = first; i < prompts.size(); ++i) ASSERT_TRUE(engine->Submit(request(i), out[i].Sink()).ok());
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_TRUE(out[i].Wait());
      EXPECT_EQ(out[i].finish, EngineFinish::kLength);
      EXPECT_EQ(out[i].ids, alone[i]) << "request " << i << " (prompt length " << lengths[i] << ")";
    }
  }
}

}  // namespace
}  // namespace facet
