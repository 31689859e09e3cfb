// facet_gpu_bench: achieved GB/s and TFLOP/s of the CUDA kernels against the
// card's limits. Each case: warm-up, then `iters` launches each timed with
// CUDA events, the median reported. Inputs are random-free (memset) because
// only time is measured; the GPU tests check the numbers.
//
//   facet_gpu_bench [--quick]
//
// One line per case: name, shape, median µs, GB/s (% of HBM peak), TFLOP/s
// (% of dense bf16 peak). Peaks: H100 SXM 3.35 TB/s, H200 4.8 TB/s, both
// 989 bf16 TFLOP/s (H100 PCIe 2.0 TB/s, 756); other cards print n/a.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace facet::cuda {
namespace {

struct Peaks {
  double gbps = 0, tflops = 0;
  std::string card;
};

Peaks DetectPeaks() {
  cudaDeviceProp p{};
  Peaks k;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return k;
  k.card = p.name;
  if (k.card.find("H200") != std::string::npos) {
    k.gbps = 4800, k.tflops = 989;
  } else if (k.card.find("H100") != std::string::npos) {
    const bool pcie = k.card.find("PCIe") != std::string::npos;
    k.gbps = pcie ? 2000 : 3350, k.tflops = pcie ? 756 : 989;
  }
  return k;
}

int g_iters = 50;

// Median milliseconds of one launch of `fn`.
double TimeMs(const std::function<absl::Status()>& fn) {
  auto a = Event::Create(), b = Event::Create();
  if (!a.ok() || !b.ok()) return -1;
  for (int i = 0; i < 3; ++i) {
    absl::Status s = fn();
    if (!s.ok()) {
      std::printf("  error: %s\n", s.ToString().c_str());
      return -1;
    }
  }
  std::vector<float> ms;
  for (int i = 0; i < g_iters; ++i) {
    FACET_CUDA_CHECK(cudaEventRecord(a->get(), nullptr));
    (void)fn();
    FACET_CUDA_CHECK(cudaEventRecord(b->get(), nullptr));
    FACET_CUDA_CHECK(cudaEventSynchronize(b->get()));
    auto e = b->ElapsedMsSince(*a);
    ms.push_back(e.ok() ? *e : -1);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void Report(const Peaks& pk, const std::string& name, double ms, double bytes, double flops) {
  if (ms <= 0) {
    std::printf("%-44s failed\n", name.c_str());
    return;
  }
  const double gbps = bytes / (ms * 1e-3) / 1e9, tflops = flops / (ms * 1e-3) / 1e12;
  char bw[64] = "n/a", fl[64] = "";
  if (pk.gbps > 0) std::snprintf(bw, sizeof bw, "%5.1f%%", 100 * gbps / pk.gbps);
  if (flops > 0) {
    std::snprintf(fl, sizeof fl, "%8.1f TFLOP/s (%s)", tflops,
                  pk.tflops > 0 ? (std::to_string(int(100 * tflops / pk.tflops)) + "%").c_str()
                                : "n/a");
  }
  std::printf("%-44s %9.1f us %8.0f GB/s (%s) %s\n", name.c_str(), ms * 1e3, gbps, bw, fl);
  std::fflush(stdout);
}

DeviceBuffer Buf(size_t bytes) {
  auto b = DeviceBuffer::Allocate(bytes);
  FACET_CUDA_CHECK(b.ok() ? cudaSuccess : cudaErrorMemoryAllocation);
  // Small values, so nothing overflows to inf and slows a kernel down.
  FACET_CUDA_CHECK(cudaMemset(b->data(), 0x01, bytes));
  return std::move(*b);
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) g_iters = 10;
  }
  if (DeviceCount() == 0) {
    std::printf("facet_gpu_bench: %s\n", DeviceDescription(0).c_str());
    return 2;
  }
  const Peaks pk = DetectPeaks();
  std::printf("device: %s\npeaks: %.0f GB/s, %.0f bf16 TFLOP/s%s\n", DeviceDescription(0).c_str(),
              pk.gbps, pk.tflops, pk.gbps > 0 ? "" : " (unknown card: percentages n/a)");

  auto gemm_or = Gemm::Create();
  if (!gemm_or.ok()) {
    std::printf("Gemm::Create: %s\n", gemm_or.status().ToString().c_str());
    return 1;
  }
  Gemm& gemm = **gemm_or;

  // --- bf16 GEMMs: decode M = 1, 16, 64 and prefill M = 2048 ---
  struct Shape {
    const char* name;
    int64_t N, K;
  };
  const Shape shapes[] = {
      {"26B qkv 8192x2816", 8192, 2816},
      {"26B dense gate_up 4224x2816", 4224, 2816},
      {"31B gate_up 43008x5376", 43008, 5376},
      {"31B down 5376x21504", 5376, 21504},
      {"square 4096x4096", 4096, 4096},
  };
  const int64_t Ms[] = {1, 16, 64, 2048};
  DeviceBuffer x = Buf(sizeof(bf16) * 2048 * 21504);
  DeviceBuffer y = Buf(sizeof(bf16) * 2048 * 43008);
  for (const Shape& s : shapes) {
    DeviceBuffer w = Buf(sizeof(bf16) * s.N * s.K);
    for (int64_t M : Ms) {
      const double ms = TimeMs([&] {
        return gemm.MatMulBf16(x.as<bf16>(), M, w.as<bf16>(), s.N, s.K, nullptr, y.as<bf16>(),
                               nullptr);
      });
      const double bytes = 2.0 * (M * s.K + s.N * s.K + M * s.N);
      Report(pk, std::string("gemm bf16 ") + s.name + " M=" + std::to_string(M), ms, bytes,
             2.0 * M * s.N * s.K);
    }
  }

  // --- FP8 weights ---
  for (const Shape& s : {shapes[0], shapes[3]}) {
    DeviceBuffer w = Buf(s.N * s.K);
    DeviceBuffer sc = Buf(sizeof(float) * s.N * 2);
    DeviceBuffer ws = Buf(Gemm::Fp8WorkspaceBytes(2048, s.N, s.K));
    for (int64_t M : {int64_t(1), int64_t(16), int64_t(2048)}) {
      for (Fp8Scaling scaling : {Fp8Scaling::kPerChannel, Fp8Scaling::kBlock128}) {
        const double ms = TimeMs([&] {
          return gemm.MatMulFp8(x.as<bf16>(), M, w.as<uint8_t>(), s.N, s.K, sc.as<float>(), scaling,
                                nullptr, y.as<bf16>(), ws.data(), ws.bytes(), nullptr);
        });
        const double bytes = double(s.N) * s.K + 2.0 * (M * s.K + M * s.N);
        Report(pk,
               std::string("gemm fp8 ") + (scaling == Fp8Scaling::kBlock128 ? "blk " : "ch ") +
                   s.name + " M=" + std::to_string(M),
               ms, bytes, 2.0 * M * s.N * s.K);
      }
    }
  }

  // --- fused norms and element-wise (memory-bound: GB/s is the figure) ---
  for (int64_t rows : {int64_t(16), int64_t(2048)}) {
    const int64_t dim = 5376;
    DeviceBuffer branch = Buf(sizeof(bf16) * rows * dim), resid = Buf(sizeof(float) * rows * dim);
    DeviceBuffer next = Buf(sizeof(bf16) * rows * dim), w = Buf(sizeof(float) * dim);
    double ms = TimeMs([&] {
      return AddRmsNorm(branch.as<bf16>(), w.as<float>(), resid.as<float>(), 1.0f, w.as<float>(),
                        next.as<bf16>(), rows, dim, 1e-6f, false, nullptr);
    });
    // branch read, resid read + write, next write
    Report(pk, "add_rmsnorm rows=" + std::to_string(rows) + " dim=5376", ms,
           double(rows) * dim * (2 + 4 + 4 + 2), 0);
    DeviceBuffer experts = Buf(sizeof(float) * rows * dim);
    ms = TimeMs([&] {
      return MoeBlockEnd(branch.as<bf16>(), w.as<float>(), experts.as<float>(), w.as<float>(),
                         w.as<float>(), resid.as<float>(), 1.0f, w.as<float>(), next.as<bf16>(),
                         rows, dim, 1e-6f, nullptr);
    });
    // dense read, experts read, resid read + write, next write
    Report(pk, "moe_block_end rows=" + std::to_string(rows) + " dim=5376", ms,
           double(rows) * dim * (2 + 4 + 4 + 4 + 2), 0);
    ms = TimeMs([&] {
      return RmsNorm(branch.as<bf16>(), w.as<float>(), next.as<bf16>(), rows, dim, 1e-6f, false,
                     nullptr);
    });
    Report(pk, "rmsnorm bf16 rows=" + std::to_string(rows) + " dim=5376", ms,
           double(rows) * dim * 4, 0);
  }
  {
    const int64_t m = 2048, inter = 21504;
    DeviceBuffer gu = Buf(sizeof(bf16) * m * 2 * inter), out = Buf(sizeof(bf16) * m * inter);
    const double ms =
        TimeMs([&] { return GeGlu(gu.as<bf16>(), m, inter, out.as<bf16>(), nullptr); });
    Report(pk, "geglu m=2048 inter=21504", ms, double(m) * inter * 6, 0);
  }

  // --- QK-norm + RoPE + paged write, 26B sliding layer shape ---
  {
    const int64_t T = 2048, Nq = 16, Nkv = 8, D = 256;
    DeviceBuffer qkv = Buf(sizeof(bf16) * T * (Nq + 2 * Nkv) * D), q = Buf(sizeof(bf16) * T * Nq * D);
    DeviceBuffer kc = Buf(sizeof(bf16) * T * Nkv * D), vc = Buf(sizeof(bf16) * T * Nkv * D);
    DeviceBuffer nw = Buf(sizeof(float) * D), f = Buf(sizeof(float) * D / 2), pos = Buf(4 * T);
    DeviceBuffer slots = Buf(8 * T);
    FACET_CUDA_CHECK(cudaMemset(slots.data(), 0, 8 * T));
    FACET_CUDA_CHECK(cudaMemset(pos.data(), 0, 4 * T));
    QkvRopeParams p;
    p.tokens = T, p.num_heads = Nq, p.num_kv_heads = Nkv, p.head_dim = D;
    p.qkv = qkv.as<bf16>(), p.q_norm = nw.as<float>(), p.k_norm = nw.as<float>(), p.v_norm = true;
    p.positions = pos.as<int32_t>(), p.inv_freq = f.as<float>(), p.slot_mapping = slots.as<int64_t>();
    p.num_slots = T, p.q_out = q.as<bf16>(), p.k_cache = kc.as<bf16>(), p.v_cache = vc.as<bf16>();
    const double ms = TimeMs([&] { return QkNormRopeKv(p, nullptr, nullptr); });
    Report(pk, "qk_norm_rope_kv T=2048 16/8x256", ms, 2.0 * 2 * T * (Nq + 2 * Nkv) * D, 0);
  }

  // --- MoE, 26B-A4B: 128 experts, top-8, F = 704, H = 2816 ---
  {
    const int64_t H = 2816, F = 704, E = 128, k = 8;
    DeviceBuffer gu = Buf(sizeof(bf16) * E * 2 * F * H), down = Buf(sizeof(bf16) * E * H * F);
    DeviceBuffer rp = Buf(sizeof(bf16) * E * H), rs = Buf(sizeof(float) * H), pes = Buf(sizeof(float) * E);
    for (int64_t T : {int64_t(1), int64_t(16), int64_t(2048)}) {
      DeviceBuffer xin = Buf(sizeof(bf16) * T * H), x1 = Buf(sizeof(float) * T * H);
      DeviceBuffer ids = Buf(sizeof(int32_t) * T * k), wts = Buf(sizeof(float) * T * k);
      DeviceBuffer out = Buf(sizeof(float) * T * H);
      const size_t ws_bytes = MoeExpertsWorkspaceBytes(T, H, F, E, k);
      DeviceBuffer ws = Buf(ws_bytes);
      // Route first (real, spread ids); the timed expert block reuses them.
      FACET_CUDA_CHECK(cudaMemset(x1.data(), 0, sizeof(float) * T * H));
      double ms = TimeMs([&] {
        return MoeRoute(x1.as<float>(), T, H, rs.as<float>(), rp.as<bf16>(), E, pes.as<float>(), k,
                        1e-6f, ids.as<int32_t>(), wts.as<float>(), nullptr);
      });
      Report(pk, "moe route T=" + std::to_string(T), ms, double(E) * H * 2 + T * H * 4.0, 0);
      // Spread routing (distinct experts per token, all experts busy at
      // prefill), as a trained router gives; zero inputs would route every
      // token to experts 0..7.
      std::vector<int32_t> hids(T * k);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < k; ++j) hids[t * k + j] = int32_t((t * 37 + j * 16) % E);
      FACET_CUDA_CHECK(cudaMemcpy(ids.data(), hids.data(), sizeof(int32_t) * T * k,
                                  cudaMemcpyHostToDevice));
      ms = TimeMs([&] {
        return MoeExperts(xin.as<bf16>(), T, H, ids.as<int32_t>(), wts.as<float>(), k, gu.as<bf16>(),
                          down.as<bf16>(), E, F, out.as<float>(), ws.data(), ws_bytes, nullptr);
      });
      // Weights of the experts touched: at most min(E, T·k).
      const double experts = double(std::min<int64_t>(E, T * k));
      Report(pk, "moe experts 128x704 top8 T=" + std::to_string(T), ms,
             experts * 3 * F * H * 2, 6.0 * T * k * H * F);
    }
  }

