// Plain C++ attention over a paged KV cache: the CPU twin of the CUDA
// attention kernels (kernels/cuda/attention/). Slow and obvious on purpose —
// no SIMD, no threads, no Highway — so the GPU test binary can link it where
// only libc/libstdc++ and the CUDA libraries exist.
//
// Layout shared with the CUDA kernels (one layer):
//   k, v        [num_blocks, block_size, Nkv, D]
//   block_table [num_seqs, max_blocks]: logical block i of a sequence holds
//               positions [i·block_size, (i+1)·block_size); -1 = released
//               (sliding pools drop blocks that left the window).
//   q, out      [T, Nq, D], sequences packed back to back (q_start).
// Sequence s has kv_len[s] positions in the cache, and its n = q_start[s+1] −
// q_start[s] queries are the last n of them (chunked prefill: the chunk's own
// K/V are written before attention), so query i sits at kv_len − n + i.
//
// Gemma 4 global layers with K = V (spec §4.8): the cache holds only the
// normalised shared source u = kr / rms(kr) per head; V = u and
// K = RoPE(u ⊙ k_norm_weight) is rebuilt when read (KvSourceRebuild).
//
// Split-KV ("flash decoding"): each query row's visible key range is cut
// into `splits` equal pieces; a piece yields its normalised output and
// log-sum-exp, and MergeAttentionStates combines the pieces. The same merge
// serves context parallelism (pieces from different ranks).
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cpu/ops.h"

namespace facet::cpu {

struct PagedKvLayer {
  const float* k = nullptr;            // [num_blocks, block_size, Nkv, D]
  const float* v = nullptr;            // same; null when k holds the K = V source
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks]
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t max_blocks = 0;  // block table row length
};

// K = RoPE(u ⊙ k_norm_weight) from the cached source u (V = u).
struct KvSourceRebuild {
  const float* k_norm_weight = nullptr;  // [D], plain scale (Gemma 4: no +1)
  const float* inv_freq = nullptr;       // [D/2]; zero entries do not turn
  // Round the rebuilt K to bf16, as a kernel that feeds K to bf16 tensor
  // cores does; lets a GPU test compare at bf16 precision, not below it.
  bool round_key_to_bf16 = false;
};

struct PagedBatch {
  int64_t num_seqs = 0;
  const int32_t* q_start = nullptr;  // [num_seqs + 1], q_start[0] = 0
  const int32_t* kv_len = nullptr;   // [num_seqs], >= that sequence's query count
};

// K rebuilt from one cached source row: k[d] = RoPE(u ⊙ w)[d] at `pos`, with
// the same fp32 operations as Rope() in ops.h.
void RebuildKeyFromSource(const float* u, const KvSourceRebuild& r, int64_t head_dim, int32_t pos,
                          float* k);

// The cached source of a K = V layer from the raw K projection, per head:
// u = kr · (mean(kr²) + eps)^-½ (Gemma 4 RMSNorm without weight, spec §2.2),
// which is exactly V (v_norm) and, times k_norm's weight, K before RoPE.
//   kr, u [rows, head_dim] (rows = tokens · Nkv); u may alias kr.
void KvSourceFromProjection(const float* kr, int64_t rows, int64_t head_dim, float eps, float* u);

// Checks shapes, the block table (every block a query can see must be a
// valid id) and the split count; INVALID_ARGUMENT says which.
absl::Status CheckPagedAttention(const AttentionParams& p, const PagedBatch& b,
                                 const PagedKvLayer& kv, const KvSourceRebuild* rebuild,
                                 int64_t splits);

// Split-KV partial attention. p.num_q_tokens = q_start[num_seqs].
//   o_part [splits, T, Nq, D] normalised partial outputs (0 for an empty piece)
//   lse    [splits, T, Nq]    natural-log sum of exp(score); −inf for an empty piece
absl::Status PagedAttentionPartial(const AttentionParams& p, const PagedBatch& b,
                                   const PagedKvLayer& kv, const KvSourceRebuild* rebuild,
                                   const float* q, int64_t splits, float* o_part, float* lse);

// out[r, :] = Σ_s exp(lse[s, r] − M) · o_part[s, r, :] / Σ_s exp(lse[s, r] − M),
// M = max_s lse[s, r]; rows whose pieces are all empty get zeros.
//   o_part [splits, rows, D], lse [splits, rows], out [rows, D]
void MergeAttentionStates(const float* o_part, const float* lse, int64_t splits, int64_t rows,
                          int64_t head_dim, float* out);

// Full attention = partial with `splits` pieces + merge. `workspace` holds
// PagedAttentionWorkspaceFloats(p, splits) floats (may be null for one split).
//   out [T, Nq, D]
absl::Status PagedAttention(const AttentionParams& p, const PagedBatch& b, const PagedKvLayer& kv,
                            const KvSourceRebuild* rebuild, const float* q, int64_t splits,
                            float* workspace, float* out);
int64_t PagedAttentionWorkspaceFloats(const AttentionParams& p, int64_t splits);

}  // namespace facet::cpu
