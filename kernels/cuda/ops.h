// CUDA kernels of the Gemma forward pass, except attention
// (kernels/cuda/attention/). Each has a CPU twin: kernels/cpu/ops_ref.h for
// the plain ops, kernels/cuda/twins.h for the fused ones; the GPU tests
// (tests/kernels/cuda/) compare the two on random inputs.
//
// Conventions (STYLE.md §4): pointers are device pointers unless named
// host_*; every call checks its arguments and returns a Status before
// launching anything, launches on the caller's stream and allocates nothing
// (workspace comes from the caller, sized by the *WorkspaceBytes function).
// Activations between kernels are bf16; the residual stream and logits are
// fp32; all arithmetic is fp32. Norm weights are fp32 [dim] already in the
// form the kernel multiplies by ("1 + w" folded at load), unless plus_one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace facet::cuda {

using bf16 = __nv_bfloat16;

// --- element-wise (elementwise.cu) ---

// out[n, dim] = table[ids[i]] · scale in fp32. table [vocab, dim] bf16.
// An id outside [0, vocab) gives a zero row and increments *bad_ids (an int32
// on the device, may be null) — the host checks it when it next syncs.
absl::Status Embed(const bf16* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                   float scale, float* out, int32_t* bad_ids, cudaStream_t stream);

// y[rows, dim] = x · rsqrt(mean(x²) + eps) · (plus_one ? 1 + w : w), w may be
// null (no weight). x fp32 or bf16; y bf16.
absl::Status RmsNorm(const float* x, const float* w, bf16* y, int64_t rows, int64_t dim, float eps,
                     bool plus_one, cudaStream_t stream);
absl::Status RmsNorm(const bf16* x, const float* w, bf16* y, int64_t rows, int64_t dim, float eps,
                     bool plus_one, cudaStream_t stream);

// The block boundary, fused (spec §3): per row,
//   resid = (resid + RmsNorm(branch, w_post)) · resid_scale
//   next  = RmsNorm(resid, w_next)            (skipped when next == null)
// branch [rows, dim] bf16 (attention or MLP output before its post-norm),
// resid [rows, dim] fp32 in place, next [rows, dim] bf16. resid_scale is
// Gemma 4's layer_scalar at the end of a block (1 elsewhere). w_post may be
// null for a plain residual add.
absl::Status AddRmsNorm(const bf16* branch, const float* w_post, float* resid, float resid_scale,
                        const float* w_next, bf16* next, int64_t rows, int64_t dim, float eps,
                        bool plus_one, cudaStream_t stream);

// Gemma 4 MoE block end (spec §3.2), fused: per row,
//   f     = RmsNorm(RmsNorm(dense, w_post1) + RmsNorm(experts, w_post2), w_post)
//   resid = (resid + f) · resid_scale          (layer_scalar)
//   next  = RmsNorm(resid, w_next)             (skipped when next == null)
// dense [rows, dim] bf16 (shared MLP output), experts [rows, dim] fp32
// (MoeExperts output), resid fp32 in place, next bf16. Weights plain form.
absl::Status MoeBlockEnd(const bf16* dense, const float* w_post1, const float* experts,
                         const float* w_post2, const float* w_post, float* resid,
                         float resid_scale, const float* w_next, bf16* next, int64_t rows,
                         int64_t dim, float eps, cudaStream_t stream);

// out[m, inter] = gelu_tanh(gate) · up, gate_up [m, 2·inter] = [gate | up]
// per row, bf16 or fp32; out bf16.
absl::Status GeGlu(const bf16* gate_up, int64_t m, int64_t inter, bf16* out, cudaStream_t stream);
absl::Status GeGlu(const float* gate_up, int64_t m, int64_t inter, bf16* out,
                   cudaStream_t stream);

// x[n] = cap · tanh(x / cap) in place (final logit softcap).
absl::Status Softcap(float* x, int64_t n, float cap, cudaStream_t stream);

