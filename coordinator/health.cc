#include "coordinator/health.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "coordinator/engine_call.h"

namespace facet {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Fixed1(double v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

// EngineFinishName lives in the engine library, which the coordinator does not link.
const char* FinishName(EngineFinish f) {
  switch (f) {
    case EngineFinish::kNone: return "none";
    case EngineFinish::kStop: return "stop";
    case EngineFinish::kLength: return "length";
    case EngineFinish::kCancelled: return "cancelled";
    case EngineFinish::kDeadline: return "deadline";
    case EngineFinish::kError: return "error";
  }
  return "unknown";
}

}  // namespace

HealthChecker::HealthChecker(const ModelRegistry& registry, HealthOptions options)
    : options_(options) {
  for (const auto& m : registry.models()) probes_[m->info.name] = std::make_unique<ProbeState>();
}

HealthVerdict HealthChecker::CheckAll(const std::vector<const ServedModel*>& models) {
  HealthVerdict all;
  all.serving = true;
  for (const ServedModel* m : models) {
    HealthVerdict v = Check(*m);
    all.serving = all.serving && v.serving;
    if (!all.message.empty()) all.message += "; ";
    all.message += models.size() > 1 ? absl::StrCat(m->info.name, ": ", v.message) : v.message;
    all.seconds_since_last_step = std::max(all.seconds_since_last_step, v.seconds_since_last_step);
  }
  return all;
}

HealthVerdict HealthChecker::Check(const ServedModel& model) {
  const EngineStats stats = model.engine->Stats();
  const auto now = Clock::now();
  HealthVerdict v;
  const bool stepped = stats.last_step_end != Clock::time_point{};
  if (stepped) v.seconds_since_last_step = Seconds(now - stats.last_step_end);
  if (stepped && now - stats.last_step_end <= options_.window) {
    v.serving = true;
    v.message = absl::StrCat("last step finished ", Fixed1(v.seconds_since_last_step), " s ago");
    return v;
  }
  if (stats.running + stats.waiting > 0) {
    v.message = absl::StrCat(
        stepped ? absl::StrCat("no step finished in ", Fixed1(v.seconds_since_last_step), " s")
                : std::string("no step finished yet"),
        " with ", stats.running, " running and ", stats.waiting, " waiting requests");
    return v;
  }
  HealthVerdict probe = Probe(model);
  const EngineStats after = model.engine->Stats();
  if (after.last_step_end != Clock::time_point{}) {
    probe.seconds_since_last_step = Seconds(Clock::now() - after.last_step_end);
  }
  return probe;
}

HealthVerdict HealthChecker::Probe(const ServedModel& model) {
  auto found = probes_.find(model.info.name);
  if (found == probes_.end()) return HealthVerdict{false, "unknown model"};
  ProbeState& state = *found->second;
  std::lock_guard<std::mutex> lock(state.mu);
  const auto start = Clock::now();
  if (state.when != Clock::time_point{} && start - state.when <= options_.probe_reuse) {
    return HealthVerdict{state.ok, state.message};
  }
  auto record = [&](bool ok, std::string message) {
    state.when = Clock::now();
    state.ok = ok;
    state.message = std::move(message);
    return HealthVerdict{ok, state.message};
  };

  EngineRequest request;
  request.request_id = absl::StrCat("facet-health-probe-", probe_counter_.fetch_add(1) + 1);
  request.prompt = {model.info.bos_id};
  request.sampling.max_tokens = 1;
  request.deadline = start + options_.probe_timeout;
  auto call = EngineCall::Submit(*model.engine, request);
  if (!call.ok()) {
    return record(false, absl::StrCat("idle; the probe request was rejected: ",
                                      std::string(call.status().message())));
  }
  for (;;) {
    std::optional<TokenEvent> event = (*call)->Next(std::chrono::milliseconds(50));
    if (event && event->finished) {
      const double ms = Seconds(Clock::now() - start) * 1e3;
      if (event->finish == EngineFinish::kStop || event->finish == EngineFinish::kLength) {
        return record(true, absl::StrCat("idle; a probe step completed in ", Fixed1(ms), " ms"));
      }
      return record(false, absl::StrCat("idle; the probe request ended with finish reason ",
                                        FinishName(event->finish), " ",
                                        std::string(event->error.message())));
    }
    if (Clock::now() - start > options_.probe_timeout + std::chrono::seconds(1)) {
      (*call)->CancelAndWait(std::chrono::milliseconds(1000));
      return record(false, absl::StrCat("idle; a probe step did not finish within ",
                                        options_.probe_timeout.count(), " ms"));
    }
  }
}

}  // namespace facet
