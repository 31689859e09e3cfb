// The serving engine of one model replica (the leader's side of DESIGN.md §3):
// requests come in through Submit(); a loop thread runs schedule → execute →
// sample → update, batching every running sequence into one forward per step
// (continuous batching, chunked prefill), and streams token events back.
//
// Thread model: Submit/Cancel/Stats/Shutdown may be called from any thread.
// EventSinks are called on the engine thread and must not block (hand the
// event to a queue); after a sink has seen `finished`, it is never called
// again and the engine holds no reference to it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/sampler.h"

namespace facet {

class Model;
class Tokenizer;
class StepExecutor;
struct ModelConfig;
struct PoolSpec;
struct SchedulerConfig;

struct EngineRequest {
  std::string request_id;            // unique among live requests; used by Cancel
  std::vector<int32_t> prompt;       // token ids, <bos> included
  SamplingParams sampling;           // max_tokens, stop token ids, seed, ...
  std::vector<std::string> stop_strings;  // stop when the decoded text contains one (not included in the output)
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // Tokens a failed engine group already generated and streamed (failover,
  // DESIGN.md §6): the engine continues after them as if it had sampled them
  // itself (sampler step, repetition history, max_tokens, detokenizer and stop
  // strings all count them) and streams only what follows. Fewer than
  // sampling.max_tokens.
  std::vector<int32_t> resume_tokens;
};

enum class EngineFinish { kNone, kStop, kLength, kCancelled, kDeadline, kError };
const char* EngineFinishName(EngineFinish f);  // "", "stop", "length", "cancelled", "deadline", "error"

struct TokenEvent {
  std::vector<int32_t> ids;  // new token ids since the last event
  std::string text;          // new text since the last event (whole UTF-8 characters only)
  bool finished = false;
  EngineFinish finish = EngineFinish::kNone;
  absl::Status error;        // set when finish == kError (e.g. the request can never fit in the KV cache)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // total so far
};

using EventSink = std::function<void(const TokenEvent&)>;

struct EngineOptions {
  int64_t block_size = 16;          // tokens per KV block
  int64_t num_blocks_global = 0;    // 0: derive from kv_cache_bytes
  int64_t num_blocks_sliding = 0;   // 0: derive from kv_cache_bytes
  int64_t kv_cache_bytes = int64_t(1) << 30;
  int64_t max_batch_tokens = 512;   // token budget per step (prefill chunks + decodes)
  int64_t max_running = 64;         // sequences in the running batch
  int64_t max_waiting = 256;        // queued requests; beyond: RESOURCE_EXHAUSTED
  int64_t max_context = 0;          // 0: the model's max_position_embeddings
};

struct KvPoolStats {
  std::string name;        // "global" / "sliding"
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;
  int64_t block_size = 0;
  int64_t bytes_per_block = 0;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t steps = 0;
  int64_t prompt_tokens = 0;      // processed since start
  int64_t generated_tokens = 0;   // since start
  int64_t preemptions = 0;
  std::vector<KvPoolStats> pools;
  std::chrono::steady_clock::time_point last_step_end{};  // health: a recent step round trip
  double step_seconds_total = 0;  // time in the execute phase (forward) of every step, summed
  double last_step_seconds = 0;   // ... of the latest step (metrics: step time)
};

class Engine {
 public:
  virtual ~Engine() = default;
  // INVALID_ARGUMENT: empty prompt, ids outside the vocabulary, bad sampling
  // params, duplicate live request_id; OUT_OF_RANGE: prompt + max_tokens beyond
  // the context; RESOURCE_EXHAUSTED: the waiting queue is full; UNAVAILABLE:
  // shutting down. On error the sink is never called.
  virtual absl::Status Submit(EngineRequest request, EventSink sink) = 0;
  // Frees the request's KV blocks at the next step boundary and finishes it
  // with kCancelled. Unknown ids are ignored.
  virtual void Cancel(const std::string& request_id) = 0;
  virtual EngineStats Stats() const = 0;
  // Stops admitting; drain=true finishes running and waiting requests first,
  // drain=false cancels them. Blocks until the loop thread has exited.
  virtual void Shutdown(bool drain) = 0;
};

// The engine for one in-process model (CPU, single rank).
absl::StatusOr<std::unique_ptr<Engine>> CreateLocalEngine(std::shared_ptr<Model> model,
                                                          std::shared_ptr<const Tokenizer> tokenizer,
                                                          const EngineOptions& options);

// The same loop with another executor (worker/executor.h), e.g. the leader of
// an engine group, which broadcasts each step to its followers.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(std::shared_ptr<Model> model,
                                                     std::shared_ptr<const Tokenizer> tokenizer,
                                                     const EngineOptions& options,
                                                     std::unique_ptr<StepExecutor> executor);

// The KV pools and scheduler limits an engine with `options` uses, so that a
// follower rank can build identical ones.
std::vector<PoolSpec> EnginePools(const ModelConfig& config, const EngineOptions& options);
SchedulerConfig EngineSchedulerConfig(const ModelConfig& config, const EngineOptions& options);

}  // namespace facet
