// Embedding gather, RMSNorm (plain and fused with the residual add), GeGLU,
// softcap. Memory-bound: one pass over the data where the math allows,
// fp32 arithmetic, one block per row for the reductions.
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace facet::cuda {
namespace {

constexpr int kRowThreads = 256;

int RowThreads(int64_t dim) {
  // Small rows (per-head norms, tests) do not need 8 warps.
  return dim >= 1024 ? kRowThreads : dim >= 256 ? 128 : 32;
}

__global__ void EmbedKernel(const bf16* table, int64_t vocab, int64_t dim, const int32_t* ids,
                            float scale, float* out, int32_t* bad_ids) {
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  float* o = out + row * dim;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0 && bad_ids != nullptr) atomicAdd(bad_ids, 1);
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = 0.0f;
    return;
  }
  const bf16* t = table + int64_t(id) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = __bfloat162float(t[c]) * scale;
}

__device__ __forceinline__ float NormWeight(const float* w, int64_t i, bool plus_one) {
  if (w == nullptr) return 1.0f;
  return plus_one ? 1.0f + w[i] : w[i];
}

template <typename T>
__global__ void RmsNormKernel(const T* x, const float* w, bf16* y, int64_t dim, float eps,
                              bool plus_one) {
  __shared__ float scratch[32];
  const T* xr = x + int64_t(blockIdx.x) * dim;
  bf16* yr = y + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ToF32(xr[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(BlockSum(ss, scratch) / float(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    yr[i] = __float2bfloat16(ToF32(xr[i]) * inv * NormWeight(w, i, plus_one));
  }
}

__global__ void AddRmsNormKernel(const bf16* branch, const float* w_post, float* resid,
                                 float resid_scale, const float* w_next, bf16* next, int64_t dim,
                                 float eps, bool plus_one) {
  __shared__ float scratch[32];
  const int64_t off = int64_t(blockIdx.x) * dim;
  const bf16* b = branch + off;
  float* r = resid + off;
  float inv_post = 1.0f;
  if (w_post != nullptr) {
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = __bfloat162float(b[i]);
      ss += v * v;
    }
    inv_post = rsqrtf(BlockSum(ss, scratch) / float(dim) + eps);
  }
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float a = __bfloat162float(b[i]);
    if (w_post != nullptr) a = a * inv_post * NormWeight(w_post, i, plus_one);
    const float v = (r[i] + a) * resid_scale;
    r[i] = v;  // re-read below by this same thread only
    ss += v * v;
  }
  if (next == nullptr) return;
  const float inv = rsqrtf(BlockSum(ss, scratch) / float(dim) + eps);
  bf16* n = next + off;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    n[i] = __float2bfloat16(r[i] * inv * NormWeight(w_next, i, plus_one));
  }
}

// Four passes over the row (the later ones from L1/L2): the two branch
// norms, the outer post-norm, then the residual update and the next norm.
__global__ void MoeBlockEndKernel(const bf16* dense, const float* w1, const float* experts,
                                  const float* w2, const float* w_post, float* resid,
                                  float resid_scale, const float* w_next, bf16* next, int64_t dim,
                                  float eps) {
  __shared__ float scratch[32];
  const int64_t off = int64_t(blockIdx.x) * dim;
  const bf16* d = dense + off;
  const float* e = experts + off;
  float* r = resid + off;
  float ss_d = 0.0f, ss_e = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float a = __bfloat162float(d[i]), b = e[i];
    ss_d += a * a;
    ss_e += b * b;
  }
  const float inv_d = rsqrtf(BlockSum(ss_d, scratch) / float(dim) + eps);
  const float inv_e = rsqrtf(BlockSum(ss_e, scratch) / float(dim) + eps);
  auto branch_sum = [&](int64_t i) {
    return __bfloat162float(d[i]) * inv_d * w1[i] + e[i] * inv_e * w2[i];
  };
  float ss_f = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float f = branch_sum(i);
    ss_f += f * f;
  }
  const float inv_f = rsqrtf(BlockSum(ss_f, scratch) / float(dim) + eps);
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = (r[i] + branch_sum(i) * inv_f * w_post[i]) * resid_scale;
    r[i] = v;
    ss += v * v;
  }
  if (next == nullptr) return;
  const float inv = rsqrtf(BlockSum(ss, scratch) / float(dim) + eps);
  bf16* n = next + off;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    n[i] = __float2bfloat16(r[i] * inv * NormWeight(w_next, i, false));
  }
}

template <typename T>
__global__ void GeGluKernel(const T* gate_up, int64_t inter, bf16* out) {
  const int64_t row = blockIdx.x;
  const int64_t i = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const T* g = gate_up + row * 2 * inter;
  out[row * inter + i] = __float2bfloat16(GeluTanh(ToF32(g[i])) * ToF32(g[inter + i]));
}

__global__ void SoftcapKernel(float* x, int64_t n, float cap) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

