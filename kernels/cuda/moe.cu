// Gemma 4 mixture of experts (spec §5): router, token permutation by
// expert, a grouped GEMM on tensor cores (WMMA, bf16 in, fp32 accumulate),
// GeGLU, and the weighted un-permute. The grid sizes come from upper bounds
// (MoeMaxTiles), so nothing waits for the routing on the host.
#include <mma.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace facet::cuda {
namespace {

constexpr int kMaxTopK = 32;
constexpr int kMaxExperts = 1024;

// --- router: one block per token ---
__global__ void MoeRouteKernel(const float* x1, int64_t H, const float* router_scale,
                               const bf16* proj, int64_t E, const float* per_expert_scale, int k,
                               float eps, int32_t* ids, float* weights) {
  extern __shared__ float smem[];
  float* z = smem;          // [H]
  float* logits = smem + H;  // [E]
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* x = x1 + t * H;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) ss += x[i] * x[i];
  const float inv = rsqrtf(BlockSum(ss, scratch) / float(H) + eps);
  const float root = rsqrtf(float(H));
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    z[i] = x[i] * inv * router_scale[i] * root;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t e = warp; e < E; e += warps) {
    const bf16* w = proj + e * H;
    float acc = 0.0f;
    for (int64_t i = lane; i < H; i += 32) acc += __bfloat162float(w[i]) * z[i];
    acc = WarpSum(acc);
    if (lane == 0) logits[e] = acc;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  // E <= 1024 and k <= 32: a serial softmax and selection is a few microseconds.
  float mx = -INFINITY;
  for (int64_t e = 0; e < E; ++e) mx = fmaxf(mx, logits[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) sum += logits[e] = expf(logits[e] - mx);
  int32_t chosen[kMaxTopK];
  float kept = 0.0f;
  for (int j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int32_t e = 0; e < int32_t(E); ++e) {
      bool taken = false;
      for (int q = 0; q < j; ++q) taken |= chosen[q] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;  // ties: lower id
    }
    chosen[j] = best;
    kept += logits[best] / sum;
  }
  for (int j = 0; j < k; ++j) {
    ids[t * k + j] = chosen[j];
    weights[t * k + j] = logits[chosen[j]] / sum / kept * per_expert_scale[chosen[j]];
  }
}

// --- permutation ---

// Counts per expert, padded offsets and the tile -> expert map. One block.
__global__ void __launch_bounds__(1024) MoePlanKernel(const int32_t* ids, int64_t pairs, int64_t E, int64_t max_tiles,
                              int32_t* offsets, int32_t* tile_expert, int32_t* bad) {
  __shared__ int32_t counts[kMaxExperts];
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int32_t e = ids[p];
    if (e >= 0 && e < E) {
      atomicAdd(&counts[e], 1);
    } else if (bad != nullptr) {
      atomicAdd(bad, 1);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t tile = 0;
    for (int64_t e = 0; e < E; ++e) {
      offsets[e] = tile * int32_t(kMoeTileRows);
      const int32_t tiles = (counts[e] + int32_t(kMoeTileRows) - 1) / int32_t(kMoeTileRows);
      for (int32_t q = 0; q < tiles; ++q) tile_expert[tile + q] = int32_t(e);
      tile += tiles;
    }
    offsets[E] = tile * int32_t(kMoeTileRows);
    for (int64_t q = tile; q < max_tiles; ++q) tile_expert[q] = -1;
  }
}

// One block per expert: ranks of its pairs in ascending pair order.
__global__ void MoeScatterKernel(const int32_t* ids, int64_t pairs, const int32_t* offsets,
                                 int32_t* row_src, int32_t* pair_row) {
  __shared__ int32_t warp_counts[32];
  const int32_t e = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int32_t base = offsets[e];
  for (int64_t start = 0; start < pairs; start += blockDim.x) {
    const int64_t p = start + threadIdx.x;
    const bool mine = p < pairs && ids[p] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int32_t before = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_counts[w];
      total += warp_counts[w];
    }
    if (mine) {
      const int32_t row = base + before + __popc(ballot & ((1u << lane) - 1));
      row_src[row] = int32_t(p);
      pair_row[p] = row;
    }
    base += total;
    __syncthreads();
  }
}

__global__ void MoeGatherKernel(const bf16* x, int64_t H, int k, const int32_t* row_src,
                                bf16* xp) {
  const int64_t row = blockIdx.x;
  const int32_t p = row_src[row];
  bf16* dst = xp + row * H;
  if (p < 0) {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) dst[i] = __float2bfloat16(0.0f);
    return;
  }
  const bf16* src = x + int64_t(p / k) * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) dst[i] = src[i];
}

// --- grouped GEMM: 64×64 output tile per block, 4 warps of 32×32, BK = 32 ---
constexpr int kBM = int(kMoeTileRows), kBN = 64, kBK = 32, kPad = 8;

