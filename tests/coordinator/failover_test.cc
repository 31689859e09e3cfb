// ReplicaSet over scripted engines: routing spreads requests, and a replica
// that dies mid-generation (fails its requests with UNAVAILABLE, or its link
// is removed while it goes silent) has every stream finished on another
// replica with exactly the tokens an undisturbed run gives: none lost, none
// repeated, the resume carrying the streamed tokens.
#include "coordinator/replica_set.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace facet {
namespace {

using namespace std::chrono_literals;

// Token k of a request: a pure function of (seed, last prompt id, k), like a
// seeded sampler. On resume it checks the resume tokens are the ones it would
// have produced, and continues at k = resume.size().
int32_t ScriptToken(uint64_t seed, int32_t last, int64_t k) {
  return int32_t((seed * 7919 + uint64_t(last) * 31 + uint64_t(k) * 17) % 1000);
}

class ScriptedEngine : public Engine {
 public:
  explicit ScriptedEngine(std::chrono::microseconds step = 500us) : step_(step) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedEngine() override { Shutdown(false); }

  absl::Status Submit(EngineRequest r, EventSink sink) override {
    std::lock_guard<std::mutex> l(mu_);
    if (dead_ || stop_) return absl::UnavailableError("scripted engine is down");
    for (size_t k = 0; k < r.resume_tokens.size(); ++k) {
      if (r.resume_tokens[k] != ScriptToken(r.sampling.seed, r.prompt.back(), int64_t(k))) {
        return absl::InternalError("resume tokens are not this request's tokens");
      }
    }
    ++submitted_;
    if (!r.resume_tokens.empty()) ++resumed_;
    Live& x = live_[r.request_id];
    x.k = int64_t(r.resume_tokens.size());
    x.req = std::move(r);
    x.sink = std::move(sink);
    return absl::OkStatus();
  }
  void Cancel(const std::string& id) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = live_.find(id);
    if (it != live_.end()) it->second.cancel = true;
  }
  EngineStats Stats() const override {
    std::lock_guard<std::mutex> l(mu_);
    EngineStats s;
    s.running = int64_t(live_.size());
    s.steps = steps_;
    return s;
  }
  void Shutdown(bool) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  // Dies: every live request fails with UNAVAILABLE (as RemoteEngine does
  // when its link breaks); later submits are refused.
  void Kill() {
    std::map<std::string, Live> live;
    {
      std::lock_guard<std::mutex> l(mu_);
      dead_ = true;
      live.swap(live_);
    }
    for (auto& [id, x] : live) {
      TokenEvent e;
      e.finished = true;
      e.finish = EngineFinish::kError;
      e.error = absl::UnavailableError("link down");
      x.sink(e);
    }
  }
  void SetPaused(bool p) { paused_ = p; }
  int64_t submitted() const { std::lock_guard<std::mutex> l(mu_); return submitted_; }
  int64_t resumed() const { std::lock_guard<std::mutex> l(mu_); return resumed_; }

 private:
  struct Live {
    EngineRequest req;
    EventSink sink;
    int64_t k = 0;
    bool cancel = false;
  };
  void Loop() {
    for (;;) {
      std::this_thread::sleep_for(step_);
      std::lock_guard<std::mutex> l(mu_);  // sinks run under the engine lock, like LocalEngine
      if (stop_) return;
      if (paused_ || dead_) continue;
      ++steps_;
      for (auto it = live_.begin(); it != live_.end();) {
        Live& x = it->second;
        TokenEvent e;
        if (x.cancel) {
          e.finished = true;
          e.finish = EngineFinish::kCancelled;
        } else {
          e.ids = {ScriptToken(x.req.sampling.seed, x.req.prompt.back(), x.k)};
          ++x.k;
          e.completion_tokens = x.k;
          if (x.k >= x.req.sampling.max_tokens) {
            e.finished = true;
            e.finish = EngineFinish::kLength;
          }
        }
        x.sink(e);
        it = e.finished ? live_.erase(it) : std::next(it);
      }
    }
  }
  std::chrono::microseconds step_;
  mutable std::mutex mu_;
  std::map<std::string, Live> live_;
  std::atomic<bool> paused_{false};
  bool dead_ = false, stop_ = false;
  int64_t steps_ = 0, submitted_ = 0, resumed_ = 0;
  std::thread thread_;
};

struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> ids;
  bool finished = false;
  EngineFinish finish = EngineFinish::kNone;
  absl::Status error;
  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> l(mu);
      EXPECT_FALSE(finished) << "event after the last one";
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      if (e.finished) {
        finished = true;
        finish = e.finish;
        error = e.error;
        cv.notify_all();
      }
    };
  }
  bool Wait(std::chrono::milliseconds t = 20s) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, t, [&] { return finished; });
  }
  size_t count() {
    std::lock_guard<std::mutex> l(mu);
    return ids.size();
  }
};

EngineRequest Request(int i, int max_tokens) {
  EngineRequest r;
  r.request_id = "r" + std::to_string(i);
  r.prompt = {2, 10 + i};
  r.sampling.seed = 100 + i;
  r.sampling.max_tokens = max_tokens;
  return r;
}

std::vector<int32_t> Expected(const EngineRequest& r) {
  std::vector<int32_t> out;
  for (int k = 0; k < r.sampling.max_tokens; ++k) out.push_back(ScriptToken(r.sampling.seed, r.prompt.back(), k));
  return out;
}