// --- QK-norm + RoPE + paged KV write (qk_rope.cu) ---

struct QkvRopeParams {
  int64_t tokens = 0;
  int64_t num_heads = 0;     // Nq
  int64_t num_kv_heads = 0;  // Nkv
  int64_t head_dim = 0;      // D: a multiple of 64, at most 512
  // [T, (Nq + 2·Nkv)·D] bf16, the fused QKV projection output: q heads, then
  // k heads, then v heads. With k_eq_v (Gemma 4 global layers) there is no v
  // part, [T, (Nq + Nkv)·D], and v is the raw k projection.
  const bf16* qkv = nullptr;
  bool k_eq_v = false;
  const float* q_norm = nullptr;  // [D] or null: no q norm (Gemma 2)
  const float* k_norm = nullptr;  // [D] or null
  bool v_norm = false;            // weightless RMSNorm on v (Gemma 4)
  bool plus_one = false;          // norm weights in "1 + w" form
  float eps = 1e-6f;
  const int32_t* positions = nullptr;  // [T] absolute positions
  const float* inv_freq = nullptr;     // [D/2] from cpu::RopeInvFreq (default/linear/proportional)
  // [T] cache slot of each token, block_id · block_size + offset (the
  // worker's block table resolved for this step); a negative slot is skipped.
  const int64_t* slot_mapping = nullptr;
  int64_t num_slots = 0;     // num_blocks · block_size, for the range check
  bf16* q_out = nullptr;     // [T, Nq, D]
  bf16* k_cache = nullptr;   // [num_blocks, block_size, Nkv·D]
  bf16* v_cache = nullptr;   // [num_blocks, block_size, Nkv·D]
};

// q_out = RoPE(q_norm(q)); k_cache[slot] = RoPE(k_norm(k)); v_cache[slot] =
// v_norm(v). A slot >= num_slots is a caller bug caught on the device
// (counted in *bad_slots when non-null, the write skipped).
absl::Status QkNormRopeKv(const QkvRopeParams& p, int32_t* bad_slots, cudaStream_t stream);

// The checks every QkvRopeParams consumer shares (positive sizes, non-null
// buffers), errors naming `op`; kernels add their own head-dim limits.
absl::Status CheckQkvRopeParams(const char* op, const QkvRopeParams& p);

// --- sampling (sample.cu) ---

// One request's sampling parameters, as worker/sampler.h (no repetition
// penalty here: the caller applies it to the logits first).
struct SampleParams {
  float temperature = 0;  // 0: greedy
  int32_t top_k = 0;      // 0: off
  float top_p = 1.0f;     // 1: off
  float min_p = 0.0f;     // 0: off
  uint64_t seed = 0;
  int64_t step = 0;
};

// ids[b] = the token the CPU Sampler picks for logits[b] with params[b]:
// argmax when temperature is 0, else Gumbel-max over the top-k / top-p /
// min-p survivors with noise from (seed, step, id), same hash as the CPU.
// logits [B, V] fp32, params [B] (device), ids [B] int32.
absl::Status Sample(const float* logits, int64_t batch, int64_t vocab, const SampleParams* params,
                    int32_t* ids, cudaStream_t stream);

// --- MoE (moe.cu) ---

// Router (spec §5.1). x1 [T, H] fp32, router_scale [H], router_proj [E, H]
// bf16, per_expert_scale [E]; ids [T, k] int32, weights [T, k] fp32 in
// descending probability (ties: lower id first). E <= 1024, k <= 32.
absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const bf16* router_proj, int64_t E, const float* per_expert_scale,
                      int64_t top_k, float eps, int32_t* ids, float* weights,
                      cudaStream_t stream);

// Rows of the grouped GEMM tile: each expert's rows are padded to this.
inline constexpr int64_t kMoeTileRows = 64;

