// QK-norm + RoPE fused with the write of K and V into the paged cache
// (spec §4.2, §4.7). One warp per (token, head) over the Nq query heads,
// Nkv key heads and Nkv value heads; lane l owns the RoPE pairs
// (i, i + D/2) for i = l, l + 32, ..., so a pair never crosses lanes.
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace facet::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

// PAIRS = D / 64 pairs per lane; one instantiation per supported head dim
// (the DISPATCH switch below), so the per-lane arrays live in registers.
template <int PAIRS>
__global__ void QkNormRopeKvKernel(QkvRopeParams p, int32_t* bad_slots) {
  constexpr int D = PAIRS * 64, HALF = D / 2;
  const int lane = threadIdx.x & 31;
  const int64_t item = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t heads_total = p.num_heads + 2 * p.num_kv_heads;
  if (item >= p.tokens * heads_total) return;
  const int64_t t = item / heads_total;
  const int64_t h = item % heads_total;
  const int64_t row_heads = p.num_heads + (p.k_eq_v ? 1 : 2) * p.num_kv_heads;

  // Which head of which tensor, and where its input lives.
  enum { kQ, kK, kV } kind;
  int64_t src_head, dst_head;
  if (h < p.num_heads) {
    kind = kQ, src_head = h, dst_head = h;
  } else if (h < p.num_heads + p.num_kv_heads) {
    kind = kK, dst_head = h - p.num_heads, src_head = h;
  } else {
    kind = kV, dst_head = h - p.num_heads - p.num_kv_heads;
    src_head = p.k_eq_v ? p.num_heads + dst_head : h;  // K = V: the raw k projection
  }
  const bf16* src = p.qkv + (t * row_heads + src_head) * D;

  float a[PAIRS], b[PAIRS];
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < PAIRS; ++j) {
    a[j] = __bfloat162float(src[lane + 32 * j]);
    b[j] = __bfloat162float(src[lane + 32 * j + HALF]);
    ss += a[j] * a[j] + b[j] * b[j];
  }
  const float* w = kind == kQ ? p.q_norm : kind == kK ? p.k_norm : nullptr;
  const bool norm = w != nullptr || (kind == kV && p.v_norm);
  if (norm) {
    const float inv = rsqrtf(WarpSum(ss) / float(D) + p.eps);
#pragma unroll
    for (int j = 0; j < PAIRS; ++j) {
      float wa = 1.0f, wb = 1.0f;
      if (w != nullptr) {
        wa = w[lane + 32 * j], wb = w[lane + 32 * j + HALF];
        if (p.plus_one) wa += 1.0f, wb += 1.0f;
      }
      a[j] = a[j] * inv * wa;
      b[j] = b[j] * inv * wb;
    }
  }
  if (kind != kV) {
    const float pos = float(p.positions[t]);
#pragma unroll
    for (int j = 0; j < PAIRS; ++j) {
      // As HF: angle = position · inv_freq in fp32; a zero frequency is a no-op.
      const float angle = pos * p.inv_freq[lane + 32 * j];
      float s, c;
      sincosf(angle, &s, &c);
      const float x = a[j], y = b[j];
      a[j] = x * c - y * s;
      b[j] = y * c + x * s;
    }
  }
  bf16* dst;
  if (kind == kQ) {
    dst = p.q_out + (t * p.num_heads + dst_head) * D;
  } else {
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) return;
    if (slot >= p.num_slots) {
      if (lane == 0 && bad_slots != nullptr) atomicAdd(bad_slots, 1);
      return;
    }
    dst = (kind == kK ? p.k_cache : p.v_cache) + (slot * p.num_kv_heads + dst_head) * D;
  }
#pragma unroll
  for (int j = 0; j < PAIRS; ++j) {
    dst[lane + 32 * j] = __float2bfloat16(a[j]);
    dst[lane + 32 * j + HALF] = __float2bfloat16(b[j]);
  }
}

}  // namespace

absl::Status CheckQkvRopeParams(const char* op, const QkvRopeParams& p) {
  RETURN_IF_ERROR(CheckPositive(op, "tokens", p.tokens));
  RETURN_IF_ERROR(CheckPositive(op, "num_heads", p.num_heads));
  RETURN_IF_ERROR(CheckPositive(op, "num_kv_heads", p.num_kv_heads));
  RETURN_IF_ERROR(CheckPositive(op, "num_slots", p.num_slots));
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"qkv", p.qkv},
                           {"positions", p.positions},
                           {"inv_freq", p.inv_freq},
                           {"slot_mapping", p.slot_mapping},
                           {"q_out", p.q_out},
                           {"k_cache", p.k_cache},
                           {"v_cache", p.v_cache}}) {
    RETURN_IF_ERROR(CheckNonNull(op, name, ptr));
  }
  return absl::OkStatus();
}

absl::Status QkNormRopeKv(const QkvRopeParams& p, int32_t* bad_slots, cudaStream_t stream) {
  constexpr const char* op = "QkNormRopeKv";
  RETURN_IF_ERROR(CheckQkvRopeParams(op, p));
  if (p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": num_heads ", p.num_heads,
                                                   " is not a multiple of num_kv_heads ",
                                                   p.num_kv_heads));
  }
  const int64_t items = p.tokens * (p.num_heads + 2 * p.num_kv_heads);
  const unsigned blocks = unsigned(CeilDiv(items, kWarpsPerBlock));
  const unsigned threads = 32 * kWarpsPerBlock;
  switch (p.head_dim) {  // DISPATCH_HEAD_DIM
    case 64: QkNormRopeKvKernel<1><<<blocks, threads, 0, stream>>>(p, bad_slots); break;
    case 128: QkNormRopeKvKernel<2><<<blocks, threads, 0, stream>>>(p, bad_slots); break;
    case 256: QkNormRopeKvKernel<4><<<blocks, threads, 0, stream>>>(p, bad_slots); break;
    case 512: QkNormRopeKvKernel<8><<<blocks, threads, 0, stream>>>(p, bad_slots); break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", p.head_dim, " unsupported (64, 128, 256, 512)"));
  }
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
