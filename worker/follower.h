// A follower rank of an engine group (DESIGN.md §3): receives each step from
// the leader by broadcast, replays the leader's scheduler calls on its own
// Scheduler and KvBlockManager (pure and deterministic, so the block tables
// come out identical), checks that its plan matches the leader's batch, and
// runs the same forward on its shard. With a tensor-parallel model it also
// joins the leader's sampling (SampleOnGroup, worker/leader.h) from the
// step's sampling rows, with the logit gather switched off.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "worker/engine.h"
#include "worker/kv_blocks.h"
#include "worker/paged_kv.h"
#include "worker/scheduler.h"
#include "worker/step_message.h"

namespace facet {

class Follower {
 public:
  // `options` must equal the leader engine's; `group` (this rank != 0) must
  // outlive the follower.
  Follower(std::shared_ptr<Model> model, const EngineOptions& options, parallel::Communicator* group);

  // Receives and runs steps until the leader's shutdown message (OK). An
  // error when the broadcast fails, a message is malformed or the replay
  // diverges from the leader (INTERNAL, naming the step and sequence).
  absl::Status Run();

  // One message: true to go on, false after a shutdown message.
  absl::StatusOr<bool> Apply(const StepMessage& message);

  int64_t steps() const { return steps_; }
  // Logits of the last forward (for tests): [num_sampled, vocab], or this
  // rank's [num_sampled, V/tp] slice with a tensor-parallel model.
  const std::vector<float>& last_logits() const { return logits_; }
  // Tokens the group drew at the last step (tensor parallel only; for tests).
  const std::vector<int32_t>& last_tokens() const { return tokens_; }

 private:
  std::shared_ptr<Model> model_;
  parallel::Communicator* group_;
  KvBlockManager blocks_;
  PagedKvStore kv_;
  Scheduler scheduler_;
  StepPlan plan_;          // the last Schedule(); its OnStepDone comes with the next message
  int64_t next_step_ = 1;
  int64_t steps_ = 0;
  std::vector<float> logits_;
  std::vector<int32_t> tokens_;
};

}  // namespace facet
