// A leader engine and its followers on the golden Gemma 3 model: the
// follower, fed only the leader's step messages, replays the scheduler
// (including preemption and cancellation) and computes bit-identical logits
// at every step; the threaded group shuts down cleanly; a hung step trips the
// watchdog; divergent messages are refused.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "models/model.h"
#include "tests/worker/fake_group.h"
#include "worker/engine.h"
#include "worker/executor.h"
#include "worker/follower.h"
#include "worker/leader.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

std::string Golden(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> ids;
  bool finished = false;
  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> l(mu);
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      if (e.finished) {
        finished = true;
        cv.notify_all();
      }
    };
  }
  bool Wait() {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, 120s, [&] { return finished; });
  }
};

// Keeps each step's logits, then delegates.
class Recorder : public StepExecutor {
 public:
  explicit Recorder(std::unique_ptr<StepExecutor> inner) : inner_(std::move(inner)) {}
  void OnAdd(SeqId id, int64_t p, int64_t m) override { inner_->OnAdd(id, p, m); }
  void OnAbort(SeqId id) override { inner_->OnAbort(id); }
  void OnSchedule() override { inner_->OnSchedule(); }
  void OnStepDone(const std::vector<SeqId>& f) override { inner_->OnStepDone(f); }
  absl::Status Forward(const StepBatch& b, KvStore* kv, std::vector<float>* logits) override {
    absl::Status st = inner_->Forward(b, kv, logits);
    std::lock_guard<std::mutex> l(mu);
    steps.push_back(*logits);
    return st;
  }
  bool samples() const override { return inner_->samples(); }
  absl::Status ForwardAndSample(const StepBatch& b, KvStore* kv, std::vector<int32_t>* tokens) override {
    return inner_->ForwardAndSample(b, kv, tokens);
  }
  void Close() override { inner_->Close(); }
  std::mutex mu;
  std::vector<std::vector<float>> steps;

 private:
  std::unique_ptr<StepExecutor> inner_;
};

std::vector<int32_t> Prompt(int seed, int len) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = 3 + (seed * 131 + i * 37) % 200;
  p[0] = 2;
  return p;
}

class LeaderFollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* m : {&leader_model_, &follower_model_}) {
      auto loaded = Model::Load(Golden("gemma3"), nullptr);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      *m = std::move(*loaded);
    }
    // Few blocks: the batch below preempts; small chunks: prefill spans steps.
    opt_.block_size = 4;
    opt_.num_blocks_global = 12;
    opt_.num_blocks_sliding = 12;
    opt_.max_batch_tokens = 16;
    opt_.max_running = 4;
    opt_.kv_cache_bytes = 1 << 20;
  }
  std::shared_ptr<Model> leader_model_, follower_model_;
  EngineOptions opt_;
};

TEST_F(LeaderFollowerTest, FollowerReplaysEveryStepBitExactly) {
  testing::RecordingComm comm(2);
  auto rec_owned = std::make_unique<Recorder>(MakeLeaderExecutor(leader_model_, &comm, {}));
  Recorder* rec = rec_owned.get();
  auto engine = CreateEngine(leader_model_, nullptr, opt_, std::move(rec_owned));
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>());
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt = Prompt(i, 9);
    r.sampling.max_tokens = i == 3 ? 36 : 20;  // 45 positions: the whole pool
    ASSERT_TRUE((*engine)->Submit(r, cs.back()->Sink()).ok());
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cs[i]->Wait());
  (*engine)->Cancel("r3");  // mid-generation: an Abort op reaches the follower
  ASSERT_TRUE(cs[3]->Wait());
  const int64_t preemptions = (*engine)->Stats().preemptions;
  (*engine)->Shutdown(true);

  const std::vector<std::string> msgs = comm.payloads();
  ASSERT_EQ(msgs.size(), rec->steps.size() + 1) << "one message per step plus the shutdown";
  Follower follower(follower_model_, opt_, nullptr);
  for (size_t i = 0; i < msgs.size(); ++i) {
    auto m = DecodeStepMessage(msgs[i]);
    ASSERT_TRUE(m.ok()) << m.status();
    auto more = follower.Apply(*m);
    ASSERT_TRUE(more.ok()) << "step " << i + 1 << ": " << more.status();
    EXPECT_EQ(*more, i + 1 < msgs.size());
    if (i < rec->steps.size()) {
      ASSERT_EQ(follower.last_logits(), rec->steps[i]) << "logits differ at step " << i + 1;
    }
  }
  EXPECT_EQ(follower.steps(), int64_t(rec->steps.size()));
  EXPECT_GT(preemptions, 0) << "the test meant to exercise preemption";
}

