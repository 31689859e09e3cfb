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

namespace facet {

class Model;

// The inputs of one forward over the step's batch.
struct StepBatch {
  std::vector<int32_t> tokens;       // [num_tokens] token ids
  std::vector<int32_t> positions;    // [num_tokens] absolute positions
  std::vector<SeqSegment> segments;  // one per scheduled sequence
  std::vector<int64_t> logit_rows;   // [num_sampled] rows whose logits are returned
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

  // The loop has exited (shutdown); no call follows.
  virtual void Close() {}
};

// Forward = Model::ForwardBatch in this process; the hooks do nothing.
std::unique_ptr<StepExecutor> MakeLocalExecutor(std::shared_ptr<Model> model);

}  // namespace facet
