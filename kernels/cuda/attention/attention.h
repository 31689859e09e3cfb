// Flash attention over the paged KV cache on CUDA (DESIGN.md §4; spec
// gemma-architecture.md §4). One tiled kernel with an online fp32 softmax on
// bf16 tensor cores (mma.sync m16n8k16) serves both phases:
//   prefill  64 (D = 512: 32) query rows per block — rows are (token, query
//            head of the GQA group) pairs of one sequence and KV head;
//   decode   16 rows per block and the keys split into pieces
//            ("flash-decoding"), merged by MergeAttentionStates.
// Head dims 128, 256 and 512 are compile-time constants chosen at one switch;
// sliding window (0 <= qpos − kpos <= W − 1), Gemma 2 softcap and any scale
// are runtime values. Gemma 4 K = V global layers read a cache that holds only
// the normalised source u and rebuild K = RoPE(u ⊙ k_norm) in shared memory.
//
// Layout (the CPU twin kernels/cpu/attention_paged.h documents the same):
//   k, v        [num_blocks, block_size, Nkv, D] bf16
//   block_table [num_seqs, max_blocks] int32, logical block i = positions
//               [i·block_size, (i+1)·block_size), -1 = released
//   q, out      [T, Nq, D] bf16, sequences back to back (q_start)
// Sequence s's n queries are the last n of its kv_len[s] cached positions.
//
// Contract (STYLE.md §4): PlanAttention once per step (shapes and lengths the
// scheduler knows on the host) → workspace size and split count; the launch
// checks its arguments, never allocates, runs on the caller's stream.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace facet::cuda {

struct AttentionShape {
  int num_heads = 0;     // Nq
  int num_kv_heads = 0;  // Nkv; query head h reads kv head h / (Nq / Nkv)
  int head_dim = 0;      // 128, 256 or 512
  float scale = 1.0f;    // multiplies q·k (Gemma 4: 1)
  float softcap = 0.0f;  // 0: none; else s = softcap · tanh(s / softcap) after scale
  int window = 0;        // 0: global; else key allowed iff 0 <= qpos − kpos <= window − 1
};

struct PagedKvCache {
  const __nv_bfloat16* k = nullptr;  // [num_blocks, block_size, Nkv, D]
  const __nv_bfloat16* v = nullptr;  // same; null: k holds the K = V source u
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks] (device)
  int64_t num_blocks = 0;
  int block_size = 0;
  int max_blocks = 0;
};

// Gemma 4 K = V layers: K = RoPE(u ⊙ k_norm_weight); pairs (i, i + D/2) with
// i < rope_pairs turn by pos · inv_freq[i] (fp32 angle, fp32 sincos), the
// rest are only scaled (proportional RoPE: rope_pairs = 64 of 256).
struct KvSourceRebuild {
  const float* k_norm_weight = nullptr;  // [D] (device)
  const float* inv_freq = nullptr;       // [rope_pairs] (device)
  int rope_pairs = 0;
};

struct AttentionBatch {
  int num_seqs = 0;
  const int32_t* q_start = nullptr;  // [num_seqs + 1] (device), q_start[0] = 0
  const int32_t* kv_len = nullptr;   // [num_seqs] (device)
  // Host-side facts the plan sizes the grid with.
  int total_q = 0;     // q_start[num_seqs]
  int max_q_len = 0;   // longest query run of one sequence
  int max_kv_len = 0;  // longest kv_len
};

struct AttentionPlan {
  int head_dim = 0;
  int rows_per_block = 0;  // 16 (decode) or 64 / 32 (prefill)
  int row_blocks = 0;      // per (sequence, kv head)
  int splits = 1;          // key pieces per row block
  size_t workspace_bytes = 0;  // splits > 1: o_part [splits, T, Nq, D] f32 + lse [splits, T, Nq] f32
};

// Picks the kernel shape and the split count: splits only when the
// (row block × sequence × kv head) blocks cannot fill `num_sms` twice, and
// never into pieces shorter than 256 keys. `max_splits` (0 = 64) bounds it.
absl::StatusOr<AttentionPlan> PlanAttention(const AttentionShape& shape, const AttentionBatch& batch,
                                            int num_sms, int max_splits = 0);

// o_part + lse for `splits` pieces (0 for one piece): what a plan with that
// split count reports.
size_t AttentionWorkspaceBytes(const AttentionShape& shape, int total_q, int splits);

// out [T, Nq, D] bf16. `workspace` holds plan.workspace_bytes (device).
absl::Status PagedAttention(const AttentionPlan& plan, const AttentionShape& shape,
                            const AttentionBatch& batch, const PagedKvCache& kv,
                            const KvSourceRebuild* rebuild, const __nv_bfloat16* q,
                            __nv_bfloat16* out, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

// Split partial states → output (also the context-parallel merge):
//   o_part [splits, rows, D] f32 normalised, lse [splits, rows] f32 (−inf: empty),
//   out [rows, D] bf16 = Σ_s e^(lse_s − M) o_s / Σ_s e^(lse_s − M); all-empty rows → 0.
absl::Status MergeAttentionStates(const float* o_part, const float* lse, int splits, int64_t rows,
                                  int head_dim, __nv_bfloat16* out, cudaStream_t stream);

// Appends new rows: token t goes to slot slots[t] = physical block ·
// block_size + offset (−1: skipped, e.g. padding).
//   new_k, new_v [T, Nkv, D] bf16 (both or neither of new_v / v_cache)
//   k_cache, v_cache [num_blocks, block_size, Nkv, D] bf16
absl::Status WritePagedKv(const __nv_bfloat16* new_k, const __nv_bfloat16* new_v,
                          const int64_t* slots, int num_tokens, int num_kv_heads, int head_dim,
                          __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, cudaStream_t stream);

// Gemma 4 K = V layers: caches u = kr · (mean(kr²) + eps)^-½ per head — V
// itself, and K before the k-norm weight and RoPE — once, instead of K and V.
//   kr [T, Nkv, D] bf16 raw k projection; cache as above.
absl::Status WriteKvSource(const __nv_bfloat16* kr, const int64_t* slots, int num_tokens,
                           int num_kv_heads, int head_dim, float eps, __nv_bfloat16* cache,
                           cudaStream_t stream);

// Bytes per cached token per layer: K and V rows, or the single source row.
inline int64_t KvBytesPerToken(int num_kv_heads, int head_dim, bool kv_source) {
  return int64_t(kv_source ? 1 : 2) * num_kv_heads * head_dim * 2;
}

}  // namespace facet::cuda
