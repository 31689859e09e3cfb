// facet_gpu_attention_bench: attention kernel throughput at Gemma 4 shapes.
//   decode   GB/s = KV bytes read per step / step time, against the card's HBM
//            peak (H100 SXM 3.35 TB/s, H200 4.8 TB/s, by device name);
//   prefill  TFLOP/s = 4 · D · Nq · (visible query-key pairs) / time, against
//            989 TFLOP/s (H100/H200 dense bf16).
// CUDA-event timing of each launch after warm-up, median of the runs. Also
// prints what the K = V source cache saves on Gemma 4 31B global layers.
// Usage: facet_gpu_attention_bench [--quick]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/attention/attention.h"
#include "kernels/cuda/check.h"

namespace facet::cuda {
namespace {

constexpr int kBlockSize = 16;
constexpr size_t kMaxKvBytes = size_t(24) << 30;  // leave room on an 80 GB card

struct Layer {
  const char* name;
  int nq, nkv, d, window;
  bool source;  // K = V source cache
};

// Gemma 4 (spec §9.1): 31B 32 q heads, sliding 16 × 256, global 4 × 512 (K = V);
// 26B-A4B 16 q heads, sliding 8 × 256, global 2 × 512 (K = V). Window 1024.
const Layer kLayers[] = {
    {"31B-global-KV", 32, 4, 512, 0, false},  {"31B-global-src", 32, 4, 512, 0, true},
    {"31B-sliding", 32, 16, 256, 1024, false}, {"26B-global-KV", 16, 2, 512, 0, false},
    {"26B-global-src", 16, 2, 512, 0, true},   {"26B-sliding", 16, 8, 256, 1024, false},
};

struct Peak {
  double hbm_gbs;
  const char* card;
};

Peak CardPeak(const cudaDeviceProp& prop) {
  const std::string name = prop.name;
  if (name.find("H200") != std::string::npos) return {4800.0, "H200"};
  if (name.find("H100") != std::string::npos) return {3350.0, "H100"};
  return {0.0, "unknown card"};
}

template <typename T>
T* Alloc(size_t count, bool* ok) {
  void* p = nullptr;
  if (count == 0) return nullptr;
  if (cudaMalloc(&p, count * sizeof(T)) != cudaSuccess) {
    (void)cudaGetLastError();
    *ok = false;
    return nullptr;
  }
  return static_cast<T*>(p);
}

struct Result {
  bool ran = false;
  double ms = 0.0;
  int splits = 1;
  double kv_bytes = 0.0;  // bytes of K/V rows read
  double flops = 0.0;     // 4 · D · Nq · visible pairs
};

// One sequence layout: `batch` sequences, each with `q_len` queries ending at
// `ctx` cached positions (sliding layers hold only the blocks in the window).
Result Run(const Layer& L, int batch, int ctx, int q_len, int iters, int num_sms) {
  Result r;
  const int first = ctx - q_len;
  const int keep = L.window > 0 ? std::max(0, first - L.window + 1) : 0;
  const int max_blocks = (ctx + kBlockSize - 1) / kBlockSize;
  const int held = max_blocks - keep / kBlockSize;
  const size_t row = size_t(L.nkv) * L.d;  // bf16 per position per cache
  const size_t num_blocks = size_t(batch) * held;
  const size_t cache_bytes = num_blocks * kBlockSize * row * 2 * (L.source ? 1 : 2);
  if (cache_bytes > kMaxKvBytes) return r;

  std::vector<int32_t> table(size_t(batch) * max_blocks, -1), q_start(batch + 1), kv_len(batch, ctx);
  for (int s = 0; s < batch; ++s) {
    for (int b = keep / kBlockSize; b < max_blocks; ++b) {
      table[size_t(s) * max_blocks + b] = s * held + (b - keep / kBlockSize);
    }
    q_start[s] = s * q_len;
  }
  q_start[batch] = batch * q_len;
  const int total_q = batch * q_len;
  // Visible pairs and distinct key rows read.
  double pairs = 0.0;
  for (int t = 0; t < q_len; ++t) {
    const int pos = first + t;
    pairs += double(L.window > 0 ? std::min(pos + 1, L.window) : pos + 1);
  }
  r.flops = 4.0 * L.d * L.nq * pairs * batch;
  r.kv_bytes = double(batch) * (ctx - keep) * row * 2 * (L.source ? 1 : 2);

  AttentionShape shape{L.nq, L.nkv, L.d, 1.0f, 0.0f, L.window};
  bool ok = true;
  auto* k = Alloc<__nv_bfloat16>(num_blocks * kBlockSize * row, &ok);
  auto* v = L.source ? nullptr : Alloc<__nv_bfloat16>(num_blocks * kBlockSize * row, &ok);
  auto* q = Alloc<__nv_bfloat16>(size_t(total_q) * L.nq * L.d, &ok);
  auto* out = Alloc<__nv_bfloat16>(size_t(total_q) * L.nq * L.d, &ok);
  auto* d_table = Alloc<int32_t>(table.size(), &ok);
  auto* d_qs = Alloc<int32_t>(q_start.size(), &ok);
  auto* d_kl = Alloc<int32_t>(kv_len.size(), &ok);
  auto* w = Alloc<float>(L.d, &ok);
  auto* inv = Alloc<float>(L.d / 2, &ok);
  AttentionBatch b{batch, d_qs, d_kl, total_q, q_len, ctx};
  absl::StatusOr<AttentionPlan> plan = PlanAttention(shape, b, num_sms);
  void* ws = nullptr;
  if (ok && plan.ok() && plan->workspace_bytes > 0) ws = Alloc<unsigned char>(plan->workspace_bytes, &ok);
  if (ok && plan.ok()) {
    // 0x3c3c: bf16 ≈ 0.0115 everywhere — finite, timing does not depend on values.
    FACET_CUDA_CHECK(cudaMemset(k, 0x3c, num_blocks * kBlockSize * row * 2));
    if (v) FACET_CUDA_CHECK(cudaMemset(v, 0x3c, num_blocks * kBlockSize * row * 2));
    FACET_CUDA_CHECK(cudaMemset(q, 0x3c, size_t(total_q) * L.nq * L.d * 2));
    std::vector<float> wh(L.d, 1.0f), invh(L.d / 2, 0.0f);
    for (int i = 0; i < L.d / 8; ++i) invh[i] = float(std::pow(1e6, -2.0 * i / L.d));
    FACET_CUDA_CHECK(cudaMemcpy(w, wh.data(), wh.size() * 4, cudaMemcpyHostToDevice));
    FACET_CUDA_CHECK(cudaMemcpy(inv, invh.data(), invh.size() * 4, cudaMemcpyHostToDevice));
    FACET_CUDA_CHECK(cudaMemcpy(d_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    FACET_CUDA_CHECK(cudaMemcpy(d_qs, q_start.data(), q_start.size() * 4, cudaMemcpyHostToDevice));
    FACET_CUDA_CHECK(cudaMemcpy(d_kl, kv_len.data(), kv_len.size() * 4, cudaMemcpyHostToDevice));
    PagedKvCache kv{k, v, d_table, int64_t(num_blocks), kBlockSize, max_blocks};
    KvSourceRebuild rb{w, inv, L.d / 8};
    cudaEvent_t e0, e1;
    FACET_CUDA_CHECK(cudaEventCreate(&e0));
    FACET_CUDA_CHECK(cudaEventCreate(&e1));
    std::vector<float> times;
    for (int i = 0; i < iters + 3; ++i) {
      FACET_CUDA_CHECK(cudaEventRecord(e0));
      const absl::Status st =
          PagedAttention(*plan, shape, b, kv, &rb, q, out, ws, plan->workspace_bytes, nullptr);
      FACET_CUDA_CHECK(cudaEventRecord(e1));
      if (!st.ok()) {
        std::fprintf(stderr, "%s: %s\n", L.name, st.ToString().c_str());
        break;
      }
      FACET_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0.0f;
      FACET_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 3) times.push_back(ms);  // the first launches warm caches and clocks
    }
    FACET_CUDA_CHECK(cudaEventDestroy(e0));
    FACET_CUDA_CHECK(cudaEventDestroy(e1));
    if (!times.empty()) {
      std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
      r.ms = times[times.size() / 2];
      r.ran = true;
      r.splits = plan->splits;
    }
  }
  for (void* p : {(void*)k, (void*)v, (void*)q, (void*)out, (void*)d_table, (void*)d_qs,
                  (void*)d_kl, (void*)w, (void*)inv, ws}) {
    if (p) FACET_CUDA_CHECK(cudaFree(p));
  }
  return r;
}

}  // namespace
}  // namespace facet::cuda

int main(int argc, char** argv) {
  using namespace facet::cuda;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  // Gemma 4 31B: 10 global layers × 4 KV heads × 512, bf16.
  std::printf("== K = V source cache, Gemma 4 31B global layers (10 × 4 KV heads × 512, bf16) ==\n");
  for (int64_t ctx : {int64_t(131072), int64_t(262144)}) {
    const int64_t kv = 10 * ctx * KvBytesPerToken(4, 512, false);
    const int64_t src = 10 * ctx * KvBytesPerToken(4, 512, true);
    std::printf("ctx %6lld: K and V %lld bytes (%.2f GiB), source only %lld bytes (%.2f GiB), saved %lld bytes\n",
                (long long)ctx, (long long)kv, kv / double(1 << 30), (long long)src,
                src / double(1 << 30), (long long)(kv - src));
  }
  std::printf("\n");
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("attention bench: no CUDA device, nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop{};
  FACET_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const Peak peak = CardPeak(prop);
  std::printf("attention bench on %s (%d SMs); HBM peak %.0f GB/s (%s), bf16 dense peak 989 TFLOP/s\n",
              prop.name, prop.multiProcessorCount, peak.hbm_gbs, peak.card);
  const int iters = quick ? 5 : 15;

  std::printf("\n== decode (1 query per sequence, block size %d) ==\n", kBlockSize);
  const std::vector<int> batches = quick ? std::vector<int>{1, 64} : std::vector<int>{1, 16, 64, 256};
  const std::vector<int> ctxs = quick ? std::vector<int>{32768} : std::vector<int>{4096, 32768, 131072};
  std::map<std::tuple<std::string, int, int>, double> kv_ms;  // global K+V times
  for (const Layer& L : kLayers) {
    for (int batch : batches) {
      for (int ctx : ctxs) {
        const Result r = Run(L, batch, ctx, 1, iters, prop.multiProcessorCount);
        if (!r.ran) {
          std::printf("decode  %-15s batch %4d ctx %6d  skipped (KV over %zu GiB or no memory)\n",
                      L.name, batch, ctx, kMaxKvBytes >> 30);
          continue;
        }
        const double gbs = r.kv_bytes / (r.ms * 1e-3) / 1e9;
        std::printf("decode  %-15s batch %4d ctx %6d splits %2d  %8.3f ms  %7.0f GB/s  %5.1f%% of HBM peak",
                    L.name, batch, ctx, r.splits, r.ms, gbs,
                    peak.hbm_gbs > 0 ? 100.0 * gbs / peak.hbm_gbs : 0.0);
        // The source cache reads half the bytes; what counts is its time
        // against the K + V layout at the same shape.
        const std::string model(L.name, 3);
        if (L.source && kv_ms.count({model, batch, ctx})) {
          std::printf("  (%.2fx the K+V time)", r.ms / kv_ms[{model, batch, ctx}]);
        } else if (!L.source && L.window == 0) {
          kv_ms[{model, batch, ctx}] = r.ms;
        }
        std::printf("\n");
      }
    }
  }

  std::printf("\n== prefill (causal, one chunk from position 0) ==\n");
  const std::vector<int> lens = quick ? std::vector<int>{4096} : std::vector<int>{4096, 16384};
  for (const Layer& L : kLayers) {
    for (int len : lens) {
      const Result r = Run(L, 1, len, len, quick ? 3 : 8, prop.multiProcessorCount);
      if (!r.ran) {
        std::printf("prefill %-15s len %6d  skipped\n", L.name, len);
        continue;
      }
      const double tflops = r.flops / (r.ms * 1e-3) / 1e12;
      std::printf("prefill %-15s len %6d  %8.3f ms  %6.1f TFLOP/s  %5.1f%% of 989\n", L.name, len,
                  r.ms, tflops, 100.0 * tflops / 989.0);
    }
  }

  return 0;
}
