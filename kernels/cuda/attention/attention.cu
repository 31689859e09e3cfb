// Paged flash attention (see attention.h). One block = one (row block,
// sequence · kv head, key split). Warps form a WM × WD grid: warp (wm, wd)
// owns query rows [16·wm, 16·wm + 16) and output columns
// [128·wd, 128·wd + 128), so the fp32 output tile is 64 registers per thread
// for every head dim. With WD > 1 (D = 256, 512) each warp computes Q·Kᵀ over
// its 128 dims only and the WD partial score tiles are summed through shared
// memory in a fixed order, so every warp of a row group sees bit-identical
// scores and softmax statistics.
//
// Per key tile of 32 (one buffer each for K and V): K(next) streams in with
// cp.async during this tile's softmax and P·V, V(next) during the next tile's
// Q·Kᵀ and softmax. The K = V source variant loads u into the V buffer and
// rebuilds K beside it (no prefetch: K depends on u).
//
// Fragment layouts follow the PTX ISA's mma.m16n8k16 / ldmatrix figures.

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention/attention.h"
#include "kernels/cuda/check.h"

namespace facet::cuda {
namespace {

constexpr int kBN = 32;      // keys per tile
constexpr int kDW = 128;     // output columns per warp
constexpr int kPad = 8;      // bf16 row padding: ldmatrix rows land in distinct banks
constexpr int kMinKeysPerSplit = 256;

struct Params {
  const __nv_bfloat16* q;  // [T, Nq, D]
  __nv_bfloat16* out;      // [T, Nq, D]
  float* o_part;           // [splits, T, Nq, D]
  float* lse;              // [splits, T, Nq]
  const int32_t* q_start;
  const int32_t* kv_len;
  const __nv_bfloat16* k;  // [num_blocks, block_size, Nkv, D]
  const __nv_bfloat16* v;  // null: K = V source
  const int32_t* block_table;
  const float* k_norm_weight;
  const float* inv_freq;
  int rope_pairs;
  int max_blocks, block_size;
  int num_heads, num_kv_heads, group;
  float scale, softcap;
  int window;
  int splits, total_q;
};

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(SmemAddr(smem)), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void Ldmatrix4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void Ldmatrix4T(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// c[16×8] += a[16×16] · b[16×8], bf16 in, fp32 accumulate.
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <int D, int WM>
struct Cfg {
  static constexpr int kWD = D / kDW;
  static constexpr int kWarps = WM * kWD;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBM = WM * 16;
  static constexpr int kDS = D + kPad;  // smem row stride, bf16 elements
  static constexpr size_t kSmemBytes =
      size_t(kBM + 2 * kBN) * kDS * sizeof(__nv_bfloat16) + (kWD > 1 ? size_t(kWarps) * 32 * 16 * 4 : 0);
};

// Stages keys [tile, tile + kBN) of `cache` into smem rows; keys at or past
// `end` become zero rows (never garbage: 0 · NaN would poison P·V).
template <int D, int NT>
__device__ __forceinline__ void LoadTile(__nv_bfloat16* dst, const __nv_bfloat16* cache,
                                         const Params& P, const int32_t* table, int kvh, int tile,
                                         int end) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kDS = D + kPad;
  for (int idx = threadIdx.x; idx < kBN * kChunks; idx += NT) {
    const int key = idx / kChunks, c = idx % kChunks;
    const int pos = tile + key;
    __nv_bfloat16* s = dst + key * kDS + c * 8;
    if (pos < end) {
      const int64_t blk = table[pos / P.block_size];
      const __nv_bfloat16* g =
          cache + ((blk * P.block_size + pos % P.block_size) * P.num_kv_heads + kvh) * int64_t(D) + c * 8;
      CpAsync16(s, g);
    } else {
      *reinterpret_cast<uint4*>(s) = make_uint4(0, 0, 0, 0);
    }
  }
}

// K rows from the source rows already in sV: k = RoPE(u ⊙ w).
template <int D, int NT>
__device__ __forceinline__ void RebuildK(__nv_bfloat16* sK, const __nv_bfloat16* sV, const Params& P,
                                         int tile) {
  constexpr int kHalf = D / 2, kDS = D + kPad;
  for (int idx = threadIdx.x; idx < kBN * kHalf; idx += NT) {
    const int key = idx / kHalf, i = idx % kHalf;
    const float a = __bfloat162float(sV[key * kDS + i]) * P.k_norm_weight[i];
    const float b = __bfloat162float(sV[key * kDS + i + kHalf]) * P.k_norm_weight[i + kHalf];
    float ka = a, kb = b;
    if (i < P.rope_pairs) {
      float sn, cs;
      sincosf(float(tile + key) * P.inv_freq[i], &sn, &cs);
      ka = a * cs - b * sn;
      kb = b * cs + a * sn;
    }
    sK[key * kDS + i] = __float2bfloat16(ka);
    sK[key * kDS + i + kHalf] = __float2bfloat16(kb);
  }
}

template <int D, int WM>
__global__ void __launch_bounds__(Cfg<D, WM>::kThreads)
    AttentionKernel(const Params P) {
  using C = Cfg<D, WM>;
  constexpr int kWD = C::kWD, kBM = C::kBM, kDS = C::kDS, NT = C::kThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kBM, kDS]
  __nv_bfloat16* sK = sQ + kBM * kDS;                               // [kBN, kDS]
  __nv_bfloat16* sV = sK + kBN * kDS;                               // [kBN, kDS]
  float* sS = reinterpret_cast<float*>(sV + kBN * kDS);             // [warps, 32, 16]

