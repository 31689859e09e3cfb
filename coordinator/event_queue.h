// Hands TokenEvents from the engine thread to one stream's writer thread.
// Push never blocks beyond a short lock (the engine's EventSink contract);
// the queue is unbounded, but an engine emits at most one event per request
// per step, so it stays as short as the client is slow.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "worker/engine.h"

namespace facet {

class EventQueue {
 public:
  void Push(const TokenEvent& event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(event);
    }
    cv_.notify_one();
  }

  // Every queued event merged into one (ids and text concatenated, the
  // finish and counts of the newest), or nullopt when none arrives within
  // `timeout`. A writer that fell behind catches up in one message.
  std::optional<TokenEvent> PopFor(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
    TokenEvent merged = std::move(events_.front());
    events_.pop_front();
    for (; !events_.empty(); events_.pop_front()) {
      TokenEvent& next = events_.front();
      merged.ids.insert(merged.ids.end(), next.ids.begin(), next.ids.end());
      merged.text += next.text;
      merged.finished = next.finished;
      merged.finish = next.finish;
      merged.error = std::move(next.error);
      merged.prompt_tokens = next.prompt_tokens;
      merged.completion_tokens = next.completion_tokens;
    }
    return merged;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> events_;
};

}  // namespace facet
