// Machine probes: streaming-read bandwidth and FMA peak, with Highway picking
// the widest SIMD target at run time (the same dispatch the kernels use).

#include "kernels/cpu/machine_probe.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/logging.h"
#include "kernels/cpu/hwy_targets.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/machine_probe.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace facet::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Integer adds: exact (mod 2^32) whatever the size, so the probe can check the
// result, and a 1-cycle add keeps the loop bound by the loads. Eight
// accumulators keep two loads per cycle in flight even from cache.
uint32_t StreamingSumImpl(const uint32_t* HWY_RESTRICT data, size_t n) {
  const hn::ScalableTag<uint32_t> d;
  const size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  auto a4 = hn::Zero(d), a5 = hn::Zero(d), a6 = hn::Zero(d), a7 = hn::Zero(d);
  size_t i = 0;
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    a0 = hn::Add(a0, hn::LoadU(d, data + i + 0 * lanes));
    a1 = hn::Add(a1, hn::LoadU(d, data + i + 1 * lanes));
    a2 = hn::Add(a2, hn::LoadU(d, data + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, data + i + 3 * lanes));
    a4 = hn::Add(a4, hn::LoadU(d, data + i + 4 * lanes));
    a5 = hn::Add(a5, hn::LoadU(d, data + i + 5 * lanes));
    a6 = hn::Add(a6, hn::LoadU(d, data + i + 6 * lanes));
    a7 = hn::Add(a7, hn::LoadU(d, data + i + 7 * lanes));
  }
  auto sum = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                     hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  uint32_t total = hn::GetLane(hn::SumOfLanes(d, sum));
  for (; i < n; ++i) total += data[i];
  return total;
}

// `iterations` rounds of kChains independent FMA chains, all in registers.
// Twelve chains cover latency x ports on current x86 (4 x 2 on Intel and Zen
// 4, 5 x 2 on Zen 2/3) and, with the two constants, fit AVX2's 16 registers.
// The chains converge to add / (1 - mul) = 1, so values stay normal (no
// denormal slow path), and the returned sum keeps every chain live.
float FmaChainsImpl(int64_t iterations) {
  constexpr int kChains = 12;
  const hn::ScalableTag<float> d;
  const auto mul = hn::Set(d, 0.999f);
  const auto add = hn::Set(d, 0.001f);
  hn::Vec<decltype(d)> acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = hn::Set(d, 0.5f + 0.01f * c);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], mul, add);
  }
  auto sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = hn::Add(sum, acc[c]);
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

// Float ops per FmaChainsImpl iteration: 12 chains x lanes x 2.
int64_t FlopsPerIteration() { return 12 * int64_t(hn::Lanes(hn::ScalableTag<float>())) * 2; }

}  // namespace HWY_NAMESPACE
}  // namespace facet::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet::cpu {

HWY_EXPORT(StreamingSumImpl);
HWY_EXPORT(FmaChainsImpl);
HWY_EXPORT(FlopsPerIteration);

namespace {

constexpr int kRuns = 5;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

uint32_t StreamingSum(const uint32_t* data, size_t n) {
  return HWY_DYNAMIC_DISPATCH(StreamingSumImpl)(data, n);
}

double MeasureMemoryReadBandwidth(ThreadPool* pool, size_t bytes) {
  const int threads = pool->num_threads();
  // 2 MiB alignment lets the kernel back the buffer with huge pages, so TLB
  // misses do not lower the figure.
  constexpr size_t kAlign = size_t(2) << 20;
  bytes = std::max(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  std::unique_ptr<uint32_t, FreeDeleter> buffer(
      static_cast<uint32_t*>(std::aligned_alloc(kAlign, bytes)));
  FACET_CHECK(buffer != nullptr) << "cannot allocate " << bytes << " bytes for the bandwidth probe";
  madvise(buffer.get(), bytes, MADV_HUGEPAGE);  // advisory; failure only costs accuracy
  uint32_t* data = buffer.get();
  const size_t n = bytes / sizeof(uint32_t);

  // Thread t owns [begin(t), begin(t + 1)), 64-byte aligned, and first-touches
  // it so that on a NUMA machine its pages are local to it.
  auto begin = [&](int t) { return n / 16 * size_t(t) / size_t(threads) * 16; };
  auto end = [&](int t) { return t + 1 == threads ? n : begin(t + 1); };
  std::vector<uint32_t> sums(threads);
  pool->RunOnAll([&](int t) {
    uint32_t sum = 0;
    for (size_t i = begin(t); i < end(t); ++i) {
      data[i] = uint32_t(i * 2654435761u) >> 24;
      sum += data[i];
    }
    sums[t] = sum;
  });
  uint32_t expected = 0;
  for (uint32_t s : sums) expected += s;

  double best = 0;
  for (int run = 0; run < kRuns; ++run) {
    auto start = std::chrono::steady_clock::now();
    pool->RunOnAll([&](int t) { sums[t] = StreamingSum(data + begin(t), end(t) - begin(t)); });
    double seconds = Seconds(std::chrono::steady_clock::now() - start);
    uint32_t total = 0;
    for (uint32_t s : sums) total += s;
    FACET_CHECK(total == expected) << "bandwidth probe read wrong data";
    best = std::max(best, double(bytes) / seconds * 1e-9);
  }
  return best;
}

double MeasureFmaPeak(ThreadPool* pool) {
  const int threads = pool->num_threads();
  // The dispatched target, plus every x86 target compiled in and supported
  // here: on parts with one 512-bit FMA unit, or that lower the clock for
  // AVX-512, AVX2 can be faster, and the peak must be an upper bound.
  struct Variant {
    float (*chains)(int64_t);
    int64_t (*flops_per_iteration)();
  };
  std::vector<Variant> variants = {
      {HWY_DYNAMIC_DISPATCH(FmaChainsImpl), HWY_DYNAMIC_DISPATCH(FlopsPerIteration)}};
  const int64_t supported = hwy::SupportedTargets();
#if HWY_TARGETS & HWY_AVX3
  if (supported & HWY_AVX3) variants.push_back({&N_AVX3::FmaChainsImpl, &N_AVX3::FlopsPerIteration});
#endif
#if HWY_TARGETS & HWY_AVX2
  if (supported & HWY_AVX2) variants.push_back({&N_AVX2::FmaChainsImpl, &N_AVX2::FlopsPerIteration});
#endif
  // 50M FMA instructions per thread per run: ~10 ms at two per cycle, long
  // against the pool's wake-up latency.
  constexpr int64_t kIterations = int64_t(1) << 22;
  std::vector<float> sinks(threads);
  double best = 0;
  for (const Variant& v : variants) {
    const double flops = double(v.flops_per_iteration()) * kIterations * threads;
    for (int run = 0; run < kRuns; ++run) {
      auto start = std::chrono::steady_clock::now();
      pool->RunOnAll([&](int t) { sinks[t] = v.chains(kIterations); });
      double seconds = Seconds(std::chrono::steady_clock::now() - start);
      for (float s : sinks) FACET_CHECK(std::isfinite(s)) << "FMA probe diverged: " << s;
      best = std::max(best, flops / seconds * 1e-9);
    }
  }
  return best;
}

MachineLimits MeasureMachine(ThreadPool* pool) {
  return {MeasureMemoryReadBandwidth(pool), MeasureFmaPeak(pool), pool->num_threads()};
}

}  // namespace facet::cpu
#endif  // HWY_ONCE
