// Plain CUDA kernels the GPU model falls back to where the tuned kernels of
// kernels/cuda/ do not take a shape: head dims outside the attention
// kernel's {128, 256, 512} (the golden test models use 32 and 64), MoE
// widths the grouped GEMM's 64-row tiles do not divide, and the row gather
// before the LM head. Slow and obvious on purpose (STYLE.md §7): one block
// per output row, fp32 arithmetic, the same contracts and layouts as the
// tuned kernels they stand in for, so the model switches per layer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/status.h"
#include "kernels/cuda/attention/attention.h"
#include "kernels/cuda/ops.h"

namespace facet::cuda {

// Same contract as QkNormRopeKv (kernels/cuda/ops.h), any even head dim up
// to 1024.
absl::Status RefQkNormRopeKv(const QkvRopeParams& p, int32_t* bad_slots, cudaStream_t stream);

// Same result as PagedAttention over separate K and V caches (no K = V
// source rebuild), any head dim up to 1024. One block per (token, query head),
// an online softmax over the keys one at a time. `seq_of_token` is not
// needed: the kernel finds each token's sequence in q_start.
//   q, out [T, Nq, D] bf16; kv as PagedKvCache with v != null.
absl::Status RefPagedAttention(const AttentionShape& shape, const AttentionBatch& batch,
                               const PagedKvCache& kv, const __nv_bfloat16* q,
                               __nv_bfloat16* out, cudaStream_t stream);

// Same contract as MoeExperts: x [T, H] bf16, ids/weights [T, k], gate_up
// [E·2F, H] bf16, down [E·H, F] bf16, out [T, H] fp32. The experts' partial
// sums are added in ascending expert id, as the CPU reference.
size_t RefMoeExpertsWorkspaceBytes(int64_t T, int64_t F, int64_t k);
absl::Status RefMoeExperts(const bf16* x, int64_t T, int64_t H, const int32_t* ids,
                           const float* weights, int64_t k, const bf16* gate_up, const bf16* down,
                           int64_t E, int64_t F, float* out, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream);

// dst[r, :] = src[rows[r], :] for r < n; src [*, dim] bf16, dst [n, dim] bf16.
absl::Status GatherRows(const bf16* src, int64_t dim, const int32_t* rows, int64_t n, bf16* dst,
                        cudaStream_t stream);

}  // namespace facet::cuda