// Upper bounds known without looking at the routing.
inline int64_t MoeMaxTiles(int64_t T, int64_t E, int64_t k) {
  return (T * k + kMoeTileRows - 1) / kMoeTileRows + E;
}
inline int64_t MoeMaxRows(int64_t T, int64_t E, int64_t k) {
  return MoeMaxTiles(T, E, k) * kMoeTileRows;
}

// Token permutation by expert. Pairs p = t·k + j go to rows grouped by
// expert in ascending id, pairs of one expert in ascending p, each expert's
// group padded to kMoeTileRows.
//   ids         [T·k]           expert of each pair (checked: bad ids count in *bad)
//   offsets     [E + 1]         first row of each expert's group; [E] = rows used
//   row_src     [max_rows]      pair feeding each row, -1 for padding
//   pair_row    [T·k]           row of each pair
//   tile_expert [max_tiles]     expert of each tile of rows, -1 past the end
//   x [T, H] bf16 -> xp [max_rows, H] bf16 (padding rows zero)
absl::Status MoePermute(const int32_t* ids, int64_t T, int64_t k, int64_t E, const bf16* x,
                        int64_t H, int32_t* offsets, int32_t* row_src, int32_t* pair_row,
                        int32_t* tile_expert, bf16* xp, int32_t* bad, cudaStream_t stream);

// Grouped GEMM: for each tile of kMoeTileRows rows with expert e =
// tile_expert[tile] >= 0: c[rows, N] = a[rows, K] · w_e[N, K]ᵀ with
// w_e = w + e·N·K. a bf16, w bf16 [E·N, K], c fp32; fp32 accumulation on
// tensor cores. N % 64 == 0, K % 32 == 0.
absl::Status MoeGroupedGemm(const bf16* a, const int32_t* tile_expert, int64_t max_tiles,
                            const bf16* w, int64_t E, int64_t N, int64_t K, float* c,
                            cudaStream_t stream);

// out[t, H] = Σ_j weights[t, j] · y[pair_row[t·k + j]], summed in ascending
// expert id (as the CPU reference). y [rows, H] fp32, out fp32.
absl::Status MoeCombine(const float* y, const int32_t* ids, const float* weights,
                        const int32_t* pair_row, int64_t T, int64_t k, int64_t H, float* out,
                        cudaStream_t stream);

// The whole expert block (spec §5.2), = cpu::MoeExperts:
//   x [T, H] bf16, gate_up [E·2F, H] bf16, down [E·H, F] bf16, out [T, H] fp32.
size_t MoeExpertsWorkspaceBytes(int64_t T, int64_t H, int64_t F, int64_t E, int64_t k);
absl::Status MoeExperts(const bf16* x, int64_t T, int64_t H, const int32_t* ids,
                        const float* weights, int64_t k, const bf16* gate_up, const bf16* down,
                        int64_t E, int64_t F, float* out, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream);

// --- FP8 weights (fp8.cu) ---

enum class Fp8Scaling : uint8_t {
  kPerChannel,  // scales [N]: w[n, k] = fp8 · scales[n]
  kBlock128,    // scales [ceil(N/128), ceil(K/128)]: per 128×128 block
};

// w_out[N, K] bf16 = dequantized e4m3 w [N, K].
absl::Status DequantizeFp8(const uint8_t* w, int64_t N, int64_t K, const float* scales,
                           Fp8Scaling scaling, bf16* w_out, cudaStream_t stream);

// Decode-sized weight-streaming GEMM: y[M, N] = x[M, K] · dq(w)ᵀ, M <= 16,
// K % 16 == 0; x bf16, w e4m3, y fp32 or bf16 (exactly one non-null).
inline constexpr int64_t kFp8SmallM = 16;
absl::Status Fp8MatMulSmallM(const bf16* x, int64_t M, const uint8_t* w, int64_t N, int64_t K,
                             const float* scales, Fp8Scaling scaling, float* y_f32, bf16* y_bf16,
                             cudaStream_t stream);

}  // namespace facet::cuda
