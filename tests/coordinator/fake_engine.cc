#include "tests/coordinator/fake_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace facet::testing {

FakeEngine::FakeEngine(FakeEngineOptions options) : options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

FakeEngine::~FakeEngine() { Shutdown(/*drain=*/false); }

absl::Status FakeEngine::Submit(EngineRequest request, EventSink sink) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!accepting_) return absl::UnavailableError("fake engine: shutting down");
  if (request.prompt.empty()) return absl::InvalidArgumentError("fake engine: empty prompt");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= options_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("fake engine: id ", id, " outside the vocabulary"));
    }
  }
  if (live_.count(request.request_id)) {
    return absl::InvalidArgumentError(absl::StrCat("fake engine: duplicate live request_id ",
                                                   request.request_id));
  }
  if (static_cast<int64_t>(live_.size()) >= options_.max_live) {
    return absl::ResourceExhaustedError("fake engine: the waiting queue is full");
  }
  requests_.push_back(request);
  ++submitted_;
  std::string id = request.request_id;
  live_.emplace(id, Live{std::move(request), std::move(sink)});
  return absl::OkStatus();
}

void FakeEngine::Cancel(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ids_.push_back(request_id);
  if (auto it = live_.find(request_id); it != live_.end()) it->second.cancel = true;
}

int64_t FakeEngine::UsedBlocksLocked() const {
  int64_t used = 0;
  for (const auto& [id, r] : live_) {
    const int64_t tokens = static_cast<int64_t>(r.request.prompt.size()) + r.generated;
    used += (tokens + options_.block_size - 1) / options_.block_size;
  }
  return used;
}

EngineStats FakeEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s;
  s.running = static_cast<int64_t>(live_.size());
  s.steps = steps_;
  s.prompt_tokens = prompt_tokens_;
  s.generated_tokens = generated_tokens_;
  s.last_step_end = last_step_end_;
  KvPoolStats pool;
  pool.name = "global";
  pool.total_blocks = options_.kv_blocks;
  pool.free_blocks = options_.kv_blocks - UsedBlocksLocked();
  pool.block_size = options_.block_size;
  pool.bytes_per_block = 1024;
  s.pools.push_back(pool);
  return s;
}

int64_t FakeEngine::live() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(live_.size());
}

std::vector<std::string> FakeEngine::cancelled_ids() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_ids_;
}

std::vector<EngineRequest> FakeEngine::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

bool FakeEngine::WaitIdle(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return live_.empty(); });
}

void FakeEngine::Shutdown(bool drain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    drain_ = drain;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void FakeEngine::Loop() {
  for (;;) {
    std::this_thread::sleep_for(options_.step_interval);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        if (!drain_) {
          for (auto& [id, r] : live_) r.cancel = true;
        }
        if (live_.empty()) return;
      }
    }
    Step();
  }
}

void FakeEngine::Step() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  const bool paused = paused_ && !stop_;
  const bool busy = !live_.empty();
  for (auto it = live_.begin(); it != live_.end();) {
    Live& r = it->second;
    TokenEvent event;
    event.prompt_tokens = static_cast<int64_t>(r.request.prompt.size());
    if (r.cancel || now >= r.request.deadline) {
      event.finished = true;
      event.finish = r.cancel ? EngineFinish::kCancelled : EngineFinish::kDeadline;
    } else if (!paused) {
      if (r.generated == 0) prompt_tokens_ += event.prompt_tokens;
      const int32_t id = Token(r.request.prompt.back(), r.generated, options_.vocab_size);
      ++r.generated;
      ++generated_tokens_;
      event.ids.push_back(id);
      event.text = absl::StrCat(" t", id);
      const auto& stops = r.request.sampling.stop_token_ids;
      if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
        event.finished = true;
        event.finish = EngineFinish::kStop;
      } else if (r.generated >= r.request.sampling.max_tokens) {
        event.finished = true;
        event.finish = EngineFinish::kLength;
      }
    } else {
      ++it;
      continue;
    }
    event.completion_tokens = r.generated;
    r.sink(event);
    it = event.finished ? live_.erase(it) : std::next(it);
  }
  // Like the real engine, an idle engine takes no steps.
  if (!paused && busy) {
    ++steps_;
    last_step_end_ = std::chrono::steady_clock::now();
  }
  if (live_.empty()) idle_cv_.notify_all();
}

}  // namespace facet::testing
