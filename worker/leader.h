// The leader of an engine group (DESIGN.md §1, §3): the engine loop of
// worker/local_engine.cc with an executor that first broadcasts the step to
// the group's followers, then runs its own share of the forward. A step
// watchdog ends the process when a step hangs (a dead peer or a partitioned
// network blocks collectives forever, spec/distributed.md §7).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "parallel/communicator.h"
#include "worker/executor.h"

namespace facet {

struct LeaderOptions {
  // A step (broadcast + forward) longer than this is a hang; 0 disables the watchdog.
  std::chrono::milliseconds step_timeout{60000};
  // Called once, on the watchdog thread, when a step hangs. Default: log,
  // abort the group's communicator and _exit(3) (non-zero, so mpirun/srun
  // tear down the rest of the job).
  std::function<void()> on_hang;
};

// `group` (rank 0 = this leader) must outlive the executor. Forward()
// broadcasts the step, then calls model->ForwardBatch; Close() sends the
// shutdown message that ends every follower's loop.
std::unique_ptr<StepExecutor> MakeLeaderExecutor(std::shared_ptr<Model> model,
                                                 parallel::Communicator* group,
                                                 LeaderOptions options);

// Rank 0's `*bytes` reach every rank of `comm` (size first, then the bytes).
absl::Status BroadcastBytes(parallel::Communicator& comm, std::string* bytes);

}  // namespace facet
