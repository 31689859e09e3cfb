// Appending new K/V rows to the paged cache (see attention.h). One warp per
// (token, kv head) row; 16-byte accesses.

#include <cuda_bf16.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention/attention.h"
#include "kernels/cuda/check.h"

namespace facet::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // warps per block

__device__ __forceinline__ int64_t CacheRow(int64_t slot, int Nkv, int kvh, int D) {
  return (slot * Nkv + kvh) * int64_t(D);
}

__global__ void WriteKvKernel(const __nv_bfloat16* new_k, const __nv_bfloat16* new_v,
                              const int64_t* slots, int rows, int Nkv, int D,
                              __nv_bfloat16* k_cache, __nv_bfloat16* v_cache) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t slot = slots[row / Nkv];
  if (slot < 0) return;
  const int64_t dst = CacheRow(slot, Nkv, row % Nkv, D);
  for (int c = lane; c < D / 8; c += 32) {
    reinterpret_cast<uint4*>(k_cache + dst)[c] = reinterpret_cast<const uint4*>(new_k + int64_t(row) * D)[c];
    if (new_v != nullptr) {
      reinterpret_cast<uint4*>(v_cache + dst)[c] = reinterpret_cast<const uint4*>(new_v + int64_t(row) * D)[c];
    }
  }
}

__global__ void WriteKvSourceKernel(const __nv_bfloat16* kr, const int64_t* slots, int rows, int Nkv,
                                    int D, float eps, __nv_bfloat16* cache) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t slot = slots[row / Nkv];
  if (slot < 0) return;
  const __nv_bfloat16* x = kr + int64_t(row) * D;
  float ss = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const float v = __bfloat162float(x[d]);
    ss += v * v;
  }
  for (int off = 16; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  // Gemma 4 RMSNorm without weight: x · (mean(x²) + eps)^-½ (spec §2.2).
  const float inv = rsqrtf(ss / float(D) + eps);
  __nv_bfloat16* y = cache + CacheRow(slot, Nkv, row % Nkv, D);
  for (int d = lane; d < D; d += 32) y[d] = __float2bfloat16(__bfloat162float(x[d]) * inv);
}

absl::Status CheckWrite(const void* src, const int64_t* slots, int num_tokens, int Nkv, int D,
                        const void* cache) {
  if (num_tokens < 0 || Nkv <= 0 || D <= 0 || D % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv write: num_tokens ", num_tokens, ", Nkv ", Nkv,
                                                   ", head_dim ", D, " (a positive multiple of 8)"));
  }
  if (num_tokens > 0 && (src == nullptr || slots == nullptr || cache == nullptr)) {
    return absl::InvalidArgumentError("kv write: null pointer");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WritePagedKv(const __nv_bfloat16* new_k, const __nv_bfloat16* new_v,
                          const int64_t* slots, int num_tokens, int num_kv_heads, int head_dim,
                          __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckWrite(new_k, slots, num_tokens, num_kv_heads, head_dim, k_cache));
  if ((new_v == nullptr) != (v_cache == nullptr)) {
    return absl::InvalidArgumentError("kv write: new_v and v_cache must both be set or both null");
  }
  if (num_tokens == 0) return absl::OkStatus();
  const int rows = num_tokens * num_kv_heads;
  WriteKvKernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, 32 * kRowsPerBlock, 0, stream>>>(
      new_k, new_v, slots, rows, num_kv_heads, head_dim, k_cache, v_cache);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status WriteKvSource(const __nv_bfloat16* kr, const int64_t* slots, int num_tokens,
                           int num_kv_heads, int head_dim, float eps, __nv_bfloat16* cache,
                           cudaStream_t stream) {
  RETURN_IF_ERROR(CheckWrite(kr, slots, num_tokens, num_kv_heads, head_dim, cache));
  if (!(eps >= 0.0f)) return absl::InvalidArgumentError("kv source write: eps must be >= 0");
  if (num_tokens == 0) return absl::OkStatus();
  const int rows = num_tokens * num_kv_heads;
  WriteKvSourceKernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, 32 * kRowsPerBlock, 0, stream>>>(
      kr, slots, rows, num_kv_heads, head_dim, eps, cache);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
