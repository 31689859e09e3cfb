// Is a model's engine serving? Healthy only if a step round trip succeeded
// recently: a step finished within `window`, or — for an idle engine — a
// one-token probe request completes within `probe_timeout` (its result is
// reused for `probe_reuse`, so health checks do not flood the engine).
// Shared by the gRPC Health call and the HTTP /health endpoint.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "coordinator/model_registry.h"

namespace facet {

struct HealthOptions {
  std::chrono::milliseconds window{30000};
  std::chrono::milliseconds probe_timeout{10000};
  std::chrono::milliseconds probe_reuse{5000};
};

struct HealthVerdict {
  bool serving = false;
  std::string message;
  double seconds_since_last_step = -1;  // -1: never stepped
};

class HealthChecker {
 public:
  // Probe state for every model of `registry` (fixed at construction).
  HealthChecker(const ModelRegistry& registry, HealthOptions options);

  HealthVerdict Check(const ServedModel& model);
  // Every model in `models` (the message names each when there are several).
  HealthVerdict CheckAll(const std::vector<const ServedModel*>& models);

 private:
  struct ProbeState {
    std::mutex mu;  // one probe at a time per model
    std::chrono::steady_clock::time_point when{};
    bool ok = false;
    std::string message;
  };
  HealthVerdict Probe(const ServedModel& model);

  HealthOptions options_;
  std::atomic<uint64_t> probe_counter_{0};
  std::map<std::string, std::unique_ptr<ProbeState>> probes_;  // by model name
};

}  // namespace facet