  const int seq = blockIdx.y / P.num_kv_heads, kvh = blockIdx.y % P.num_kv_heads;
  const int split = blockIdx.z;
  const int q0 = P.q_start[seq], n = P.q_start[seq + 1] - q0;
  const int rows = n * P.group;
  // Causal prefill: later row blocks see more keys; start them first.
  const int row_base = (gridDim.x - 1 - blockIdx.x) * kBM;
  if (row_base >= rows) return;
  const int valid_rows = min(kBM, rows - row_base);
  const int L = P.kv_len[seq];
  const int pos_first = L - n + row_base / P.group;
  const int pos_last = L - n + (row_base + valid_rows - 1) / P.group;
  const int lo = P.window > 0 ? max(0, pos_first - P.window + 1) : 0;
  const int hi = pos_last + 1;
  int per = (hi - lo + P.splits - 1) / P.splits;
  per = (per + kBN - 1) / kBN * kBN;
  const int j0 = min(hi, lo + split * per), j1 = min(hi, j0 + per);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / kWD, wd = warp % kWD;
  const int g = lane / 4, t4 = lane % 4;
  const int32_t* table = P.block_table + int64_t(seq) * P.max_blocks;
  const bool source = P.v == nullptr;
  const __nv_bfloat16* vcache = source ? P.k : P.v;

  // Q rows: zero past the block's valid rows.
  for (int idx = threadIdx.x; idx < kBM * (D / 8); idx += NT) {
    const int r = idx / (D / 8), c = idx % (D / 8);
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid_rows) {
      const int row = row_base + r;
      const int token = q0 + row / P.group, head = kvh * P.group + row % P.group;
      val = *reinterpret_cast<const uint4*>(P.q + (int64_t(token) * P.num_heads + head) * D + c * 8);
    }
    *reinterpret_cast<uint4*>(sQ + r * kDS + c * 8) = val;
  }

  // This thread's two rows (g, g + 8 of its warp's 16) and their positions.
  int qpos[2];
  for (int h = 0; h < 2; ++h) {
    const int r = wm * 16 + g + 8 * h;
    qpos[h] = r < valid_rows ? L - n + (row_base + r) / P.group : pos_last;
  }

