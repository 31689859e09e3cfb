// An Engine without a model, for testing the coordinator: each step emits one
// token per live request, token k of a request being
//   (last prompt id + k + 1) % vocab_size
// with text " t<id>", and finishes on max_tokens (length) or a stop id (stop,
// the stop token included in ids and the count, as the real engine does).
// Honours Cancel and deadlines at step boundaries, tracks live requests and
// a fake KV pool (one 16-token block per started 16 tokens) so tests can
// check that nothing leaks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "worker/engine.h"

namespace facet::testing {

struct FakeEngineOptions {
  int32_t vocab_size = 512;
  std::chrono::microseconds step_interval{1000};
  int64_t max_live = 1024;  // live requests beyond this: RESOURCE_EXHAUSTED
  int64_t kv_blocks = 4096;
  int64_t block_size = 16;
};

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(FakeEngineOptions options = {});
  ~FakeEngine() override;

  absl::Status Submit(EngineRequest request, EventSink sink) override;
  void Cancel(const std::string& request_id) override;
  EngineStats Stats() const override;
  void Shutdown(bool drain) override;

  // The expected i-th generated token for a prompt ending in `last`.
  static int32_t Token(int32_t last, int64_t i, int32_t vocab) {
    return static_cast<int32_t>((last + i + 1) % vocab);
  }

  // Paused: no tokens and no step completions (a stuck engine), but cancels
  // and deadlines still finish requests.
  void SetPaused(bool paused) { paused_ = paused; }
  int64_t live() const;
  int64_t submitted() const { return submitted_.load(); }
  // Ids passed to Cancel, in order.
  std::vector<std::string> cancelled_ids() const;
  // Every request as submitted (after the coordinator's preparation).
  std::vector<EngineRequest> requests() const;
  // Waits until no request is live; false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout) const;

 private:
  struct Live {
    EngineRequest request;
    EventSink sink;
    int64_t generated = 0;
    bool cancel = false;
  };
  void Loop();
  void Step();
  int64_t UsedBlocksLocked() const;

  FakeEngineOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable idle_cv_;
  std::map<std::string, Live> live_;
  std::vector<std::string> cancelled_ids_;
  std::vector<EngineRequest> requests_;
  bool accepting_ = true;
  bool drain_ = true;
  bool stop_ = false;
  int64_t steps_ = 0, prompt_tokens_ = 0, generated_tokens_ = 0;
  std::chrono::steady_clock::time_point last_step_end_{};
  std::atomic<bool> paused_{false};
  std::atomic<int64_t> submitted_{0};
  std::thread thread_;
};

}  // namespace facet::testing
