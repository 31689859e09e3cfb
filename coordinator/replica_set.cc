#include "coordinator/replica_set.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/router.h"
#include "core/logging.h"

namespace facet {

using Clock = std::chrono::steady_clock;

// Lock order: an engine may call OnEvent (taking mu_) while holding its own
// lock, so mu_ is never held across a call into an engine.

ReplicaSet::ReplicaSet(ReplicaSetOptions options) : opt_(options) {
  failover_ = std::thread([this] { FailoverLoop(); });
}

ReplicaSet::~ReplicaSet() { Shutdown(false); }

absl::Status ReplicaSet::AddReplica(const std::string& name, std::shared_ptr<Engine> engine) {
  if (name.empty() || !engine) return absl::InvalidArgumentError("a replica needs a name and an engine");
  std::lock_guard<std::mutex> l(mu_);
  Replica& r = replicas_[name];
  r.name = name;
  r.engine = std::move(engine);
  r.up = true;
  r.assigned = 0;
  r.generation = ++generations_;
  cv_.notify_all();  // orphans waiting for a live replica
  return absl::OkStatus();
}

void ReplicaSet::RemoveReplica(const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = replicas_.find(name);
  if (it != replicas_.end()) MarkDownLocked(name, it->second.generation);
}

int ReplicaSet::live_replicas() const {
  std::lock_guard<std::mutex> l(mu_);
  int n = 0;
  for (const auto& [name, r] : replicas_) n += r.up ? 1 : 0;
  return n;
}

void ReplicaSet::ShutdownReplicas(bool drain) {
  std::vector<std::shared_ptr<Engine>> live;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [name, r] : replicas_) {
      if (r.up) live.push_back(r.engine);
    }
  }
  for (const auto& e : live) e->Shutdown(drain);
}

int64_t ReplicaSet::failovers() const {
  std::lock_guard<std::mutex> l(mu_);
  return failovers_;
}

void ReplicaSet::MarkDownLocked(const std::string& name, uint64_t generation) {
  auto it = replicas_.find(name);
  if (it == replicas_.end() || it->second.generation != generation) return;
  if (it->second.up) FACET_LOG(WARNING) << "engine group " << name << " is down; moving its requests";
  it->second.up = false;
  it->second.assigned = 0;
  for (auto& [id, t] : requests_) {
    if (t.replica == name && t.replica_generation == generation) {
      ++t.attempt;  // late events from the dead group are dropped
      t.replica.clear();
      orphans_.emplace_back(id, Clock::now());
    }
  }
  cv_.notify_all();
}

void ReplicaSet::Unassign(const Tracked& t) {
  auto it = replicas_.find(t.replica);
  if (it != replicas_.end() && it->second.generation == t.replica_generation && it->second.assigned > 0) {
    --it->second.assigned;
  }
}

absl::Status ReplicaSet::Place(const std::string& id, std::unique_lock<std::mutex>& lock) {
  for (;;) {
    auto it = requests_.find(id);
    if (it == requests_.end()) return absl::OkStatus();
    Tracked& t = it->second;
    std::vector<ReplicaLoad> loads;
    std::vector<Replica*> order;
    for (auto& [name, r] : replicas_) {
      loads.push_back(ReplicaLoad{name, r.up, r.assigned, 0, 0});
      order.push_back(&r);
    }
    const int pick = PickReplica(loads, rotation_++);
    if (pick < 0) return absl::UnavailableError("no live engine group serves this model");
    Replica& r = *order[pick];
    ++r.assigned;
    t.replica = r.name;
    t.replica_generation = r.generation;
    const uint64_t attempt = ++t.attempt;
    EngineRequest req = t.request;
    req.resume_tokens = t.streamed;
    std::shared_ptr<Engine> engine = r.engine;
    const std::string name = r.name;
    const uint64_t generation = r.generation;

    lock.unlock();
    absl::Status st = engine->Submit(std::move(req), [this, id, attempt](const TokenEvent& e) { OnEvent(id, attempt, e); });
    lock.lock();

    it = requests_.find(id);
    const bool current = it != requests_.end() && it->second.attempt == attempt;
    if (st.ok()) {
      if (attempt == 1) FACET_LOG(INFO) << "request " << id << " on group " << name;
      if (current && it->second.cancelled) {
        lock.unlock();
        engine->Cancel(id);  // the cancel may have raced with the submit
        lock.lock();
      }
      return absl::OkStatus();
    }
    if (current) {
      Unassign(it->second);
      it->second.replica.clear();
    }
    if (st.code() != absl::StatusCode::kUnavailable) return st;
    MarkDownLocked(name, generation);  // refused: shutting down or its link is gone
  }
}

absl::Status ReplicaSet::Submit(EngineRequest request, EventSink sink) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
  const std::string id = request.request_id;
  if (requests_.count(id)) return absl::InvalidArgumentError(absl::StrCat("request id \"", id, "\" is already in use"));
  if (!request.resume_tokens.empty()) return absl::InvalidArgumentError("resume_tokens are set by the coordinator");
  Tracked& t = requests_[id];
  t.request = std::move(request);
  t.sink = std::move(sink);
  absl::Status st = Place(id, lock);
  if (!st.ok()) {
    auto it = requests_.find(id);
    if (it != requests_.end()) requests_.erase(it);
  }
  return st;
}

