// CPU kernels of the Gemma forward pass (spec/gemma-architecture.md §1–§5).
//
// Conventions: activations are fp32, row-major; weights are WeightRef in
// PyTorch [out, in] order. A ThreadPool* may be null (single-threaded). Calls
// whose arguments can disagree return absl::Status; element-wise kernels
// check their invariants with FACET_CHECK. Kernels allocate nothing large per
// call: big scratch comes from the caller (MoeExperts), small per-thread tiles
// are thread_local.
//
// Each kernel has a slow, obvious twin in kernels/cpu/ops_ref.h with the same
// signature; tests/kernels/cpu/ops_test.cc compares the two.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/weight.h"

namespace facet::cpu {

// y[m, w.rows] = x[m, w.cols] · wᵀ, fp32 accumulation. f32/f16/bf16 weights
// are read directly; GGUF block formats go to QuantMatMul (kernels/cpu/quant.h).
// y must not alias x.
absl::Status MatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool);

// out[n, table.cols] = table.row(ids[i]) · scale, in fp32. For bf16 tables and
// a bf16-rounded scale the product is exact in fp32; a caller that emulates
// bf16 activations rounds it afterwards (spec §1.1). GGUF block formats are
// dequantized row by row (DequantizeRow). Ids are CHECKed to be in range.
void Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale, float* out);

// y = x · rsqrt(mean(x²) + eps) · (plus_one ? 1 + w : w), per row of `dim`
// (spec §2). w == nullptr: no weight (Gemma 4 v_norm, router norm). x == y is
// allowed. Per-head norms pass rows = tokens·heads, dim = head_dim.
void RmsNorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps,
             bool plus_one);

// RoPE inverse frequencies, head_dim / 2 of them, fp32 as HF transformers
// computes them (modeling_rope_utils.py: 1.0 / theta ** (arange(0, d, 2) / d)):
//   default:      1 / theta^(2i / head_dim) (partial_rotary_factor must be 1);
//   proportional: (Gemma 4 global) 1 / theta^(2i / head_dim) for
//                 i < int(partial_rotary_factor · head_dim / 2), zero after;
//   then divided by linear_factor (Gemma 3 global "linear", 1 = none).
// torch's pow is within an ulp of the true power; we use the correctly
// rounded power, which it returns in all but rare ties.
std::vector<float> RopeInvFreq(int64_t head_dim, float theta, float linear_factor,
                               float partial_rotary_factor, bool proportional);

// In-place NEOX (rotate-half) RoPE over the full head_dim of x [tokens, heads,
// head_dim]: pair (i, i + head_dim/2) turns by positions[t] · inv_freq[i]
// (fp32 product, fp32 cos/sin, as HF). A zero inv_freq leaves its pair as is.
void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          const float* inv_freq);

// out[m, inter] = gelu_tanh(gate) · up, gate_up [m, 2·inter] = [gate | up] per
// row. gelu_tanh as torch's gelu(approximate="tanh"). out may not alias gate_up.
void GeGlu(const float* gate_up, int64_t m, int64_t inter, float* out);

// x = cap · tanh(x / cap), in place (final logit softcap, spec §1.3).
void Softcap(float* x, int64_t n, float cap);

void AddInPlace(float* y, const float* x, int64_t n);  // y += x
void Scale(float* x, int64_t n, float s);              // x *= s

struct AttentionParams {
  int64_t num_q_tokens = 0;
  int64_t num_heads = 0;     // query heads Nq
  int64_t num_kv_heads = 0;  // Nkv; query head h reads kv head h / (Nq / Nkv)
  int64_t head_dim = 0;
  float scale = 1.0f;    // multiplies q·k (Gemma 4: 1)
  float softcap = 0.0f;  // 0: none; else s = softcap · tanh(s / softcap) after scale (Gemma 2: 50)
  int64_t window = 0;    // 0: global; else key allowed iff 0 <= qpos − kpos <= window − 1
};

// Causal GQA attention with an fp32 softmax.
//   q   [T, Nq, D], q_pos [T] absolute positions
//   k,v [S, Nkv, D] for absolute positions kv_pos0 .. kv_pos0 + num_kv − 1
//   out [T, Nq, D]
// Query t sees keys with kv_pos0 <= kpos <= q_pos[t] (and inside the window).
// A query that would see no key at all is an error.
absl::Status Attention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                       const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                       float* out, ThreadPool* pool);

// Gemma 4 router (spec §5.1): z = RmsNorm_noweight(x1) · router_scale · H^-½,
// p = softmax(router_proj · z) in fp32 over all E experts, top_k largest
// (ties: lower expert id first), renormalised to sum 1, each times
// per_expert_scale[id]. Outputs are [T, top_k], in descending probability.
absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const WeightRef& router_proj, const float* per_expert_scale, int64_t top_k,
                      float eps, int32_t* expert_ids, float* expert_weights, ThreadPool* pool);

// Gemma 4 experts (spec §5.2): out[t] = Σ_j w_tj · down_e · (gelu_tanh(gate_e x_t) ⊙ up_e x_t)
// with e = expert_ids[t, j], summed in ascending expert id (as HF's index_add_).
//   x        [T, H]           (pre_feedforward_layernorm_2 output)
//   gate_up  [E·2F, H]        expert e: rows [e·2F, e·2F+F) gate, [e·2F+F, (e+1)·2F) up
//   down     [E·H, F]
//   out      [T, H]
//   workspace MoeExpertsWorkspaceFloats(T, H, F, top_k) floats
// Tokens are grouped by expert so each expert's weights stream once per call.
absl::Status MoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                        const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                        const WeightRef& down, int64_t num_experts, float* out, float* workspace,
                        ThreadPool* pool);
size_t MoeExpertsWorkspaceFloats(int64_t T, int64_t H, int64_t F, int64_t top_k);

}  // namespace facet::cpu
