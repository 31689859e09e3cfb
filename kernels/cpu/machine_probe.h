// Measured machine limits for `facet bench`, which reports decode as a fraction
// of the memory-bandwidth bound and prefill as a fraction of the FMA peak.
// Both probes aim at upper bounds: a low figure would flatter the engine.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"

namespace facet::cpu {

struct MachineLimits {
  double mem_read_gbps;  // 1e9 bytes/s, streaming read, all pool threads
  double fma_gflops;     // 1e9 float ops/s (an FMA counts 2), all pool threads
  int threads;           // pool->num_threads() the figures were measured with
};

// GB/s of a streaming read of `bytes` (a SIMD sum of 32-bit words, each pool
// thread reading its own contiguous part, which it also first-touched), best
// of a few runs. `bytes` should be far above the last-level cache.
double MeasureMemoryReadBandwidth(ThreadPool* pool, size_t bytes = size_t(512) << 20);

// GFLOP/s of independent float FMA chains held in registers (enough chains to
// cover FMA latency x ports), at the widest SIMD target Highway dispatches to,
// on all pool threads; best of a few runs.
double MeasureFmaPeak(ThreadPool* pool);

MachineLimits MeasureMachine(ThreadPool* pool);

// The bandwidth probe's inner loop: the sum of data[0, n) modulo 2^32. Its
// result is checked by the probe, so the reads cannot be optimised away.
uint32_t StreamingSum(const uint32_t* data, size_t n);

}  // namespace facet::cpu
