#include "worker/device_registry.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "models/model.h"
#include "worker/paged_kv.h"

namespace facet {
namespace {

// Devices some build of Facet has; asking for one this build lacks is
// UNIMPLEMENTED rather than INVALID_ARGUMENT, since the name is right.
constexpr const char* kKnownDevices[] = {"cpu", "cuda"};

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}

std::map<std::string, ExecutorFactory>& Registry() {
  static std::map<std::string, ExecutorFactory> factories;
  return factories;
}

}  // namespace

bool RegisterExecutorFactory(const std::string& device, ExecutorFactory factory) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Registry()[device] = std::move(factory);
  return true;
}

std::vector<std::string> BuiltDevices() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  std::vector<std::string> names = {"cpu"};
  for (const auto& [name, factory] : Registry()) {
    if (name != "cpu") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status CheckDevice(const std::string& device) {
  const std::vector<std::string> built = BuiltDevices();
  if (std::find(built.begin(), built.end(), device) != built.end()) return absl::OkStatus();
  for (const char* known : kKnownDevices) {
    if (device == known) {
      return absl::UnimplementedError(absl::StrCat(
          "--device ", device, ": this facet was built without ", device == "cuda" ? "CUDA" : device,
          " (configure with `cmake --preset cuda`); built devices: ", absl::StrJoin(built, ", ")));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("--device ", device, ": unknown device; built: ",
                                                 absl::StrJoin(built, ", ")));
}

absl::StatusOr<std::unique_ptr<StepExecutor>> MakeExecutor(const std::string& device,
                                                           std::shared_ptr<Model> model,
                                                           const EngineOptions& options) {
  RETURN_IF_ERROR(CheckDevice(device));
  if (!model) return absl::InvalidArgumentError("no model");
  if (device == "cpu") return MakeLocalExecutor(std::move(model));
  ExecutorFactory factory;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    factory = Registry().at(device);
  }
  return factory(std::move(model), options);
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngineOn(const std::string& device,
                                                       std::shared_ptr<Model> model,
                                                       std::shared_ptr<const Tokenizer> tokenizer,
                                                       const EngineOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<StepExecutor> exec, MakeExecutor(device, model, options));
  return CreateEngine(std::move(model), std::move(tokenizer), options, std::move(exec));
}

absl::StatusOr<GenerationResult> GenerateOn(const std::string& device, Model& model,
                                            std::span<const int32_t> prompt,
                                            const SamplingParams& params,
                                            const GenerateOptions& options) {
  RETURN_IF_ERROR(CheckDevice(device));
  if (device == "cpu") return Generate(model, prompt, params, options);
  const ModelConfig& cfg = model.config();
  RETURN_IF_ERROR(ValidateSamplingParams(params, cfg.vocab_size));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.prefill_chunk < 1) return absl::InvalidArgumentError("prefill_chunk must be >= 1");

  // One sequence: the pools hold exactly its blocks (plus slack for the
  // sliding pool's chunk overlap), which keeps the engine's host-side KV
  // mirror small for large models.
  EngineOptions eo;
  eo.max_running = 1;
  eo.max_batch_tokens = options.prefill_chunk;
  const int64_t total = std::min<int64_t>(int64_t(prompt.size()) + params.max_tokens,
                                          cfg.max_position_embeddings);
  eo.num_blocks_global = (total + eo.block_size - 1) / eo.block_size + 2;
  eo.num_blocks_sliding = eo.num_blocks_global;
  std::shared_ptr<Model> shared(std::shared_ptr<Model>(), &model);  // not owned
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, CreateEngineOn(device, shared, nullptr, eo));

  std::mutex mu;
  std::condition_variable cv;
  std::deque<TokenEvent> events;
  EngineRequest req;
  req.request_id = "generate";
  req.prompt.assign(prompt.begin(), prompt.end());
  req.sampling = params;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(engine->Submit(std::move(req), [&](const TokenEvent& ev) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(ev);
    cv.notify_one();
  }));
  GenerationResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Clock::time_point t_first = t0;
  bool stopped_by_caller = false;
  for (;;) {
    TokenEvent ev;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !events.empty(); });
      ev = std::move(events.front());
      events.pop_front();
    }
    if (r.ids.empty() && !ev.ids.empty()) {
      t_first = Clock::now();
      r.prefill_seconds = std::chrono::duration<double>(t_first - t0).count();
    }
    for (size_t i = 0; i < ev.ids.size() && !stopped_by_caller; ++i) {
      const int32_t id = ev.ids[i];
      r.ids.push_back(id);
      // As Generate: the caller sees every token but a final stop token.
      const bool stop_token = ev.finished && ev.finish == EngineFinish::kStop &&
                              i + 1 == ev.ids.size();
      if (options.on_token && !stop_token && !options.on_token(id)) {
        stopped_by_caller = true;
        engine->Cancel("generate");
      }
    }
    if (!ev.finished) continue;
    if (ev.finish == EngineFinish::kError) return ev.error;
    r.finish = ev.finish == EngineFinish::kLength && !stopped_by_caller ? FinishReason::kLength
                                                                        : FinishReason::kStop;
    break;
  }
  r.decode_seconds = std::chrono::duration<double>(Clock::now() - t_first).count();
  engine->Shutdown(/*drain=*/false);
  return r;
}

}  // namespace facet
