// A follower rank of an engine group (DESIGN.md §3): receives each step from
// the leader by broadcast, replays the leader's scheduler calls on its own
// Scheduler and KvBlockManager (pure and deterministic, so the block tables
// come out identical), checks that its plan matches the leader's batch, and
// runs the same forward on its shard.
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
  // [num_sampled, vocab] logits of the last forward (for tests).
  const std::vector<float>& last_logits() const { return logits_; }

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
};

}  // namespace facet