  float o[kDW / 8][4];  // output tile: 16 n-tiles of 8 columns
#pragma unroll
  for (int i = 0; i < kDW / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  if (!source && j0 < j1) {
    LoadTile<D, NT>(sK, P.k, P, table, kvh, j0, j1);
    CpAsyncCommit();
    LoadTile<D, NT>(sV, P.v, P, table, kvh, j0, j1);
    CpAsyncCommit();
  }
  for (int tile = j0; tile < j1; tile += kBN) {
    const bool more = tile + kBN < j1;
    if (source) {
      LoadTile<D, NT>(sV, vcache, P, table, kvh, tile, j1);
      CpAsyncCommit();
      CpAsyncWait<0>();
      __syncthreads();
      RebuildK<D, NT>(sK, sV, P, tile);
    } else {
      CpAsyncWait<1>();  // K(tile) landed; V(tile) may still be in flight
    }
    __syncthreads();

    // S = Q · Kᵀ over this warp's 128 dims.
    float s[kBN / 8][4];
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDW / 16; ++kk) {
      const int col = wd * kDW + kk * 16;
      uint32_t a[4];
      Ldmatrix4(a, sQ + (wm * 16 + lane % 16) * kDS + col + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        uint32_t b[4];
        Ldmatrix4(b, sK + (np * 16 + lane % 8 + (lane / 16) * 8) * kDS + col + ((lane / 8) % 2) * 8);
        Mma(s[2 * np], a, b[0], b[1]);
        Mma(s[2 * np + 1], a, b[2], b[3]);
      }
    }
    if constexpr (kWD > 1) {
      float* mine = sS + (warp * 32 + lane) * 16;
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[i * 4 + e] = s[i][e];
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float sum = 0.0f;
          for (int w = 0; w < kWD; ++w) sum += sS[((wm * kWD + w) * 32 + lane) * 16 + i * 4 + e];
          s[i][e] = sum;
        }
    } else {
      __syncthreads();  // every warp is done with sK
    }
    if (!source) {
      if (more) LoadTile<D, NT>(sK, P.k, P, table, kvh, tile + kBN, j1);
      CpAsyncCommit();  // possibly empty: keeps the group count uniform
    }

    // Scale, softcap, mask; online softmax on rows g and g + 8.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        const int pos = tile + i * 8 + 2 * t4 + (e & 1);
        float x = s[i][e] * P.scale;
        if (P.softcap > 0.0f) x = P.softcap * tanhf(x / P.softcap);
        const bool ok = pos < j1 && pos <= qpos[h] && (P.window == 0 || qpos[h] - pos < P.window);
        x = ok ? x : -INFINITY;
        s[i][e] = x;
        tile_max[h] = fmaxf(tile_max[h], x);
      }
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
      const float m_new = fmaxf(m[h], tile_max[h]);
      // A row with nothing visible yet keeps m = −inf; exp against 0 gives 0.
      const float ref = m_new == -INFINITY ? 0.0f : m_new;
      corr[h] = m[h] == -INFINITY ? 0.0f : __expf(m[h] - ref);
      m[h] = m_new;
      l[h] *= corr[h];
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const float p = __expf(s[i][e] - ref);
          s[i][e] = p;
          l[h] += p;
        }
    }
