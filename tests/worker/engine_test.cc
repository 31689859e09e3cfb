// The local serving engine on golden models: batched greedy decoding equals
// one-at-a-time decoding, cancellation/deadlines free KV blocks, the sliding
// pool stays bounded by the window, preemption under KV pressure still gives
// the same tokens, bad requests are refused.
#include "worker/engine.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "models/model.h"
#include "worker/generator.h"
#include "worker/paged_kv.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

std::string Golden(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

// Collects a request's events; Wait() returns when it has finished.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> ids;
  bool finished = false;
  EngineFinish finish = EngineFinish::kNone;
  int64_t events = 0;

  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      ++events;
      if (e.finished) {
        finished = true;
        finish = e.finish;
        cv.notify_all();
      }
    };
  }
  bool Wait(std::chrono::milliseconds timeout = 60s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return finished; });
  }
};

std::vector<int32_t> Prompt(int seed, int len, int vocab) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = 3 + (seed * 131 + i * 37) % (vocab - 3);
  p[0] = 2;
  return p;
}

void ExpectPoolsFull(const Engine& e) {
  for (const KvPoolStats& p : e.Stats().pools) EXPECT_EQ(p.free_blocks, p.total_blocks) << p.name;
}

class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto m = Model::Load(Golden(GetParam()), &pool_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  std::unique_ptr<Engine> MakeEngine(EngineOptions opt = {}) {
    if (opt.kv_cache_bytes == (int64_t(1) << 30)) opt.kv_cache_bytes = 8 << 20;
    auto e = CreateLocalEngine(model_, nullptr, opt);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  // Reference: the same prompt alone through the single-sequence generator.
  // A Model is not thread-safe: call this only while the engine is idle.
  std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int max_tokens) {
    SamplingParams sp;
    sp.max_tokens = max_tokens;
    auto r = Generate(*model_, prompt, sp);
    EXPECT_TRUE(r.ok());
    return r->ids;
  }
  ThreadPool pool_{2};
  std::shared_ptr<Model> model_;
};

TEST_P(EngineTest, SingleStreamEqualsGenerator) {
  auto engine = MakeEngine();
  for (int len : {3, 20, 40}) {
    Collector c;
    EngineRequest r;
    r.request_id = "one";
    r.prompt = Prompt(7, len, model_->config().vocab_size);
    r.sampling.max_tokens = 12;
    ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
    ASSERT_TRUE(c.Wait());
    EXPECT_EQ(c.ids, Alone(r.prompt, 12)) << "prompt length " << len;
  }
}

TEST_P(EngineTest, ConcurrentGreedyEqualsOneAtATime) {
  EngineOptions opt;
  opt.max_batch_tokens = 24;  // forces chunked prefill of the longer prompts
  auto engine = MakeEngine(opt);
  const int V = model_->config().vocab_size;
  constexpr int kStreams = 8;
  std::vector<Collector> out(kStreams);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < kStreams; ++i) {
    prompts.push_back(Prompt(i, 3 + 7 * i, V));
    want.push_back(Alone(prompts.back(), 10 + i));
  }
  for (int i = 0; i < kStreams; ++i) {
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt = prompts[i];
    r.sampling.max_tokens = 10 + i;
    ASSERT_TRUE(engine->Submit(r, out[i].Sink()).ok());
  }
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(out[i].Wait());
    EXPECT_EQ(out[i].finish, EngineFinish::kLength);
    EXPECT_EQ(out[i].ids, want[i]) << "stream " << i;
  }
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  EXPECT_GT(s.steps, 0);
  ExpectPoolsFull(*engine);
}

TEST_P(EngineTest, PreemptionUnderKvPressureKeepsOutputs) {
  const ModelConfig& cfg = model_->config();
  EngineOptions opt;
  opt.block_size = 4;
  opt.max_batch_tokens = 16;
  opt.max_running = 4;
  // Room for one long sequence (29 positions = 8 blocks) but not two.
  opt.num_blocks_global = 12;
  opt.num_blocks_sliding = 12;
  auto engine = MakeEngine(opt);
  std::vector<Collector> out(4);
  std::vector<std::vector<int32_t>> prompts, want;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(Prompt(10 + i, 9, cfg.vocab_size));
    want.push_back(Alone(prompts.back(), 20));
  }
  for (int i = 0; i < 4; ++i) {
    EngineRequest r;
    r.request_id = "p" + std::to_string(i);
    r.prompt = prompts[i];
    r.sampling.max_tokens = 20;
    ASSERT_TRUE(engine->Submit(r, out[i].Sink()).ok());
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(out[i].Wait());
    EXPECT_EQ(out[i].ids, want[i]) << "stream " << i;
  }
  EXPECT_GT(engine->Stats().preemptions, 0);
  ExpectPoolsFull(*engine);
}

