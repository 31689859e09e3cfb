// Plain fallback kernels of the GPU model (reference_kernels.h).
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "models/cuda/reference_kernels.h"

namespace facet::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxDim = 1024;              // head dim bound of the fallbacks
constexpr int kPerThread = kMaxDim / kThreads;  // output columns a thread owns

// One block per (token, head) of q, k and v, as QkNormRopeKvKernel.
__global__ void RefQkNormRopeKvKernel(QkvRopeParams p, int32_t* bad_slots) {
  __shared__ float scratch[32];
  const int64_t D = p.head_dim, half = D / 2;
  const int64_t heads_total = p.num_heads + 2 * p.num_kv_heads;
  const int64_t t = blockIdx.x / heads_total, h = blockIdx.x % heads_total;
  const int64_t row_heads = p.num_heads + (p.k_eq_v ? 1 : 2) * p.num_kv_heads;
  enum { kQ, kK, kV } kind;
  int64_t src_head, dst_head;
  if (h < p.num_heads) {
    kind = kQ, src_head = h, dst_head = h;
  } else if (h < p.num_heads + p.num_kv_heads) {
    kind = kK, src_head = h, dst_head = h - p.num_heads;
  } else {
    kind = kV, dst_head = h - p.num_heads - p.num_kv_heads;
    src_head = p.k_eq_v ? p.num_heads + dst_head : h;
  }
  const bf16* src = p.qkv + (t * row_heads + src_head) * D;
  const float* w = kind == kQ ? p.q_norm : kind == kK ? p.k_norm : nullptr;
  const bool norm = w != nullptr || (kind == kV && p.v_norm);
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float v = __bfloat162float(src[i]);
    ss += v * v;
  }
  const float inv = norm ? rsqrtf(BlockSum(ss, scratch) / float(D) + p.eps) : 1.0f;

  bf16* dst;
  if (kind == kQ) {
    dst = p.q_out + (t * p.num_heads + dst_head) * D;
  } else {
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) return;
    if (slot >= p.num_slots) {
      if (threadIdx.x == 0 && bad_slots != nullptr) atomicAdd(bad_slots, 1);
      return;
    }
    dst = (kind == kK ? p.k_cache : p.v_cache) + (slot * p.num_kv_heads + dst_head) * D;
  }
  const float pos = float(p.positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float a = __bfloat162float(src[i]), b = __bfloat162float(src[i + half]);
    if (norm) {
      float wa = 1.0f, wb = 1.0f;
      if (w != nullptr) {
        wa = w[i], wb = w[i + half];
        if (p.plus_one) wa += 1.0f, wb += 1.0f;
      }
      a = a * inv * wa;
      b = b * inv * wb;
    }
    if (kind != kV) {
      float s, c;
      sincosf(pos * p.inv_freq[i], &s, &c);
      const float x = a, y = b;
      a = x * c - y * s;
      b = y * c + x * s;
    }
    dst[i] = __float2bfloat16(a);
    dst[i + half] = __float2bfloat16(b);
  }
}

struct RefAttnArgs {
  AttentionShape shape;
  int num_seqs;
  const int32_t* q_start;
  const int32_t* kv_len;
  PagedKvCache kv;
  const bf16* q;
  bf16* out;
};