#pragma unroll
    for (int i = 0; i < kDW / 8; ++i) {
      o[i][0] *= corr[0];
      o[i][1] *= corr[0];
      o[i][2] *= corr[1];
      o[i][3] *= corr[1];
    }

    if (!source) {
      CpAsyncWait<1>();  // V(tile) landed; K(next) may be in flight
      __syncthreads();
    }
    // O += P · V over this warp's 128 columns.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[4];
      a[0] = PackBf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = PackBf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dn = 0; dn < kDW / 16; ++dn) {
        uint32_t b[4];
        Ldmatrix4T(b, sV + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kDS + wd * kDW + dn * 16 +
                          (lane / 16) * 8);
        Mma(o[2 * dn], a, b[0], b[1]);
        Mma(o[2 * dn + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with sV (and sK for the source variant)
    if (!source) {
      if (more) LoadTile<D, NT>(sV, P.v, P, table, kvh, tile + kBN, j1);
      CpAsyncCommit();
    }
  }
  CpAsyncWait<0>();

  // Row sums live spread over the quad.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wm * 16 + g + 8 * h;
    if (r >= valid_rows) continue;
    const int row = row_base + r;
    const int token = q0 + row / P.group, head = kvh * P.group + row % P.group;
    const int64_t orow = int64_t(token) * P.num_heads + head;
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    if (P.splits == 1) {
      __nv_bfloat16* dst = P.out + orow * D + wd * kDW + 2 * t4;
#pragma unroll
      for (int i = 0; i < kDW / 8; ++i) {
        *reinterpret_cast<__nv_bfloat162*>(dst + i * 8) =
            __floats2bfloat162_rn(o[i][2 * h] * inv, o[i][2 * h + 1] * inv);
      }
    } else {
      const int64_t prow = int64_t(split) * P.total_q * P.num_heads + orow;
      float* dst = P.o_part + prow * D + wd * kDW + 2 * t4;
#pragma unroll
      for (int i = 0; i < kDW / 8; ++i) {
        *reinterpret_cast<float2*>(dst + i * 8) = make_float2(o[i][2 * h] * inv, o[i][2 * h + 1] * inv);
      }
      if (wd == 0 && t4 == 0) P.lse[prow] = l[h] > 0.0f ? m[h] + logf(l[h]) : -INFINITY;
    }
  }
}

// One block per output row; thread d sums over the pieces for its columns.
__global__ void MergeKernel(const float* o_part, const float* lse, int splits, int64_t rows, int D,
                            __nv_bfloat16* out) {
  const int64_t r = blockIdx.x;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, lse[s * rows + r]);
  float wsum = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float x = lse[s * rows + r];
    if (x != -INFINITY) wsum += __expf(x - mx);
  }
  const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float x = lse[s * rows + r];
      if (x != -INFINITY) acc += __expf(x - mx) * o_part[(s * rows + r) * D + d];
    }
    out[r * D + d] = __float2bfloat16(acc * inv);
  }
}

template <int D, int WM>
absl::Status Launch(const Params& P, int row_blocks, int num_seqs, cudaStream_t stream) {
  using C = Cfg<D, WM>;
  // Above 48 KiB dynamic shared memory must be opted into, once per kernel
  // (and per device: one process drives one GPU, DESIGN.md §1).
  static const cudaError_t attr = cudaFuncSetAttribute(
      AttentionKernel<D, WM>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::kSmemBytes));
  FACET_CUDA_RETURN(attr);
  const dim3 grid(row_blocks, num_seqs * P.num_kv_heads, P.splits);
  AttentionKernel<D, WM><<<grid, C::kThreads, C::kSmemBytes, stream>>>(P);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

constexpr int PrefillWarpsM(int D) { return D == 512 ? 2 : 4; }

template <int D>
absl::Status LaunchFor(bool decode, const Params& P, int row_blocks, int num_seqs,
                       cudaStream_t stream) {
  return decode ? Launch<D, 1>(P, row_blocks, num_seqs, stream)
                : Launch<D, PrefillWarpsM(D)>(P, row_blocks, num_seqs, stream);
}

// The one head-dim switch (STYLE.md §5): 3 head dims × {decode, prefill}.
absl::Status LaunchHeadDim(int head_dim, bool decode, const Params& P, int row_blocks, int num_seqs,
                           cudaStream_t stream) {
  switch (head_dim) {
    case 128:
      return LaunchFor<128>(decode, P, row_blocks, num_seqs, stream);
    case 256:
      return LaunchFor<256>(decode, P, row_blocks, num_seqs, stream);
    case 512:
      return LaunchFor<512>(decode, P, row_blocks, num_seqs, stream);
    default:
      return absl::InvalidArgumentError(absl::StrCat("attention: head_dim ", head_dim));
  }
}