TEST_F(LeaderFollowerTest, ThreadedGroupServesAndShutsDown) {
  auto comms = testing::ThreadGroup(2);
  absl::Status follower_status = absl::UnknownError("not run");
  std::thread follower_thread([&] {
    Follower f(follower_model_, opt_, comms[1].get());
    follower_status = f.Run();
  });
  auto engine = CreateEngine(leader_model_, nullptr, opt_, MakeLeaderExecutor(leader_model_, comms[0].get(), {}));
  ASSERT_TRUE(engine.ok()) << engine.status();
  Collector c;
  EngineRequest r;
  r.request_id = "a";
  r.prompt = Prompt(1, 9);
  r.sampling.max_tokens = 6;
  ASSERT_TRUE((*engine)->Submit(r, c.Sink()).ok());
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.ids.size(), 6u);
  (*engine)->Shutdown(true);
  follower_thread.join();
  EXPECT_TRUE(follower_status.ok()) << follower_status;

  // The same request on a plain local engine gives the same tokens.
  auto local = CreateLocalEngine(leader_model_, nullptr, opt_);
  ASSERT_TRUE(local.ok());
  Collector d;
  ASSERT_TRUE((*local)->Submit(r, d.Sink()).ok());
  ASSERT_TRUE(d.Wait());
  EXPECT_EQ(c.ids, d.ids);
}

TEST_F(LeaderFollowerTest, ResumeContinuesTheSameStream) {
  // Failover contract: prompt + the first k tokens as resume_tokens with the
  // same seed yields exactly the remaining tokens (sampled, not greedy).
  auto engine = CreateLocalEngine(leader_model_, nullptr, opt_);
  ASSERT_TRUE(engine.ok());
  EngineRequest r;
  r.request_id = "s";
  r.prompt = Prompt(2, 7);
  r.sampling.max_tokens = 10;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 1234;
  Collector full;
  ASSERT_TRUE((*engine)->Submit(r, full.Sink()).ok());
  ASSERT_TRUE(full.Wait());
  ASSERT_EQ(full.ids.size(), 10u);
  for (int k : {1, 4, 9}) {
    EngineRequest rest = r;
    rest.request_id = "s" + std::to_string(k);
    rest.resume_tokens.assign(full.ids.begin(), full.ids.begin() + k);
    Collector c;
    ASSERT_TRUE((*engine)->Submit(rest, c.Sink()).ok());
    ASSERT_TRUE(c.Wait());
    EXPECT_EQ(c.ids, std::vector<int32_t>(full.ids.begin() + k, full.ids.end())) << "k=" << k;
  }
  EngineRequest done = r;
  done.request_id = "x";
  done.resume_tokens = full.ids;  // nothing left
  EXPECT_EQ((*engine)->Submit(done, [](const TokenEvent&) {}).code(), absl::StatusCode::kInvalidArgument);
  done.resume_tokens = {-1};
  EXPECT_EQ((*engine)->Submit(done, [](const TokenEvent&) {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LeaderFollowerTest, WatchdogFiresOnAHungStep) {
  testing::RecordingComm comm(2);
  comm.set_block(true);  // the follower never joins the broadcast
  std::atomic<bool> fired{false};
  LeaderOptions lo;
  lo.step_timeout = 200ms;
  lo.on_hang = [&] {
    fired = true;
    comm.Abort(3);  // unblocks the broadcast, as MPI_Abort would end the process
  };
  auto engine = CreateEngine(leader_model_, nullptr, opt_, MakeLeaderExecutor(leader_model_, &comm, lo));
  ASSERT_TRUE(engine.ok());
  Collector c;
  EngineRequest r;
  r.request_id = "h";
  r.prompt = Prompt(3, 5);
  r.sampling.max_tokens = 4;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*engine)->Submit(r, c.Sink()).ok());
  ASSERT_TRUE(c.Wait());  // the aborted step fails the request
  EXPECT_TRUE(fired.load());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  (*engine)->Shutdown(false);
}

TEST_F(LeaderFollowerTest, DivergentMessagesAreRefused) {
  Follower f(follower_model_, opt_, nullptr);
  StepMessage m;
  m.step = 2;  // expected 1
  EXPECT_EQ(f.Apply(m).status().code(), absl::StatusCode::kInternal);

  Follower g(follower_model_, opt_, nullptr);
  StepMessage n;
  n.step = 1;
  SchedulerOp add;
  add.kind = SchedulerOp::Kind::kAdd;
  add.id = 1;
  add.prompt_len = 3;
  add.max_new_tokens = 2;
  n.ops = {add, SchedulerOp{}};
  // The plan schedules sequence 1's three prompt tokens; claim only two.
  n.batch.tokens = {2, 5};
  n.batch.positions = {0, 1};
  n.batch.segments = {SeqSegment{1, 0, 2, 0}};
  auto r = g.Apply(n);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("diverged"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace facet
