// One engine group seen from the coordinator: the Engine interface over the
// group leader's EngineLink stream (proto/facet/internal/engine.proto).
// Submit sends a Submit and waits for the leader's SubmitResult; TokenEvents
// from the leader reach the request's sink; a broken link fails every request
// in flight with UNAVAILABLE (ReplicaSet then moves them to a live group).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "facet/internal/engine.pb.h"
#include "worker/engine.h"

namespace facet {

class RemoteEngine : public Engine {
 public:
  // Writes one message to the leader; false when the stream is broken.
  using Send = std::function<bool(const internal::CoordinatorMessage&)>;

  RemoteEngine(std::string group_id, std::string model, Send send,
               std::chrono::milliseconds submit_timeout = std::chrono::milliseconds(30000));
  ~RemoteEngine() override;

  // From the link's reader thread.
  void OnMessage(const internal::LeaderMessage& message);
  // The stream ended: every pending Submit and live request fails with UNAVAILABLE.
  void OnLinkDown(const absl::Status& why);

  const std::string& group_id() const { return group_id_; }
  // Time since the leader last sent anything (it sends stats every interval,
  // busy or idle): a stopped or hung leader process goes silent.
  std::chrono::steady_clock::duration silence() const;
  bool alive() const;

  // UNAVAILABLE when the link is down or the leader does not answer within
  // submit_timeout; otherwise the leader's verdict.
  absl::Status Submit(EngineRequest request, EventSink sink) override;
  void Cancel(const std::string& request_id) override;
  EngineStats Stats() const override;
  // Sends Drain (drain) and waits until the requests finished or the link is
  // down; the leader then closes the stream.
  void Shutdown(bool drain) override;

 private:
  struct Pending {
    bool answered = false;
    absl::Status status;
  };

  std::string group_id_;
  std::string model_;
  Send send_;
  std::chrono::milliseconds submit_timeout_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool down_ = false;
  absl::Status down_reason_;
  std::map<std::string, EventSink> sinks_;      // live requests
  std::map<std::string, Pending*> pending_;     // Submits awaiting a SubmitResult
  EngineStats stats_;
  std::chrono::steady_clock::time_point last_heard_ = std::chrono::steady_clock::now();
  std::mutex send_mu_;  // one writer at a time on the stream
};

}  // namespace facet
