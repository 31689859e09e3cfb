// One forward's inputs for the GPU model (models/cuda/cuda_model.h), as
// host arrays the worker resolves from its KvBlockManager. No CUDA header:
// the worker builds steps (worker/cuda_step.h) in every build.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace facet {

// The two KV pools, as the worker's KvBlockManager has them.
enum CudaPool { kGlobalPool = 0, kSlidingPool = 1, kNumCudaPools = 2 };

// Sequences back to back. A pool the model lacks has empty slots/tables.
struct CudaStep {
  std::vector<int32_t> tokens;     // [T]
  std::vector<int32_t> positions;  // [T] absolute
  std::array<std::vector<int64_t>, kNumCudaPools> slots;   // [pool][T] block·block_size + offset
  std::array<std::vector<int32_t>, kNumCudaPools> tables;  // [pool][S, max_blocks], -1: none
  std::vector<int32_t> q_start;    // [S + 1]
  std::vector<int32_t> kv_len;     // [S] positions cached after this step
  std::vector<int32_t> logit_rows; // [R] rows whose logits are returned
};

}  // namespace facet