void ReplicaSet::OnEvent(const std::string& id, uint64_t attempt, const TokenEvent& e) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = requests_.find(id);
  if (it == requests_.end() || it->second.attempt != attempt) return;  // a dead group's late event
  Tracked& t = it->second;
  if (e.finished && e.finish == EngineFinish::kError && e.error.code() == absl::StatusCode::kUnavailable &&
      !t.cancelled) {
    // The group died under this request (RemoteEngine fails its requests so).
    auto r = replicas_.find(t.replica);
    if (r != replicas_.end()) MarkDownLocked(t.replica, t.replica_generation);
    if (!t.replica.empty()) {  // not moved by MarkDownLocked (a stale generation)
      Unassign(t);
      ++t.attempt;
      t.replica.clear();
      orphans_.emplace_back(id, Clock::now());
      cv_.notify_all();
    }
    return;
  }
  t.streamed.insert(t.streamed.end(), e.ids.begin(), e.ids.end());
  t.sink(e);
  if (e.finished) {
    Unassign(t);
    requests_.erase(it);
    cv_.notify_all();
  }
}

void ReplicaSet::FailoverLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_ || !orphans_.empty(); });
    if (stopping_ && orphans_.empty()) return;
    std::deque<std::pair<std::string, Clock::time_point>> batch;
    batch.swap(orphans_);
    std::deque<std::pair<std::string, Clock::time_point>> retry;
    for (auto& [id, since] : batch) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      Tracked& t = it->second;
      auto finish = [&](EngineFinish why, absl::Status error) {
        TokenEvent ev;
        ev.finished = true;
        ev.finish = why;
        ev.error = std::move(error);
        ev.prompt_tokens = int64_t(t.request.prompt.size());
        ev.completion_tokens = int64_t(t.streamed.size());
        t.sink(ev);
        requests_.erase(id);
      };
      if (t.cancelled || stopping_) {
        finish(EngineFinish::kCancelled, absl::OkStatus());
        continue;
      }
      if (int64_t(t.streamed.size()) >= t.request.sampling.max_tokens) {
        finish(EngineFinish::kLength, absl::OkStatus());
        continue;
      }
      absl::Status st = Place(id, lock);
      if (st.ok()) {
        ++failovers_;
        auto placed = requests_.find(id);
        if (placed != requests_.end()) {
          FACET_LOG(INFO) << "request " << id << " resumed after " << placed->second.streamed.size()
                          << " streamed tokens on group " << placed->second.replica;
        }
        continue;
      }
      it = requests_.find(id);
      if (it == requests_.end()) continue;
      if (st.code() == absl::StatusCode::kUnavailable && Clock::now() - since < opt_.failover_wait) {
        retry.emplace_back(id, since);  // wait for a group to (re)register
        continue;
      }
      TokenEvent ev;
      ev.finished = true;
      ev.finish = EngineFinish::kError;
      ev.error = absl::UnavailableError(absl::StrCat("request ", id, ": its engine group died and no other took it over: ",
                                                     st.message()));
      ev.prompt_tokens = int64_t(it->second.request.prompt.size());
      ev.completion_tokens = int64_t(it->second.streamed.size());
      it->second.sink(ev);
      requests_.erase(it);
    }
    for (auto& r : retry) orphans_.push_back(r);
    if (!retry.empty()) cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping_; });
  }
}

void ReplicaSet::Cancel(const std::string& id) {
  std::shared_ptr<Engine> engine;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = requests_.find(id);
    if (it == requests_.end()) return;
    it->second.cancelled = true;
    auto r = replicas_.find(it->second.replica);
    if (r != replicas_.end() && r->second.up) engine = r->second.engine;
    cv_.notify_all();
  }
  if (engine) engine->Cancel(id);
}

EngineStats ReplicaSet::Stats() const {
  std::vector<std::shared_ptr<Engine>> live;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [name, r] : replicas_) {
      if (r.up) live.push_back(r.engine);
    }
  }
  EngineStats sum;
  for (const auto& e : live) {
    EngineStats s = e->Stats();
    sum.running += s.running;
    sum.waiting += s.waiting;
    sum.steps += s.steps;
    sum.prompt_tokens += s.prompt_tokens;
    sum.generated_tokens += s.generated_tokens;
    sum.preemptions += s.preemptions;
    sum.last_step_end = std::max(sum.last_step_end, s.last_step_end);
    for (const KvPoolStats& p : s.pools) {
      auto it = std::find_if(sum.pools.begin(), sum.pools.end(), [&](const KvPoolStats& q) { return q.name == p.name; });
      if (it == sum.pools.end()) {
        sum.pools.push_back(p);
      } else {
        it->total_blocks += p.total_blocks;
        it->free_blocks += p.free_blocks;
      }
    }
  }
  return sum;
}

void ReplicaSet::Shutdown(bool drain) {
  std::vector<std::string> ids;
  {
    std::unique_lock<std::mutex> l(mu_);
    if (!stopping_) {
      stopping_ = true;
      for (auto& [id, t] : requests_) ids.push_back(id);
    }
  }
  if (!drain) {
    for (const std::string& id : ids) Cancel(id);
  }
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(30), [&] { return requests_.empty(); });
    cv_.notify_all();
  }
  if (failover_.joinable()) failover_.join();
}

}  // namespace facet
