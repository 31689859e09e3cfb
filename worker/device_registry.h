// Which device runs an engine's forward passes (STYLE.md §6: backends behind
// one interface, no build-flag tests at call sites). "cpu" is always there;
// other devices register an executor factory from their own library when it
// is linked (worker/cuda_executor.cc registers "cuda"; link facet_devices
// to get every device this build has). Commands take `--device NAME` and
// hand the name to these functions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine.h"
#include "worker/executor.h"
#include "worker/generator.h"

namespace facet {

class Model;
class Tokenizer;

using ExecutorFactory = std::function<absl::StatusOr<std::unique_ptr<StepExecutor>>(
    std::shared_ptr<Model> model, const EngineOptions& options)>;

// Makes `device` available; returns true so a static initialiser can call it.
bool RegisterExecutorFactory(const std::string& device, ExecutorFactory factory);

// "cpu" and every registered device, sorted.
std::vector<std::string> BuiltDevices();

// OK when `device` can be asked for in this build: INVALID_ARGUMENT for a
// name no build knows, UNIMPLEMENTED for a known device this build lacks
// ("cuda" without the CUDA backend). A device that is built but absent at
// run time (no GPU) is reported by MakeExecutor.
absl::Status CheckDevice(const std::string& device);

// The executor for `device` over `model` (which must outlive it), sized by
// `options` like the engine it will serve. Errors: CheckDevice's, then the
// device's own (UNAVAILABLE: no GPU; RESOURCE_EXHAUSTED: does not fit).
absl::StatusOr<std::unique_ptr<StepExecutor>> MakeExecutor(const std::string& device,
                                                           std::shared_ptr<Model> model,
                                                           const EngineOptions& options);

// CreateEngine with MakeExecutor's executor.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngineOn(const std::string& device,
                                                       std::shared_ptr<Model> model,
                                                       std::shared_ptr<const Tokenizer> tokenizer,
                                                       const EngineOptions& options);

// Generate() on `device`. "cpu" is Generate itself. Elsewhere the request
// runs through an engine with that device's executor (same validation and
// sampler); prefill_seconds is the time to the first token, decode_seconds
// the rest. `model` must outlive the call.
absl::StatusOr<GenerationResult> GenerateOn(const std::string& device, Model& model,
                                            std::span<const int32_t> prompt,
                                            const SamplingParams& params,
                                            const GenerateOptions& options = {});

}  // namespace facet