TEST_P(EngineTest, CancelAndDeadlineFreeBlocks) {
  auto engine = MakeEngine();
  const int V = model_->config().vocab_size;
  Collector a, b;
  EngineRequest r;
  r.request_id = "long";
  r.prompt = Prompt(1, 12, V);
  r.sampling.max_tokens = 400;
  ASSERT_TRUE(engine->Submit(r, a.Sink()).ok());
  EngineRequest d = r;
  d.request_id = "deadline";
  d.deadline = std::chrono::steady_clock::now() + 30ms;
  ASSERT_TRUE(engine->Submit(d, b.Sink()).ok());
  while (true) {
    std::lock_guard<std::mutex> lock(a.mu);
    if (a.events > 2) break;
  }
  engine->Cancel("long");
  ASSERT_TRUE(a.Wait());
  ASSERT_TRUE(b.Wait());
  EXPECT_EQ(a.finish, EngineFinish::kCancelled);
  EXPECT_EQ(b.finish, EngineFinish::kDeadline);
  EXPECT_LT(a.ids.size(), 400u);
  ExpectPoolsFull(*engine);
  engine->Cancel("unknown");  // ignored
}

TEST_P(EngineTest, SlidingPoolStaysWithinTheWindow) {
  const ModelConfig& cfg = model_->config();
  int64_t window = 0;
  for (const LayerConfig& l : cfg.layers) window = std::max<int64_t>(window, l.is_sliding() ? l.sliding_window : 0);
  if (window == 0) GTEST_SKIP() << "no sliding layers";
  EngineOptions opt;
  opt.block_size = 4;
  opt.max_batch_tokens = 8;
  auto engine = MakeEngine(opt);
  Collector c;
  EngineRequest r;
  r.request_id = "long";
  r.prompt = Prompt(3, 20, cfg.vocab_size);
  r.sampling.max_tokens = 150;  // far past the window
  int64_t max_used = 0, max_global_used = 0;
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done) {
      for (const KvPoolStats& p : engine->Stats().pools) {
        (p.name == "sliding" ? max_used : max_global_used) =
            std::max(p.name == "sliding" ? max_used : max_global_used, p.total_blocks - p.free_blocks);
      }
      std::this_thread::sleep_for(100us);
    }
  });
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  ASSERT_TRUE(c.Wait());
  done = true;
  watch.join();
  // window-1 earlier keys + one chunk, rounded to blocks, + 1 partial block.
  const int64_t bound = (window - 1 + opt.max_batch_tokens + opt.block_size - 1) / opt.block_size + 1;
  EXPECT_LE(max_used, bound);
  EXPECT_GT(max_global_used, bound);  // the global pool kept growing meanwhile
  ExpectPoolsFull(*engine);
}

TEST_P(EngineTest, BadRequestsAreRefused) {
  EngineOptions opt;
  opt.max_waiting = 2;
  opt.max_running = 1;
  auto engine = MakeEngine(opt);
  const ModelConfig& cfg = model_->config();
  Collector c;
  EngineRequest r;
  r.request_id = "x";
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kInvalidArgument);  // empty
  r.prompt = {2, cfg.vocab_size};
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kInvalidArgument);  // out of vocabulary
  r.prompt = std::vector<int32_t>(cfg.max_position_embeddings, 5);
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kOutOfRange);
  r.prompt = {2, 5};
  r.sampling.top_p = 1.5f;
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  r.sampling.top_p = 1.0f;
  r.sampling.max_tokens = 0;
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  // A full waiting queue answers RESOURCE_EXHAUSTED.
  r.sampling.max_tokens = 300;
  std::vector<Collector> many(8);
  int exhausted = 0;
  for (int i = 0; i < 8; ++i) {
    r.request_id = "q" + std::to_string(i);
    absl::Status s = engine->Submit(r, many[i].Sink());
    if (s.code() == absl::StatusCode::kResourceExhausted) ++exhausted;
  }
  EXPECT_GT(exhausted, 0);
  engine->Shutdown(/*drain=*/false);
  for (auto& m : many) {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.events > 0) EXPECT_TRUE(m.finished);
  }
  ExpectPoolsFull(*engine);
  EXPECT_EQ(engine->Submit(r, c.Sink()).code(), absl::StatusCode::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(Golden, EngineTest, ::testing::Values("gemma3", "gemma4_moe", "gemma2"));

}  // namespace
}  // namespace facet
