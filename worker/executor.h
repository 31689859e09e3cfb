// The "execute" part of the engine loop (DESIGN.md §3), pluggable so that one
// loop serves both the single-rank engine and the leader of an engine group.
//
// The loop calls the scheduler hooks (On*) with its lock held, in the exact
// order it applies the calls to its Scheduler. A leader records them and
// broadcasts them with the next step, so every follower can replay them on
// its own Scheduler and KvBlockManager and end up with identical block
// tables (the scheduler is a pure state machine). Forward() is called without
// the lock, once per non-empty plan.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "models/kv_store.h"
#include "worker/kv_blocks.h"
#include "worker/sampler.h"

namespace facet {

class Model;

// What any rank needs to draw one sampled row's token by itself, so that
// followers keep no per-request state: the request's filters and seed, the
// index of the token being generated, and the ids the repetition penalty
// looks at.
struct RowSampling {
  // Only the filters and the seed are used (and travel in a step message);
  // stop ids and max_tokens stay with the leader's loop.
  SamplingParams params;
  int64_t step = 0;              // index of the token being generated (Sampler's `step`)
  std::vector<int32_t> history;  // prompt + generated ids; empty unless repetition_penalty != 1
};

// The inputs of one forward over the step's batch.
struct StepBatch {
  std::vector<int32_t> tokens;       // [num_tokens] token ids
  std::vector<int32_t> positions;    // [num_tokens] absolute positions
  std::vector<SeqSegment> segments;  // one per scheduled sequence
  std::vector<int64_t> logit_rows;   // [num_sampled] rows whose logits are returned
  // [num_sampled], one per logit row, only for an executor that samples();
  // empty otherwise (the single-rank path copies nothing).
  std::vector<RowSampling> sampling;
};

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;

  // Scheduler calls, in the order the engine made them (engine lock held).
  virtual void OnAdd(SeqId id, int64_t prompt_len, int64_t max_new_tokens) {}
  virtual void OnAbort(SeqId id) {}
  virtual void OnSchedule() {}
  virtual void OnStepDone(const std::vector<SeqId>& finished) {}

  // One forward over `batch`: logits of the requested rows, [num_sampled, vocab].
  virtual absl::Status Forward(const StepBatch& batch, KvStore* kv, std::vector<float>* logits) = 0;

  // True when this executor draws the tokens itself (ForwardAndSample) and
  // the loop must not sample: a tensor-parallel group whose LM head is split
  // over the vocabulary samples on every rank with Sampler::SampleSharded
  // instead of all-gathering [num_sampled, vocab] logits (DESIGN.md §3 step
  // 4). The loop then fills StepBatch::sampling. Fixed for the executor's life;
  // a wrapping executor must forward it.
  virtual bool samples() const { return false; }

  // One forward over `batch`, then each sampled row's token: (*tokens)[r]
  // for batch.logit_rows[r], drawn with batch.sampling[r] exactly as
  // Sampler::Sample would draw it from the full row. Only when samples().
  virtual absl::Status ForwardAndSample(const StepBatch& batch, KvStore* kv, std::vector<int32_t>* tokens) {
    return absl::UnimplementedError("this executor returns logits (samples() is false); call Forward");
  }

  // The loop has exited (shutdown); no call follows.
  virtual void Close() {}
};

// Forward = Model::ForwardBatch in this process; the hooks do nothing.
std::unique_ptr<StepExecutor> MakeLocalExecutor(std::shared_ptr<Model> model);

}  // namespace facet