// One block per (token, query head); keys one at a time with an online
// softmax; thread i owns output columns i, i + 128, ...
__global__ void RefAttentionKernel(RefAttnArgs a) {
  __shared__ float scratch[32];
  __shared__ float qs[kMaxDim];
  const int t = blockIdx.x, h = blockIdx.y;
  const int D = a.shape.head_dim;
  int s = 0;
  while (s + 1 < a.num_seqs && a.q_start[s + 1] <= t) ++s;
  const int n = a.q_start[s + 1] - a.q_start[s];
  const int qpos = a.kv_len[s] - n + (t - a.q_start[s]);
  const int lo = a.shape.window > 0 ? max(0, qpos - a.shape.window + 1) : 0;
  const int kvh = h / (a.shape.num_heads / a.shape.num_kv_heads);
  const bf16* q = a.q + (int64_t(t) * a.shape.num_heads + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = __bfloat162float(q[d]);
  __syncthreads();
  const int32_t* table = a.kv.block_table + int64_t(s) * a.kv.max_blocks;
  float acc[kPerThread];
  for (int i = 0; i < kPerThread; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j = lo; j <= qpos; ++j) {
    const int32_t block = table[j / a.kv.block_size];
    if (block < 0) continue;  // released: never inside the window
    const int64_t row = (int64_t(block) * a.kv.block_size + j % a.kv.block_size) *
                            a.shape.num_kv_heads + kvh;
    const bf16* k = a.kv.k + row * D;
    const bf16* v = a.kv.v + row * D;
    float dot = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) dot += qs[d] * __bfloat162float(k[d]);
    float score = BlockSum(dot, scratch) * a.shape.scale;
    if (a.shape.softcap > 0) score = a.shape.softcap * tanhf(score / a.shape.softcap);
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), pj = expf(score - m_new);
    l = l * corr + pj;
    for (int i = 0; i < kPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d < D) acc[i] = acc[i] * corr + pj * __bfloat162float(v[d]);
    }
    m = m_new;
  }
  bf16* o = a.out + (int64_t(t) * a.shape.num_heads + h) * D;
  for (int i = 0; i < kPerThread; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < D) o[d] = __float2bfloat16(l > 0 ? acc[i] / l : 0.0f);
  }
}

// gu[p, 0:2F] = gate_up_e · x_t for pair p = t·k + j, e = ids[p] (fp32).
__global__ void RefExpertUpKernel(const bf16* x, int64_t H, const int32_t* ids, int64_t k,
                                  const bf16* gate_up, int64_t E, int64_t F, float* gu) {
  const int64_t p = blockIdx.x, t = p / k;
  const int32_t e = ids[p];
  if (e < 0 || e >= E) return;  // MoeRoute never produces one; guards memory
  const bf16* xt = x + t * H;
  for (int64_t r = threadIdx.x; r < 2 * F; r += blockDim.x) {
    const bf16* w = gate_up + (int64_t(e) * 2 * F + r) * H;
    float sum = 0.0f;
    for (int64_t i = 0; i < H; ++i) sum += __bfloat162float(w[i]) * __bfloat162float(xt[i]);
    gu[p * 2 * F + r] = sum;
  }
}

// out[t, i] = Σ_j weights[t, j] · down_e[i, :] · (gelu(g) ⊙ u), j in
// ascending expert id. act [T·k, F] fp32 scratch is filled first.
__global__ void RefExpertDownKernel(const float* gu, const int32_t* ids, const float* weights,
                                    int64_t k, const bf16* down, int64_t E, int64_t H, int64_t F,
                                    float* act, float* out) {
  const int64_t t = blockIdx.x;
  for (int64_t j = 0; j < k; ++j) {
    const float* g = gu + (t * k + j) * 2 * F;
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
      act[(t * k + j) * F + f] = GeluTanh(g[f]) * g[F + f];
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float sum = 0.0f;
    int32_t last = -1;
    for (int64_t n = 0; n < k; ++n) {
      // The n-th smallest expert id (ties keep slot order; ids are distinct).
      int64_t pick = -1;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = ids[t * k + j];
        if (e > last && (pick < 0 || e < ids[t * k + pick])) pick = j;
      }
      if (pick < 0) break;
      const int32_t e = ids[t * k + pick];
      last = e;
      if (e >= E) continue;
      const bf16* w = down + (int64_t(e) * H + i) * F;
      const float* av = act + (t * k + pick) * F;
      float y = 0.0f;
      for (int64_t f = 0; f < F; ++f) y += __bfloat162float(w[f]) * av[f];
      sum += weights[t * k + pick] * y;
    }
    out[t * H + i] = sum;
  }
}

__global__ void GatherRowsKernel(const bf16* src, int64_t dim, const int32_t* rows, bf16* dst) {
  const int64_t r = blockIdx.x;
  const bf16* s = src + int64_t(rows[r]) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[r * dim + i] = s[i];
}

}  // namespace

