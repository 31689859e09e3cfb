// Device sampler: the same token as worker/sampler.cc's Sampler for the same
// logits, parameters, seed and step (no repetition penalty). One block per
// request. The filters are found by bisection over the float order instead
// of sorting: the top-k threshold is the largest value v with
// count(x >= v) >= k, the top-p cut the smallest v whose strictly-better mass
// is below top_p · z; each probe is one pass over the row (~32 passes for a
// 262k vocabulary, a few hundred microseconds per row in the worst case).
#include <cfloat>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sample_hash.h"

namespace facet::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int32_t kNoId = INT32_MAX;

// Monotone map between floats (no NaN) and uint32 order.
__device__ __forceinline__ uint32_t OrderKey(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float KeyValue(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Strict order "better first": larger value, then lower id; NaN never wins.
__device__ __forceinline__ bool Better(float av, int32_t ai, float bv, int32_t bi) {
  return av > bv || (av == bv && ai < bi);
}

struct Shared {
  float best_v[32];
  int32_t best_id[32];
  double sum[32];
  long long count[32];
};

__device__ void BlockBest(float& v, int32_t& id, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, id, o);
    if (Better(ov, oi, v, id)) v = ov, id = oi;
  }
  __syncthreads();
  if (lane == 0) sh.best_v[warp] = v, sh.best_id[warp] = id;
  __syncthreads();
  v = sh.best_v[0], id = sh.best_id[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) {
    if (Better(sh.best_v[w], sh.best_id[w], v, id)) v = sh.best_v[w], id = sh.best_id[w];
  }
}

__device__ long long BlockCount(long long c, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  __syncthreads();
  if (lane == 0) sh.count[warp] = c;
  __syncthreads();
  long long total = 0;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) total += sh.count[w];
  return total;
}

__device__ double BlockSumDouble(double s, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  s = WarpSumD(s);
  __syncthreads();
  if (lane == 0) sh.sum[warp] = s;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) total += sh.sum[w];
  return total;
}

// The CPU sampler's unnormalised weight, the same float expression.
__device__ __forceinline__ float Weight(float x, float m, float t) { return expf((x - m) / t); }

__global__ void __launch_bounds__(kThreads) SampleKernel(const float* logits, int64_t vocab, const SampleParams* params,
                             int32_t* ids) {
  __shared__ Shared sh;
  const float* x = logits + int64_t(blockIdx.x) * vocab;
  const SampleParams p = params[blockIdx.x];
  const int32_t V = int32_t(vocab);

  float m = -INFINITY;
  int32_t top_id = kNoId;
  for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
    if (Better(x[i], i, m, top_id)) m = x[i], top_id = i;
  }
  BlockBest(m, top_id, sh);
  if (top_id == kNoId) top_id = 0, m = x[0];  // all NaN, as the CPU's ArgMax
  if (p.temperature == 0.0f || !isfinite(m)) {
    if (threadIdx.x == 0) ids[blockIdx.x] = top_id;
    return;
  }
  const float t = p.temperature;

  // Top-k: the largest threshold value keeping at least k tokens (ties kept).
  float thr_k = -INFINITY;
  if (p.top_k > 0 && p.top_k < V) {
    uint32_t lo = OrderKey(-INFINITY), hi = OrderKey(INFINITY);
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo + 1) / 2;
      const float v = KeyValue(mid);
      long long c = 0;
      for (int32_t i = threadIdx.x; i < V; i += blockDim.x) c += x[i] >= v;
      if (BlockCount(c, sh) >= p.top_k) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    thr_k = KeyValue(lo);
  }

  // Top-p over what top-k kept: the kept prefix, in best-first order, is the
  // tokens whose mass strictly before them is < top_p · z.
  float v_cut = -INFINITY;
  int32_t id_cut = kNoId;  // among tokens equal to v_cut, those with id <= id_cut are kept
  if (p.top_p < 1.0f) {
    double z = 0;
    for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
      if (x[i] >= thr_k) z += Weight(x[i], m, t);
    }
    z = BlockSumDouble(z, sh);
    const double target = double(p.top_p) * z;
    // Smallest value c with mass(x > c) < target.
    uint32_t lo = OrderKey(-INFINITY), hi = OrderKey(INFINITY);
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      const float c = KeyValue(mid);
      double s = 0;
      for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
        if (x[i] >= thr_k && x[i] > c) s += Weight(x[i], m, t);
      }
      if (BlockSumDouble(s, sh) < target) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    const float c = KeyValue(lo);
    // The cut value is the smallest kept value >= c.
    float vmin = INFINITY;
    int32_t dummy = 0;
    for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
      if (x[i] >= thr_k && x[i] >= c && x[i] < vmin) vmin = x[i];
    }
    // Reuse the best-reduction with negated values: the largest -x is the smallest x.
    float neg = -vmin;
    BlockBest(neg, dummy, sh);
    v_cut = -neg;
    double above = 0;
    long long ties = 0;
    for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
      if (x[i] >= thr_k && x[i] > v_cut) above += Weight(x[i], m, t);
      ties += x[i] == v_cut;
    }
    above = BlockSumDouble(above, sh);
    ties = BlockCount(ties, sh);
    // Ties at the cut go in id order while the mass before them is short.
    const double w_cut = Weight(v_cut, m, t);
    long long keep = 0;
    for (double before = above; keep < ties && before < target; before += w_cut) ++keep;
    if (keep < ties) {
      // The keep-th smallest id among the ties.
      int32_t a = 0, b = V - 1;
      while (a < b) {
        const int32_t mid = a + (b - a) / 2;
        long long cnt = 0;
        for (int32_t i = threadIdx.x; i <= mid; i += blockDim.x) cnt += x[i] == v_cut;
        if (BlockCount(cnt, sh) >= keep) {
          b = mid;
        } else {
          a = mid + 1;
        }
      }
      id_cut = a;
    }
  }

  // Gumbel-max over the survivors; min-p drops (x - m) / T < log(min_p).
  const double log_min_p = p.min_p > 0.0f ? log(double(p.min_p)) : -HUGE_VAL;
  const uint64_t prefix = sample_hash::NoisePrefix(p.seed, p.step);
  float best = -INFINITY;
  int32_t best_id = kNoId;
  for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = x[i];
    if (!(v >= thr_k)) continue;
    if (p.top_p < 1.0f && !(v > v_cut || (v == v_cut && i <= id_cut))) continue;
    if (!((double(v) - m) / t >= log_min_p)) continue;
    const float key =
        __fadd_rn(__fdiv_rn(v, t), sample_hash::NoiseFromBits(sample_hash::NoiseBits(prefix, i)));
    if (Better(key, i, best, best_id)) best = key, best_id = i;
  }
  BlockBest(best, best_id, sh);
  if (threadIdx.x == 0) ids[blockIdx.x] = best_id == kNoId ? top_id : best_id;
}

}  // namespace

absl::Status Sample(const float* logits, int64_t batch, int64_t vocab, const SampleParams* params,
                    int32_t* ids, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckPositive("Sample", "batch", batch));
  RETURN_IF_ERROR(CheckPositive("Sample", "vocab", vocab));
  if (vocab >= INT32_MAX || batch > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("Sample: vocab ", vocab, " too large"));
  }
  RETURN_IF_ERROR(CheckNonNull("Sample", "logits", logits));
  RETURN_IF_ERROR(CheckNonNull("Sample", "params", params));
  RETURN_IF_ERROR(CheckNonNull("Sample", "ids", ids));
  SampleKernel<<<unsigned(batch), kThreads, 0, stream>>>(logits, vocab, params, ids);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