TEST(ReplicaSet, SpreadsRequestsOverReplicas) {
  auto a = std::make_shared<ScriptedEngine>(), b = std::make_shared<ScriptedEngine>();
  ReplicaSet set;
  ASSERT_TRUE(set.AddReplica("a", a).ok());
  ASSERT_TRUE(set.AddReplica("b", b).ok());
  std::vector<std::unique_ptr<Stream>> s;
  for (int i = 0; i < 8; ++i) {
    s.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(set.Submit(Request(i, 200), s.back()->Sink()).ok());
  }
  EXPECT_EQ(a->submitted(), 4);
  EXPECT_EQ(b->submitted(), 4);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(s[i]->Wait());
    EXPECT_EQ(s[i]->ids, Expected(Request(i, 200)));
  }
  EXPECT_EQ(set.Submit(Request(0, 5), [](const TokenEvent&) {}).code(), absl::StatusCode::kOk);
  EXPECT_EQ(set.Submit(Request(0, 5), [](const TokenEvent&) {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReplicaSet, KilledReplicaStreamsContinueWithoutLossOrDuplicates) {
  auto a = std::make_shared<ScriptedEngine>(), b = std::make_shared<ScriptedEngine>();
  ReplicaSet set;
  ASSERT_TRUE(set.AddReplica("a", a).ok());
  ASSERT_TRUE(set.AddReplica("b", b).ok());
  std::vector<std::unique_ptr<Stream>> s;
  for (int i = 0; i < 10; ++i) {
    s.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(set.Submit(Request(i, 400), s.back()->Sink()).ok());
  }
  // Mid-generation: every stream has some tokens, none has all.
  while (s[0]->count() < 20) std::this_thread::sleep_for(1ms);
  a->Kill();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(s[i]->Wait()) << i;
    EXPECT_EQ(s[i]->finish, EngineFinish::kLength) << i << " " << s[i]->error;
    EXPECT_EQ(s[i]->ids, Expected(Request(i, 400))) << "stream " << i;
  }
  EXPECT_EQ(set.failovers(), 5);
  EXPECT_EQ(b->resumed(), 5);
  EXPECT_EQ(set.live_replicas(), 1);
}

TEST(ReplicaSet, RemovedReplicaIsSilencedAndItsRequestsMove) {
  auto a = std::make_shared<ScriptedEngine>(), b = std::make_shared<ScriptedEngine>();
  ReplicaSet set;
  ASSERT_TRUE(set.AddReplica("a", a).ok());
  ASSERT_TRUE(set.AddReplica("b", b).ok());
  std::vector<std::unique_ptr<Stream>> s;
  for (int i = 0; i < 4; ++i) {
    s.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(set.Submit(Request(i, 300), s.back()->Sink()).ok());
  }
  while (s[0]->count() < 10) std::this_thread::sleep_for(1ms);
  a->SetPaused(true);    // hung
  set.RemoveReplica("a");  // its link broke
  a->SetPaused(false);   // late events from the old group must be dropped
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(s[i]->Wait());
    EXPECT_EQ(s[i]->ids, Expected(Request(i, 300))) << "stream " << i;
  }
  EXPECT_EQ(set.failovers(), 2);
}

TEST(ReplicaSet, NoLiveReplicaFailsAfterTheWaitAndANewOneRescues) {
  ReplicaSetOptions opt;
  opt.failover_wait = 300ms;
  ReplicaSet set(opt);
  EXPECT_EQ(set.Submit(Request(0, 5), [](const TokenEvent&) {}).code(), absl::StatusCode::kUnavailable);
  auto a = std::make_shared<ScriptedEngine>();
  ASSERT_TRUE(set.AddReplica("a", a).ok());
  Stream lost;
  ASSERT_TRUE(set.Submit(Request(1, 100000), lost.Sink()).ok());
  while (lost.count() < 5) std::this_thread::sleep_for(1ms);
  a->Kill();
  ASSERT_TRUE(lost.Wait());
  EXPECT_EQ(lost.finish, EngineFinish::kError);
  EXPECT_EQ(lost.error.code(), absl::StatusCode::kUnavailable);

  // A group that registers within the wait takes the request over.
  ReplicaSetOptions longer;
  longer.failover_wait = 10s;
  ReplicaSet set2(longer);
  auto c = std::make_shared<ScriptedEngine>();
  ASSERT_TRUE(set2.AddReplica("c", c).ok());
  Stream saved;
  ASSERT_TRUE(set2.Submit(Request(2, 300), saved.Sink()).ok());
  while (saved.count() < 5) std::this_thread::sleep_for(1ms);
  c->Kill();
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(set2.AddReplica("d", std::make_shared<ScriptedEngine>()).ok());
  ASSERT_TRUE(saved.Wait());
  EXPECT_EQ(saved.ids, Expected(Request(2, 300)));
}

TEST(ReplicaSet, CancelReachesTheReplica) {
  auto a = std::make_shared<ScriptedEngine>();
  ReplicaSet set;
  ASSERT_TRUE(set.AddReplica("a", a).ok());
  Stream s;
  ASSERT_TRUE(set.Submit(Request(0, 100000), s.Sink()).ok());
  while (s.count() < 3) std::this_thread::sleep_for(1ms);
  set.Cancel("r0");
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.finish, EngineFinish::kCancelled);
  EXPECT_EQ(set.Stats().running, 0);
}

}  // namespace
}  // namespace facet