absl::Status CheckRows(const char* op, int64_t rows, int64_t dim) {
  RETURN_IF_ERROR(CheckPositive(op, "rows", rows));
  RETURN_IF_ERROR(CheckPositive(op, "dim", dim));
  if (rows > INT32_MAX) return absl::InvalidArgumentError(absl::StrCat(op, ": rows ", rows, " too many"));
  return absl::OkStatus();
}

template <typename T>
absl::Status RmsNormImpl(const T* x, const float* w, bf16* y, int64_t rows, int64_t dim, float eps,
                         bool plus_one, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRows("RmsNorm", rows, dim));
  RETURN_IF_ERROR(CheckNonNull("RmsNorm", "x", x));
  RETURN_IF_ERROR(CheckNonNull("RmsNorm", "y", y));
  RmsNormKernel<T><<<unsigned(rows), RowThreads(dim), 0, stream>>>(x, w, y, dim, eps, plus_one);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

template <typename T>
absl::Status GeGluImpl(const T* gate_up, int64_t m, int64_t inter, bf16* out, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRows("GeGlu", m, inter));
  RETURN_IF_ERROR(CheckNonNull("GeGlu", "gate_up", gate_up));
  RETURN_IF_ERROR(CheckNonNull("GeGlu", "out", out));
  if (CeilDiv(inter, 256) > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("GeGlu: inter ", inter, " too large"));
  }
  dim3 grid(unsigned(m), unsigned(CeilDiv(inter, 256)));
  GeGluKernel<T><<<grid, 256, 0, stream>>>(gate_up, inter, out);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace

absl::Status Embed(const bf16* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                   float scale, float* out, int32_t* bad_ids, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRows("Embed", n, dim));
  RETURN_IF_ERROR(CheckPositive("Embed", "vocab", vocab));
  RETURN_IF_ERROR(CheckNonNull("Embed", "table", table));
  RETURN_IF_ERROR(CheckNonNull("Embed", "ids", ids));
  RETURN_IF_ERROR(CheckNonNull("Embed", "out", out));
  EmbedKernel<<<unsigned(n), RowThreads(dim), 0, stream>>>(table, vocab, dim, ids, scale, out,
                                                           bad_ids);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status RmsNorm(const float* x, const float* w, bf16* y, int64_t rows, int64_t dim, float eps,
                     bool plus_one, cudaStream_t stream) {
  return RmsNormImpl(x, w, y, rows, dim, eps, plus_one, stream);
}

absl::Status RmsNorm(const bf16* x, const float* w, bf16* y, int64_t rows, int64_t dim, float eps,
                     bool plus_one, cudaStream_t stream) {
  return RmsNormImpl(x, w, y, rows, dim, eps, plus_one, stream);
}

absl::Status AddRmsNorm(const bf16* branch, const float* w_post, float* resid, float resid_scale,
                        const float* w_next, bf16* next, int64_t rows, int64_t dim, float eps,
                        bool plus_one, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRows("AddRmsNorm", rows, dim));
  RETURN_IF_ERROR(CheckNonNull("AddRmsNorm", "branch", branch));
  RETURN_IF_ERROR(CheckNonNull("AddRmsNorm", "resid", resid));
  AddRmsNormKernel<<<unsigned(rows), RowThreads(dim), 0, stream>>>(
      branch, w_post, resid, resid_scale, w_next, next, dim, eps, plus_one);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status MoeBlockEnd(const bf16* dense, const float* w_post1, const float* experts,
                         const float* w_post2, const float* w_post, float* resid,
                         float resid_scale, const float* w_next, bf16* next, int64_t rows,
                         int64_t dim, float eps, cudaStream_t stream) {
  constexpr const char* op = "MoeBlockEnd";
  RETURN_IF_ERROR(CheckRows(op, rows, dim));
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"dense", dense},
                           {"w_post1", w_post1},
                           {"experts", experts},
                           {"w_post2", w_post2},
                           {"w_post", w_post},
                           {"resid", resid}}) {
    RETURN_IF_ERROR(CheckNonNull(op, name, ptr));
  }
  MoeBlockEndKernel<<<unsigned(rows), RowThreads(dim), 0, stream>>>(
      dense, w_post1, experts, w_post2, w_post, resid, resid_scale, w_next, next, dim, eps);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status GeGlu(const bf16* gate_up, int64_t m, int64_t inter, bf16* out, cudaStream_t stream) {
  return GeGluImpl(gate_up, m, inter, out, stream);
}

absl::Status GeGlu(const float* gate_up, int64_t m, int64_t inter, bf16* out,
                   cudaStream_t stream) {
  return GeGluImpl(gate_up, m, inter, out, stream);
}

absl::Status Softcap(float* x, int64_t n, float cap, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckPositive("Softcap", "n", n));
  RETURN_IF_ERROR(CheckNonNull("Softcap", "x", x));
  if (!(cap > 0.0f)) return absl::InvalidArgumentError(absl::StrCat("Softcap: cap must be > 0, got ", cap));
  SoftcapKernel<<<unsigned(CeilDiv(n, 256)), 256, 0, stream>>>(x, n, cap);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
