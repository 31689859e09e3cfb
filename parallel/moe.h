// Expert parallelism for the Gemma 4 MoE (spec distributed.md §3): each rank
// of the EP group holds E/ep whole experts; the router runs replicated, so
// every rank knows every token's experts. Each rank takes a contiguous chunk
// of the (replicated) tokens, dispatches each (token, expert) row to the
// expert's owner with AllToAllV, the owners run their experts, the results
// come back with a second AllToAllV and are summed per token in ascending
// expert id (the single-rank kernel's order), and an AllGather rebuilds
// [T, H] on every rank.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/thread_pool.h"
#include "parallel/communicator.h"
#include "parallel/linear.h"

namespace facet::parallel {

struct ExpertParallelBuffers {
  std::vector<float> send, recv, x, y, w, out, all;  // resized per call
  std::vector<int32_t> ids;
  std::vector<float> workspace;
};

//   x           [T, H] expert input (replicated)
//   expert_ids  [T, K] global expert ids; expert_weights [T, K]
//   gate_up     this rank's experts [E/ep · 2F, H]; down [E/ep · H, F]
//   out         [T, H] Σ_k w_tk · expert_{e_tk}(x_t), replicated on return
absl::Status ExpertParallelMoe(Communicator& ep, const float* x, int64_t T, int64_t H,
                               const int32_t* expert_ids, const float* expert_weights, int64_t K,
                               int64_t num_experts, const ExpertShard& gate_up,
                               const ExpertShard& down, int64_t F, float* out,
                               ExpertParallelBuffers& buf, ThreadPool* pool);

}  // namespace facet::parallel