__global__ void __launch_bounds__(128)
    MoeGroupedGemmKernel(const bf16* a, const int32_t* tile_expert, const bf16* w, int64_t N,
                         int64_t K, float* c) {
  using namespace nvcuda;
  const int32_t e = tile_expert[blockIdx.y];
  if (e < 0) return;
  __shared__ __align__(32) bf16 as[kBM][kBK + kPad];  // [m][k]
  __shared__ __align__(32) bf16 bs[kBN][kBK + kPad];  // [n][k]: col-major K×N for matrix_b
  const int64_t row0 = int64_t(blockIdx.y) * kBM, col0 = int64_t(blockIdx.x) * kBN;
  const bf16* ab = a + row0 * K;
  const bf16* wb = w + (int64_t(e) * N + col0) * K;
  const int warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    // 64×32 bf16 per operand = 256 chunks of 8; two per thread.
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int chunk = threadIdx.x + q * 128;
      const int r = chunk >> 2, kc = (chunk & 3) * 8;
      *reinterpret_cast<uint4*>(&as[r][kc]) =
          *reinterpret_cast<const uint4*>(ab + int64_t(r) * K + k0 + kc);
      *reinterpret_cast<uint4*>(&bs[r][kc]) =
          *reinterpret_cast<const uint4*>(wb + int64_t(r) * K + k0 + kc);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[wm + 16 * i][kk], kBK + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[wn + 16 * j][kk], kBK + kPad);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float* out = c + (row0 + wm + 16 * i) * N + col0 + wn + 16 * j;
      wmma::store_matrix_sync(out, acc[i][j], unsigned(N), wmma::mem_row_major);
    }
}

// --- combine: one block per token ---
__global__ void MoeCombineKernel(const float* y, const int32_t* ids, const float* weights,
                                 const int32_t* pair_row, int k, int64_t H, float* out) {
  const int64_t t = blockIdx.x;
  // Slots in ascending expert id (stable), as the CPU reference sums them.
  int order[kMaxTopK];
  for (int j = 0; j < k; ++j) {
    int q = j;
    while (q > 0 && ids[t * k + order[q - 1]] > ids[t * k + j]) {
      order[q] = order[q - 1];
      --q;
    }
    order[q] = j;
  }
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float acc = 0.0f;
    for (int q = 0; q < k; ++q) {
      const int j = order[q];
      acc += weights[t * k + j] * y[int64_t(pair_row[t * k + j]) * H + i];
    }
    out[t * H + i] = acc;
  }
}

size_t Align256(size_t b) { return (b + 255) / 256 * 256; }

struct MoeWorkspace {
  int32_t* row_src;      // [max_rows]
  int32_t* pair_row;     // [T·k]
  int32_t* offsets;      // [E + 1]
  int32_t* tile_expert;  // [max_tiles]
  bf16* xp;              // [max_rows, H]
  float* gu;             // [max_rows, 2F]
  bf16* act;             // [max_rows, F]
  float* y;              // [max_rows, H]
  size_t bytes;
};

MoeWorkspace CarveWorkspace(void* base, int64_t T, int64_t H, int64_t F, int64_t E, int64_t k) {
  const int64_t rows = MoeMaxRows(T, E, k), tiles = MoeMaxTiles(T, E, k);
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* at = p == nullptr ? nullptr : p + off;
    off += Align256(bytes);
    return at;
  };
  MoeWorkspace w;
  w.row_src = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * rows));
  w.pair_row = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * T * k));
  w.offsets = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * (E + 1)));
  w.tile_expert = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * tiles));
  w.xp = reinterpret_cast<bf16*>(take(sizeof(bf16) * rows * H));
  w.gu = reinterpret_cast<float*>(take(sizeof(float) * rows * 2 * F));
  w.act = reinterpret_cast<bf16*>(take(sizeof(bf16) * rows * F));
  w.y = reinterpret_cast<float*>(take(sizeof(float) * rows * H));
  w.bytes = off;
  return w;
}

