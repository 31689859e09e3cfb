// One engine request as a front door (gRPC or HTTP) sees it: submitted once,
// its TokenEvents pulled on the caller's thread, and — when the client goes
// away — cancelled with a wait for the engine's final event, so the request's
// KV blocks are free by the time the front door lets go of it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/event_queue.h"
#include "worker/engine.h"

namespace facet {

class EngineCall {
 public:
  // The engine's Submit errors as they are (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...).
  static absl::StatusOr<std::unique_ptr<EngineCall>> Submit(Engine& engine, EngineRequest request);

  ~EngineCall();  // a call still running is cancelled and awaited (default grace)
  EngineCall(const EngineCall&) = delete;
  EngineCall& operator=(const EngineCall&) = delete;

  const std::string& id() const { return id_; }
  uint64_t seed() const { return seed_; }
  // The queued events merged into one, or nullopt when none arrives within
  // `timeout`. After the event with `finished` set, the call is done.
  std::optional<TokenEvent> Next(std::chrono::milliseconds timeout);
  bool done() const { return done_; }

  // Cancels the engine request and drops its events until the engine's final
  // one. False (logged) when the engine did not confirm within `grace`.
  bool CancelAndWait(std::chrono::milliseconds grace = std::chrono::milliseconds(10000));

 private:
  EngineCall(Engine& engine, std::string id, uint64_t seed)
      : engine_(engine), id_(std::move(id)), seed_(seed) {}

  Engine& engine_;
  std::string id_;
  uint64_t seed_;
  // Shared with the engine's sink: a late event after CancelAndWait gave up
  // still lands somewhere valid.
  std::shared_ptr<EventQueue> queue_ = std::make_shared<EventQueue>();
  bool done_ = false;
};

// What a finished request means for its caller: OK for stop and length;
// DEADLINE_EXCEEDED, UNAVAILABLE (the engine cancelled it: shutting down;
// retry), the engine's error, or INTERNAL for an error without a reason.
absl::Status FinishStatus(const TokenEvent& final_event, const std::string& request_id);

}  // namespace facet