absl::Status RefQkNormRopeKv(const QkvRopeParams& p, int32_t* bad_slots, cudaStream_t stream) {
  constexpr const char* op = "RefQkNormRopeKv";
  RETURN_IF_ERROR(CheckQkvRopeParams(op, p));
  if (p.head_dim <= 0 || p.head_dim % 2 != 0 || p.head_dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": head_dim ", p.head_dim, " must be even and at most ", kMaxDim));
  }
  const int64_t blocks = p.tokens * (p.num_heads + 2 * p.num_kv_heads);
  RefQkNormRopeKvKernel<<<unsigned(blocks), kThreads, 0, stream>>>(p, bad_slots);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status RefPagedAttention(const AttentionShape& shape, const AttentionBatch& batch,
                               const PagedKvCache& kv, const bf16* q, bf16* out,
                               cudaStream_t stream) {
  constexpr const char* op = "RefPagedAttention";
  if (shape.head_dim <= 0 || shape.head_dim > kMaxDim || shape.num_heads <= 0 ||
      shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": bad shape (heads ", shape.num_heads, ", kv heads ", shape.num_kv_heads,
        ", head_dim ", shape.head_dim, "; head_dim at most ", kMaxDim, ")"));
  }
  if (batch.num_seqs <= 0 || batch.total_q <= 0 || kv.block_size <= 0 || kv.max_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": empty batch or cache (seqs ",
                                                   batch.num_seqs, ", tokens ", batch.total_q,
                                                   ", block_size ", kv.block_size, ")"));
  }
  if (int64_t(batch.max_kv_len) > int64_t(kv.max_blocks) * kv.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": max_kv_len ", batch.max_kv_len,
                                                   " exceeds the block table's ",
                                                   int64_t(kv.max_blocks) * kv.block_size));
  }
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"q", q},
                           {"out", out},
                           {"k", kv.k},
                           {"v", kv.v},
                           {"block_table", kv.block_table},
                           {"q_start", batch.q_start},
                           {"kv_len", batch.kv_len}}) {
    RETURN_IF_ERROR(CheckNonNull(op, name, ptr));
  }
  RefAttnArgs a{shape, batch.num_seqs, batch.q_start, batch.kv_len, kv, q, out};
  const dim3 grid(unsigned(batch.total_q), unsigned(shape.num_heads));
  RefAttentionKernel<<<grid, kThreads, 0, stream>>>(a);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

size_t RefMoeExpertsWorkspaceBytes(int64_t T, int64_t F, int64_t k) {
  return size_t(T) * k * 3 * F * sizeof(float);  // gu [T·k, 2F] + act [T·k, F]
}

absl::Status RefMoeExperts(const bf16* x, int64_t T, int64_t H, const int32_t* ids,
                           const float* weights, int64_t k, const bf16* gate_up, const bf16* down,
                           int64_t E, int64_t F, float* out, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream) {
  constexpr const char* op = "RefMoeExperts";
  RETURN_IF_ERROR(CheckPositive(op, "T", T));
  RETURN_IF_ERROR(CheckPositive(op, "H", H));
  RETURN_IF_ERROR(CheckPositive(op, "k", k));
  RETURN_IF_ERROR(CheckPositive(op, "E", E));
  RETURN_IF_ERROR(CheckPositive(op, "F", F));
  if (workspace == nullptr || workspace_bytes < RefMoeExpertsWorkspaceBytes(T, F, k)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": workspace of ", workspace_bytes,
                                                   " bytes; needs ",
                                                   RefMoeExpertsWorkspaceBytes(T, F, k)));
  }
  float* gu = static_cast<float*>(workspace);
  float* act = gu + T * k * 2 * F;
  RefExpertUpKernel<<<unsigned(T * k), kThreads, 0, stream>>>(x, H, ids, k, gate_up, E, F, gu);
  FACET_CUDA_RETURN_LAUNCH();
  RefExpertDownKernel<<<unsigned(T), kThreads, 0, stream>>>(gu, ids, weights, k, down, E, H, F,
                                                            act, out);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status GatherRows(const bf16* src, int64_t dim, const int32_t* rows, int64_t n, bf16* dst,
                        cudaStream_t stream) {
  RETURN_IF_ERROR(CheckPositive("GatherRows", "n", n));
  RETURN_IF_ERROR(CheckPositive("GatherRows", "dim", dim));
  GatherRowsKernel<<<unsigned(n), kThreads, 0, stream>>>(src, dim, rows, dst);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