absl::Status CheckShape(const char* op, int64_t T, int64_t E, int64_t k) {
  RETURN_IF_ERROR(CheckPositive(op, "T", T));
  RETURN_IF_ERROR(CheckPositive(op, "num_experts", E));
  RETURN_IF_ERROR(CheckPositive(op, "top_k", k));
  if (E > kMaxExperts || k > kMaxTopK || k > E) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": need top_k <= num_experts <= ",
                                                   kMaxExperts, " and top_k <= ", kMaxTopK,
                                                   ", got top_k ", k, ", num_experts ", E));
  }
  if (T * k >= INT32_MAX / 2 || MoeMaxTiles(T, E, k) > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": T ", T, " too large"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const bf16* router_proj, int64_t E, const float* per_expert_scale,
                      int64_t top_k, float eps, int32_t* ids, float* weights,
                      cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape("MoeRoute", T, E, top_k));
  RETURN_IF_ERROR(CheckPositive("MoeRoute", "H", H));
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"x1", x1},
                           {"router_scale", router_scale},
                           {"router_proj", router_proj},
                           {"per_expert_scale", per_expert_scale},
                           {"ids", ids},
                           {"weights", weights}}) {
    RETURN_IF_ERROR(CheckNonNull("MoeRoute", name, ptr));
  }
  const size_t smem = sizeof(float) * size_t(H + E);
  if (smem > 48 * 1024) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: H + E = ", H + E, " exceeds 12288"));
  }
  MoeRouteKernel<<<unsigned(T), 256, smem, stream>>>(x1, H, router_scale, router_proj, E,
                                                     per_expert_scale, int(top_k), eps, ids,
                                                     weights);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status MoePermute(const int32_t* ids, int64_t T, int64_t k, int64_t E, const bf16* x,
                        int64_t H, int32_t* offsets, int32_t* row_src, int32_t* pair_row,
                        int32_t* tile_expert, bf16* xp, int32_t* bad, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape("MoePermute", T, E, k));
  RETURN_IF_ERROR(CheckPositive("MoePermute", "H", H));
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"ids", ids},
                           {"x", x},
                           {"offsets", offsets},
                           {"row_src", row_src},
                           {"pair_row", pair_row},
                           {"tile_expert", tile_expert},
                           {"xp", xp}}) {
    RETURN_IF_ERROR(CheckNonNull("MoePermute", name, ptr));
  }
  const int64_t pairs = T * k, rows = MoeMaxRows(T, E, k), tiles = MoeMaxTiles(T, E, k);
  FACET_CUDA_RETURN(cudaMemsetAsync(row_src, 0xff, sizeof(int32_t) * rows, stream));
  MoePlanKernel<<<1, 1024, 0, stream>>>(ids, pairs, E, tiles, offsets, tile_expert, bad);
  MoeScatterKernel<<<unsigned(E), 256, 0, stream>>>(ids, pairs, offsets, row_src, pair_row);
  MoeGatherKernel<<<unsigned(rows), 128, 0, stream>>>(x, H, int(k), row_src, xp);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status MoeGroupedGemm(const bf16* a, const int32_t* tile_expert, int64_t max_tiles,
                            const bf16* w, int64_t E, int64_t N, int64_t K, float* c,
                            cudaStream_t stream) {
  RETURN_IF_ERROR(CheckPositive("MoeGroupedGemm", "max_tiles", max_tiles));
  RETURN_IF_ERROR(CheckPositive("MoeGroupedGemm", "N", N));
  RETURN_IF_ERROR(CheckPositive("MoeGroupedGemm", "K", K));
  if (N % kBN != 0 || K % kBK != 0 || max_tiles > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MoeGroupedGemm: need N % ", kBN, " == 0 and K % ",
                                                   kBK, " == 0, got N ", N, ", K ", K));
  }
  dim3 grid(unsigned(N / kBN), unsigned(max_tiles));
  MoeGroupedGemmKernel<<<grid, 128, 0, stream>>>(a, tile_expert, w, N, K, c);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status MoeCombine(const float* y, const int32_t* ids, const float* weights,
                        const int32_t* pair_row, int64_t T, int64_t k, int64_t H, float* out,
                        cudaStream_t stream) {
  RETURN_IF_ERROR(CheckPositive("MoeCombine", "T", T));
  RETURN_IF_ERROR(CheckPositive("MoeCombine", "H", H));
  if (k <= 0 || k > kMaxTopK) {
    return absl::InvalidArgumentError(absl::StrCat("MoeCombine: top_k ", k, " outside [1, ", kMaxTopK, "]"));
  }
  MoeCombineKernel<<<unsigned(T), 256, 0, stream>>>(y, ids, weights, pair_row, int(k), H, out);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

size_t MoeExpertsWorkspaceBytes(int64_t T, int64_t H, int64_t F, int64_t E, int64_t k) {
  return CarveWorkspace(nullptr, T, H, F, E, k).bytes;
}

absl::Status MoeExperts(const bf16* x, int64_t T, int64_t H, const int32_t* ids,
                        const float* weights, int64_t k, const bf16* gate_up, const bf16* down,
                        int64_t E, int64_t F, float* out, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape("MoeExperts", T, E, k));
  RETURN_IF_ERROR(CheckPositive("MoeExperts", "F", F));
  const MoeWorkspace ws = CarveWorkspace(workspace, T, H, F, E, k);
  if (workspace == nullptr || workspace_bytes < ws.bytes) {
    return absl::InvalidArgumentError(absl::StrCat("MoeExperts: workspace of ", workspace_bytes,
                                                   " bytes, need ", ws.bytes));
  }
  const int64_t tiles = MoeMaxTiles(T, E, k), rows = MoeMaxRows(T, E, k);
  RETURN_IF_ERROR(MoePermute(ids, T, k, E, x, H, ws.offsets, ws.row_src, ws.pair_row, ws.tile_expert, ws.xp,
                             nullptr, stream));
  RETURN_IF_ERROR(MoeGroupedGemm(ws.xp, ws.tile_expert, tiles, gate_up, E, 2 * F, H, ws.gu, stream));
  // Padding rows run through GeGLU too (gelu(0)·0 = 0); cheaper than a mask.
  RETURN_IF_ERROR(GeGlu(ws.gu, rows, F, ws.act, stream));
  RETURN_IF_ERROR(MoeGroupedGemm(ws.act, ws.tile_expert, tiles, down, E, H, F, ws.y, stream));
  return MoeCombine(ws.y, ids, weights, ws.pair_row, T, k, H, out, stream);
}

}  // namespace facet::cuda
