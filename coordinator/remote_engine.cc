#include "coordinator/remote_engine.h"

#include "absl/strings/str_cat.h"
#include "worker/engine_wire.h"

namespace facet {

using Clock = std::chrono::steady_clock;

RemoteEngine::RemoteEngine(std::string group_id, std::string model, Send send,
                           std::chrono::milliseconds submit_timeout)
    : group_id_(std::move(group_id)), model_(std::move(model)), send_(std::move(send)),
      submit_timeout_(submit_timeout) {}

RemoteEngine::~RemoteEngine() { OnLinkDown(absl::UnavailableError("engine removed")); }

bool RemoteEngine::alive() const {
  std::lock_guard<std::mutex> l(mu_);
  return !down_;
}

absl::Status RemoteEngine::Submit(EngineRequest request, EventSink sink) {
  const std::string id = request.request_id;
  Pending pending;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (down_) return absl::UnavailableError(absl::StrCat("engine group ", group_id_, " is down"));
    if (sinks_.count(id) || pending_.count(id)) {
      return absl::InvalidArgumentError(absl::StrCat("request id \"", id, "\" is already in use"));
    }
    // Registered before sending: the leader's first events may beat its SubmitResult.
    sinks_[id] = std::move(sink);
    pending_[id] = &pending;
  }
  internal::CoordinatorMessage msg;
  *msg.mutable_submit() = ToSubmitProto(request, model_);
  bool sent;
  {
    std::lock_guard<std::mutex> s(send_mu_);
    sent = send_(msg);
  }
  std::unique_lock<std::mutex> l(mu_);
  if (sent) cv_.wait_for(l, submit_timeout_, [&] { return pending.answered || down_; });
  pending_.erase(id);
  if (pending.answered && pending.status.ok()) return absl::OkStatus();
  sinks_.erase(id);
  if (pending.answered) return pending.status;
  return absl::UnavailableError(absl::StrCat("engine group ", group_id_,
                                             sent ? " did not answer the submit" : " link is broken"));
}

std::chrono::steady_clock::duration RemoteEngine::silence() const {
  std::lock_guard<std::mutex> l(mu_);
  return Clock::now() - last_heard_;
}

void RemoteEngine::OnMessage(const internal::LeaderMessage& m) {
  {
    std::lock_guard<std::mutex> l(mu_);
    last_heard_ = Clock::now();
  }
  if (m.has_submit_result()) {
    const internal::SubmitResult& r = m.submit_result();
    std::lock_guard<std::mutex> l(mu_);
    auto it = pending_.find(r.request_id());
    if (it != pending_.end()) {
      it->second->answered = true;
      it->second->status = absl::Status(absl::StatusCode(r.code()), r.message());
      cv_.notify_all();
    }
  } else if (m.has_events()) {
    for (const internal::TokenEvent& pe : m.events().events()) {
      EventSink sink;
      const TokenEvent e = FromEventProto(pe);
      {
        std::lock_guard<std::mutex> l(mu_);
        auto it = sinks_.find(pe.request_id());
        if (it == sinks_.end()) continue;
        sink = it->second;
        if (e.finished) sinks_.erase(it);
        cv_.notify_all();
      }
      sink(e);  // outside mu_: the sink may call back into the coordinator
    }
  } else if (m.has_stats()) {
    std::lock_guard<std::mutex> l(mu_);
    const int64_t steps = stats_.steps;
    const auto last = stats_.last_step_end;
    stats_ = FromStatsProto(m.stats());
    // Health: the coordinator saw the leader complete a step recently.
    stats_.last_step_end = stats_.steps > steps ? Clock::now() : last;
  }
}

void RemoteEngine::OnLinkDown(const absl::Status& why) {
  std::map<std::string, EventSink> sinks;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (down_) return;
    down_ = true;
    down_reason_ = why;
    sinks.swap(sinks_);
    cv_.notify_all();
  }
  for (auto& [id, sink] : sinks) {
    TokenEvent e;
    e.finished = true;
    e.finish = EngineFinish::kError;
    e.error = absl::UnavailableError(absl::StrCat("engine group ", group_id_, " went down: ", why.message()));
    sink(e);
  }
}

void RemoteEngine::Cancel(const std::string& request_id) {
  internal::CoordinatorMessage msg;
  msg.mutable_cancel()->set_request_id(request_id);
  std::lock_guard<std::mutex> s(send_mu_);
  send_(msg);
}

EngineStats RemoteEngine::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void RemoteEngine::Shutdown(bool drain) {
  internal::CoordinatorMessage msg;
  msg.mutable_drain()->set_drain(drain);
  {
    std::lock_guard<std::mutex> s(send_mu_);
    send_(msg);
  }
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, std::chrono::seconds(60), [&] { return down_ || sinks_.empty(); });
}

}  // namespace facet
