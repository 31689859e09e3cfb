// A StepExecutor that runs every step on one GPU (models/cuda/cuda_model.h).
//
// The engine's KvBlockManager lives inside its loop, so the executor keeps
// a mirror: its own KvBlockManager and Scheduler, built from the same
// EngineOptions, replaying the scheduler calls the engine reports through
// the On* hooks in the engine's order. The scheduler is a pure state
// machine, so the mirror's block tables equal the engine's (the follower
// ranks of an engine group rely on the same property, worker/follower.h).
// Each Forward turns the mirror's tables into the device's per-pool block
// tables and per-token cache slots. Decode steps replay CUDA graphs.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "models/cuda/cuda_model.h"
#include "worker/engine.h"
#include "worker/executor.h"
#include "worker/kv_blocks.h"
#include "worker/scheduler.h"

namespace facet {

class CudaExecutor final : public StepExecutor {
 public:
  // Uploads `model`'s weights. UNAVAILABLE without a GPU; the model's
  // other errors (cuda_model.h) pass through.
  static absl::StatusOr<std::unique_ptr<CudaExecutor>> Create(std::shared_ptr<Model> model,
                                                              const EngineOptions& options,
                                                              bool cuda_graphs = true);

  void OnAdd(SeqId id, int64_t prompt_len, int64_t max_new_tokens) override;
  void OnAbort(SeqId id) override;
  void OnSchedule() override;
  void OnStepDone(const std::vector<SeqId>& finished) override;
  // `kv` (the engine's host store) is not touched: the KV lives on the GPU.
  // INTERNAL when the batch is not the step the mirror scheduled.
  absl::Status Forward(const StepBatch& batch, KvStore* kv, std::vector<float>* logits) override;

  const CudaModel& gpu() const { return *gpu_; }

 private:
  CudaExecutor(std::shared_ptr<Model> model, const EngineOptions& options);

  std::shared_ptr<Model> model_;
  // The hooks come from Submit's thread (engine lock held) while Forward runs
  // on the loop thread without it: mu_ guards the mirror.
  std::mutex mu_;
  KvBlockManager blocks_;
  Scheduler scheduler_;
  StepPlan plan_;
  absl::Status mirror_error_;  // first replay failure; fails every later step
  int engine_pool_[kNumCudaPools] = {-1, -1};  // CudaPool -> pool index in blocks_
  std::unique_ptr<CudaModel> gpu_;
  CudaStep step_;
};

}  // namespace facet
