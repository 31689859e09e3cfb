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
//
// With a tensor-parallel model (model->tp() set, TP > 1) the executor
// samples() on the group instead: it switches the model's logit gather off
// (each rank keeps its [rows, V/tp] vocabulary slice), and ForwardAndSample
// broadcasts the step with its sampling rows, runs the forward and draws
// every token with SampleOnGroup, as each follower does; Forward() is then
// refused (FAILED_PRECONDITION) before anything is sent. `group` must be (or
// contain exactly the ranks of) model->tp().
std::unique_ptr<StepExecutor> MakeLeaderExecutor(std::shared_ptr<Model> model,
                                                 parallel::Communicator* group,
                                                 LeaderOptions options);

// Each sampled row's token from this rank's vocabulary slice: `logits` is
// [batch.logit_rows.size(), model.vocab_shard().size] from model.ForwardBatch
// with the gather off, and (*tokens)[r] is what Sampler::Sample draws from
// the full row r with batch.sampling[r] (Sampler::SampleSharded).
// Collective over model.tp(): every rank calls it with the same batch.
// INVALID_ARGUMENT when the batch has no sampling row per logit row or the
// logits are not that shape (checked before any collective).
absl::Status SampleOnGroup(const Model& model, const StepBatch& batch, const std::vector<float>& logits,
                           std::vector<int32_t>* tokens);

// Rank 0's `*bytes` reach every rank of `comm` (size first, then the bytes).
absl::Status BroadcastBytes(parallel::Communicator& comm, std::string* bytes);

}  // namespace facet
