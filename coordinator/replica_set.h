// One served model across engine groups (replicas), as one Engine for the
// public service: routes each request to the least loaded live replica and
// holds its state (request, tokens streamed) so that when a replica dies the
// request continues on another from prompt + streamed tokens with the same
// seed and sampler step (DESIGN.md §6): the client sees no loss and no
// duplicate.
//
// A replica is any Engine. It is treated as dead when RemoveReplica is called
// (the link broke) or when it fails a request with UNAVAILABLE mid-stream
// (RemoteEngine does so for every request when its link breaks).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "worker/engine.h"

namespace facet {

struct ReplicaSetOptions {
  // A request with no live replica waits this long for one to (re)register
  // before it fails with UNAVAILABLE.
  std::chrono::milliseconds failover_wait{30000};
};

class ReplicaSet : public Engine {
 public:
  explicit ReplicaSet(ReplicaSetOptions options = {});
  ~ReplicaSet() override;

  // INVALID_ARGUMENT for an empty name or null engine; a name that is known
  // replaces the old (dead) entry.
  absl::Status AddReplica(const std::string& name, std::shared_ptr<Engine> engine);
  // Marks the replica down and moves its in-flight requests elsewhere.
  void RemoveReplica(const std::string& name);
  int live_replicas() const;
  // Shuts every live replica down (RemoteEngine: sends Drain, so leaders exit cleanly).
  void ShutdownReplicas(bool drain);
  int64_t failovers() const;

  absl::Status Submit(EngineRequest request, EventSink sink) override;
  void Cancel(const std::string& request_id) override;
  EngineStats Stats() const override;  // summed over live replicas
  void Shutdown(bool drain) override;  // does not shut the replicas down

 private:
  struct Replica {
    std::string name;
    std::shared_ptr<Engine> engine;
    bool up = true;
    int64_t assigned = 0;
    uint64_t generation = 0;  // bumps when a name re-registers
  };
  struct Tracked {
    EngineRequest request;  // as the client sent it (resume_tokens empty)
    EventSink sink;
    std::vector<int32_t> streamed;  // token ids the client has received
    std::string replica;
    uint64_t replica_generation = 0;
    uint64_t attempt = 0;
    bool cancelled = false;
  };

  // Starts attempt `t.attempt` on a live replica; mu_ held. UNAVAILABLE when none is up.
  absl::Status Place(const std::string& id, std::unique_lock<std::mutex>& lock);
  void OnEvent(const std::string& id, uint64_t attempt, const TokenEvent& e);
  void MarkDownLocked(const std::string& name, uint64_t generation);
  void FailoverLoop();
  void Unassign(const Tracked& t);

  ReplicaSetOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Replica> replicas_;
  std::map<std::string, Tracked> requests_;
  std::deque<std::pair<std::string, std::chrono::steady_clock::time_point>> orphans_;  // to re-place
  uint64_t rotation_ = 0;
  uint64_t generations_ = 0;
  int64_t failovers_ = 0;
  bool stopping_ = false;
  std::thread failover_;
};

}  // namespace facet
