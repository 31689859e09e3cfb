#include "worker/cuda_executor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "models/model.h"
#include "worker/cuda_step.h"
#include "worker/device_registry.h"

namespace facet {

CudaExecutor::CudaExecutor(std::shared_ptr<Model> model, const EngineOptions& options)
    : model_(std::move(model)),
      blocks_(options.block_size, EnginePools(model_->config(), options)),
      scheduler_(EngineSchedulerConfig(model_->config(), options), &blocks_) {
  MapCudaPools(blocks_, engine_pool_);
}

absl::StatusOr<std::unique_ptr<CudaExecutor>> CudaExecutor::Create(std::shared_ptr<Model> model,
                                                                   const EngineOptions& options,
                                                                   bool cuda_graphs) {
  if (!model) return absl::InvalidArgumentError("cuda executor: no model");
  if (options.block_size < 1 || options.max_batch_tokens < 1 || options.max_running < 1) {
    return absl::InvalidArgumentError("cuda executor: block_size, max_batch_tokens and "
                                      "max_running must be positive");
  }
  std::unique_ptr<CudaExecutor> e(new CudaExecutor(model, options));
  CudaModelOptions mo;
  mo.block_size = options.block_size;
  for (int p = 0; p < kNumCudaPools; ++p) {
    mo.num_blocks[p] = e->engine_pool_[p] >= 0 ? e->blocks_.total_blocks(e->engine_pool_[p]) : 0;
  }
  mo.max_tokens = options.max_batch_tokens;
  mo.max_seqs = options.max_running;
  mo.max_logit_rows = options.max_running;
  mo.max_context = options.max_context;
  mo.cuda_graphs = cuda_graphs;
  ASSIGN_OR_RETURN(e->gpu_, CudaModel::Create(model->config(), model->weights(), mo));
  return e;
}

void CudaExecutor::OnAdd(SeqId id, int64_t prompt_len, int64_t max_new_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status st = scheduler_.Add(id, prompt_len, max_new_tokens);
  if (!st.ok() && mirror_error_.ok()) {
    mirror_error_ = absl::InternalError(absl::StrCat("cuda executor: mirror scheduler refused ",
                                                     id, ": ", st.message()));
  }
}

void CudaExecutor::OnAbort(SeqId id) {
  std::lock_guard<std::mutex> lock(mu_);
  scheduler_.Abort(id);
}

void CudaExecutor::OnSchedule() {
  std::lock_guard<std::mutex> lock(mu_);
  plan_ = scheduler_.Schedule();
}

void CudaExecutor::OnStepDone(const std::vector<SeqId>& finished) {
  std::lock_guard<std::mutex> lock(mu_);
  scheduler_.OnStepDone(plan_, finished);
}

absl::Status CudaExecutor::Forward(const StepBatch& batch, KvStore* kv,
                                   std::vector<float>* logits) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(mirror_error_);
    RETURN_IF_ERROR(BuildCudaStep(batch, plan_, blocks_, gpu_->max_blocks_per_seq(), &step_));
  }
  return gpu_->Forward(step_, logits);
}

namespace {

// "cuda" for worker/device_registry.h, whenever this library is linked.
const bool kRegistered = RegisterExecutorFactory(
    "cuda", [](std::shared_ptr<Model> model,
               const EngineOptions& options) -> absl::StatusOr<std::unique_ptr<StepExecutor>> {
      ASSIGN_OR_RETURN(std::unique_ptr<CudaExecutor> e,
                       CudaExecutor::Create(std::move(model), options));
      return std::unique_ptr<StepExecutor>(std::move(e));
    });

}  // namespace

}  // namespace facet
