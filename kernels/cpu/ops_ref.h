// Slow, obvious reference versions of the kernels in kernels/cpu/ops.h, with
// the same signatures and contracts. They loop element by element and reduce
// in double, so they stand for the exact result that the fast kernels' tests
// measure their fp32 error against. Not for production use.
//
// Differences from the fast kernels: MatMul supports only f32/f16/bf16
// weights (the GGUF block formats have their own reference in quant_test),
// MoeExperts ignores `workspace` (may be null) and allocates.
#pragma once

#include "kernels/cpu/ops.h"

namespace facet::cpu::ref {

absl::Status MatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool);
void Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale, float* out);
void RmsNorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps,
             bool plus_one);
void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          const float* inv_freq);
void GeGlu(const float* gate_up, int64_t m, int64_t inter, float* out);
void Softcap(float* x, int64_t n, float cap);
void AddInPlace(float* y, const float* x, int64_t n);
void Scale(float* x, int64_t n, float s);
absl::Status Attention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                       const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                       float* out, ThreadPool* pool);
absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const WeightRef& router_proj, const float* per_expert_scale, int64_t top_k,
                      float eps, int32_t* expert_ids, float* expert_weights, ThreadPool* pool);
absl::Status MoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                        const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                        const WeightRef& down, int64_t num_experts, float* out, float* workspace,
                        ThreadPool* pool);

// One weight element as fp32 (f32/f16/bf16 only).
float WeightAt(const WeightRef& w, int64_t row, int64_t col);

}  // namespace facet::cpu::ref