int RowsPerBlock(int head_dim, bool decode) { return decode ? 16 : 16 * PrefillWarpsM(head_dim); }

absl::Status CheckShape(const AttentionShape& s) {
  if (s.head_dim != 128 && s.head_dim != 256 && s.head_dim != 512) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: head_dim ", s.head_dim, " unsupported (128, 256 or 512)"));
  }
  if (s.num_heads <= 0 || s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: num_heads ", s.num_heads,
                                                   " must be a positive multiple of num_kv_heads ",
                                                   s.num_kv_heads));
  }
  if (s.window < 0 || !(s.softcap >= 0.0f) || !std::isfinite(s.scale)) {
    return absl::InvalidArgumentError("attention: window and softcap must be >= 0, scale finite");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AttentionPlan> PlanAttention(const AttentionShape& shape, const AttentionBatch& batch,
                                            int num_sms, int max_splits) {
  RETURN_IF_ERROR(CheckShape(shape));
  if (batch.num_seqs < 0 || batch.total_q < 0 || batch.max_q_len < 0 ||
      batch.max_kv_len < batch.max_q_len || num_sms <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention plan: num_seqs ", batch.num_seqs, ", total_q ", batch.total_q, ", max_q_len ",
        batch.max_q_len, ", max_kv_len ", batch.max_kv_len, ", num_sms ", num_sms));
  }
  const int group = shape.num_heads / shape.num_kv_heads;
  AttentionPlan plan;
  plan.head_dim = shape.head_dim;
  const int64_t max_rows = int64_t(batch.max_q_len) * group;
  plan.rows_per_block = RowsPerBlock(shape.head_dim, max_rows <= 16);
  plan.row_blocks = int(std::max<int64_t>(1, (max_rows + plan.rows_per_block - 1) / plan.rows_per_block));
  const int64_t blocks = int64_t(plan.row_blocks) * batch.num_seqs * shape.num_kv_heads;
  // Longest key range one row block reads.
  int64_t keys = batch.max_kv_len;
  if (shape.window > 0) keys = std::min<int64_t>(keys, shape.window - 1 + batch.max_q_len);
  const int64_t cap = max_splits > 0 ? max_splits : 64;
  int64_t splits = 1;
  if (blocks > 0 && blocks < 2 * int64_t(num_sms)) {
    splits = std::min<int64_t>((2 * int64_t(num_sms) + blocks - 1) / blocks, keys / kMinKeysPerSplit);
    splits = std::clamp<int64_t>(splits, 1, cap);
  }
  plan.splits = int(splits);
  plan.workspace_bytes = AttentionWorkspaceBytes(shape, batch.total_q, plan.splits);
  return plan;
}

size_t AttentionWorkspaceBytes(const AttentionShape& shape, int total_q, int splits) {
  if (splits <= 1) return 0;
  return size_t(splits) * total_q * shape.num_heads * (shape.head_dim + 1) * sizeof(float);
}