  // --- sampling, 262k vocabulary ---
  {
    const int64_t B = 16, V = 262144;
    DeviceBuffer logits = Buf(sizeof(float) * B * V), ids = Buf(sizeof(int32_t) * B);
    std::vector<SampleParams> hp(B);
    for (auto& p : hp) p.temperature = 0.8f, p.top_k = 64, p.top_p = 0.95f;
    DeviceBuffer params = Buf(sizeof(SampleParams) * B);
    FACET_CUDA_CHECK(cudaMemcpy(params.data(), hp.data(), params.bytes(), cudaMemcpyHostToDevice));
    double ms = TimeMs([&] {
      return Sample(logits.as<float>(), B, V, params.as<SampleParams>(), ids.as<int32_t>(), nullptr);
    });
    Report(pk, "sample B=16 V=262144 top-k+top-p", ms, double(B) * V * 4, 0);
    for (auto& p : hp) p = SampleParams{};
    FACET_CUDA_CHECK(cudaMemcpy(params.data(), hp.data(), params.bytes(), cudaMemcpyHostToDevice));
    ms = TimeMs([&] {
      return Sample(logits.as<float>(), B, V, params.as<SampleParams>(), ids.as<int32_t>(), nullptr);
    });
    Report(pk, "sample B=16 V=262144 greedy", ms, double(B) * V * 4, 0);
  }
  FACET_CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("done\n");
  return 0;
}

}  // namespace
}  // namespace facet::cuda

int main(int argc, char** argv) { return facet::cuda::Main(argc, argv); }
