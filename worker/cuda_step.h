// Turns one engine step (StepBatch) and the block tables of a KvBlockManager
// into the GPU model's inputs (models/cuda/cuda_step.h): per-pool block
// tables of fixed width and per-token cache slots. Plain C++, built and
// unit-tested in every build; worker/cuda_executor.cc calls it.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "models/cuda/cuda_step.h"
#include "worker/executor.h"
#include "worker/kv_blocks.h"
#include "worker/scheduler.h"

namespace facet {

// Which of `blocks`' pools serves each CudaPool (-1: the model has no such
// layer): a pool with a window is the sliding one.
void MapCudaPools(const KvBlockManager& blocks, int pool_of[kNumCudaPools]);

// `plan` is the step the (mirrored) scheduler made; `batch` must be that
// step (same sequences, positions and token rows), else INTERNAL: the mirror
// and the engine have parted. Tables are `max_blocks` wide; a sequence whose
// KV needs more is INTERNAL too (the model's context bounds it).
absl::Status BuildCudaStep(const StepBatch& batch, const StepPlan& plan,
                           const KvBlockManager& blocks, int64_t max_blocks, CudaStep* out);

}  // namespace facet