absl::Status PagedAttention(const AttentionPlan& plan, const AttentionShape& shape,
                            const AttentionBatch& batch, const PagedKvCache& kv,
                            const KvSourceRebuild* rebuild, const __nv_bfloat16* q,
                            __nv_bfloat16* out, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape(shape));
  if (plan.head_dim != shape.head_dim || plan.splits < 1 || plan.row_blocks < 1) {
    return absl::InvalidArgumentError("attention: plan does not match the shape");
  }
  if (batch.num_seqs == 0 || batch.total_q == 0) return absl::OkStatus();
  if (q == nullptr || out == nullptr || batch.q_start == nullptr || batch.kv_len == nullptr ||
      kv.k == nullptr || kv.block_table == nullptr || kv.block_size <= 0 || kv.max_blocks <= 0) {
    return absl::InvalidArgumentError("attention: null pointer or empty block table");
  }
  if (int64_t(batch.max_kv_len) > int64_t(kv.max_blocks) * kv.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("attention: max_kv_len ", batch.max_kv_len,
                                                   " exceeds the block table (", kv.max_blocks,
                                                   " blocks of ", kv.block_size, ")"));
  }
  const int group = shape.num_heads / shape.num_kv_heads;
  const int64_t needed_rows = int64_t(batch.max_q_len) * group;
  if (int64_t(plan.row_blocks) * plan.rows_per_block < needed_rows) {
    return absl::InvalidArgumentError("attention: plan made for shorter query runs");
  }
  if (plan.splits > 1 && (workspace == nullptr || workspace_bytes < plan.workspace_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("attention: workspace of ", workspace_bytes,
                                                   " bytes, plan needs ", plan.workspace_bytes));
  }
  const bool source = kv.v == nullptr;
  if (source && (rebuild == nullptr || rebuild->k_norm_weight == nullptr ||
                 rebuild->inv_freq == nullptr || rebuild->rope_pairs < 0 ||
                 rebuild->rope_pairs > shape.head_dim / 2)) {
    return absl::InvalidArgumentError(
        "attention: a K = V source cache (v == null) needs k_norm_weight, inv_freq and "
        "0 <= rope_pairs <= head_dim / 2");
  }
  Params P{};
  P.q = q;
  P.out = out;
  P.q_start = batch.q_start;
  P.kv_len = batch.kv_len;
  P.k = kv.k;
  P.v = kv.v;
  P.block_table = kv.block_table;
  P.max_blocks = kv.max_blocks;
  P.block_size = kv.block_size;
  P.num_heads = shape.num_heads;
  P.num_kv_heads = shape.num_kv_heads;
  P.group = group;
  P.scale = shape.scale;
  P.softcap = shape.softcap;
  P.window = shape.window;
  P.splits = plan.splits;
  P.total_q = batch.total_q;
  if (source) {
    P.k_norm_weight = rebuild->k_norm_weight;
    P.inv_freq = rebuild->inv_freq;
    P.rope_pairs = rebuild->rope_pairs;
  }
  const int64_t rows = int64_t(batch.total_q) * shape.num_heads;
  if (plan.splits > 1) {
    P.o_part = static_cast<float*>(workspace);                     // [splits, T, Nq, D]
    P.lse = P.o_part + int64_t(plan.splits) * rows * shape.head_dim;  // [splits, T, Nq]
  }
  const bool decode = plan.rows_per_block == 16;
  if (plan.rows_per_block != RowsPerBlock(shape.head_dim, decode)) {
    return absl::InvalidArgumentError("attention: plan rows_per_block does not match head_dim");
  }
  RETURN_IF_ERROR(LaunchHeadDim(shape.head_dim, decode, P, plan.row_blocks, batch.num_seqs, stream));
  if (plan.splits > 1) {
    RETURN_IF_ERROR(
        MergeAttentionStates(P.o_part, P.lse, plan.splits, rows, shape.head_dim, out, stream));
  }
  return absl::OkStatus();
}

absl::Status MergeAttentionStates(const float* o_part, const float* lse, int splits, int64_t rows,
                                  int head_dim, __nv_bfloat16* out, cudaStream_t stream) {
  if (splits < 1 || rows < 0 || head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("merge attention states: splits ", splits,
                                                   ", rows ", rows, ", head_dim ", head_dim));
  }
  if (rows == 0) return absl::OkStatus();
  if (o_part == nullptr || lse == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("merge attention states: null pointer");
  }
  if (rows > int64_t(INT32_MAX)) {
    return absl::InvalidArgumentError("merge attention states: too many rows for one grid");
  }
  MergeKernel<<<unsigned(rows), 128, 0, stream>>>(o_part, lse, splits, rows, head_dim, out);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
