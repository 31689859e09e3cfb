// Argument checks shared by the fast kernels (ops.h) and their references
// (ops_ref.h), so both reject exactly the same inputs with the same message.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cpu/ops.h"

namespace facet::cpu::internal {

bool IsFloatFormat(WeightFormat f);

absl::Status CheckMatMul(const float* x, int64_t m, const WeightRef& w, const float* y);
absl::Status CheckAttention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                            const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                            const float* out);
absl::Status CheckMoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                           const WeightRef& router_proj, const float* per_expert_scale,
                           int64_t top_k, const int32_t* expert_ids, const float* expert_weights);
// On success *F is the expert FFN width (gate_up.rows / (2·num_experts)).
absl::Status CheckMoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                             const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                             const WeightRef& down, int64_t num_experts, const float* out,
                             int64_t* F);

}  // namespace facet::cpu::internal
