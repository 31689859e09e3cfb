#include "kernels/cpu/machine_probe.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace facet::cpu {
namespace {

TEST(MachineProbeTest, StreamingSumReadsEveryWord) {
  std::mt19937 rng(3);
  // Sizes around the 8-vector unroll, with ragged tails.
  for (size_t n : {size_t(0), size_t(1), size_t(17), size_t(127), size_t(128), size_t(1000),
                   size_t(1 << 20) + 3}) {
    std::vector<uint32_t> data(n);
    uint32_t expected = 0;
    for (uint32_t& v : data) {
      v = uint32_t(rng());
      expected += v;  // wraps mod 2^32, as the probe's sum does
    }
    EXPECT_EQ(StreamingSum(data.data(), n), expected) << "n = " << n;
    if (n > 0) {
      // Every word counts, the last one included.
      data[n - 1] += 1;
      EXPECT_EQ(StreamingSum(data.data(), n), expected + 1) << "n = " << n;
    }
  }
}

// Sanity only: the figures are positive, finite, and below what any machine
// could do (a loop the optimiser dropped would report absurd speeds).
TEST(MachineProbeTest, LimitsArePlausibleAndPrinted) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    MachineLimits limits = MeasureMachine(&pool);
    std::printf("threads %d: memory read %.1f GB/s, FMA peak %.1f GFLOP/s\n", limits.threads,
                limits.mem_read_gbps, limits.fma_gflops);
    EXPECT_EQ(limits.threads, threads);
    EXPECT_TRUE(std::isfinite(limits.mem_read_gbps));
    EXPECT_GT(limits.mem_read_gbps, 0.1);
    // Even an HBM GPU host's DRAM does not stream 1 TB/s per thread.
    EXPECT_LT(limits.mem_read_gbps, 1000.0 * threads);
    EXPECT_TRUE(std::isfinite(limits.fma_gflops));
    EXPECT_GT(limits.fma_gflops, 0.1);
    // 2 FMA ports x 16 lanes x 2 flops x 6 GHz = 384 GFLOP/s per core at most.
    EXPECT_LT(limits.fma_gflops, 400.0 * threads);
  }
}

TEST(MachineProbeTest, SmallBufferStillMeasures) {
  ThreadPool pool(2);
  double gbps = MeasureMemoryReadBandwidth(&pool, 3 << 20);
  EXPECT_TRUE(std::isfinite(gbps));
  EXPECT_GT(gbps, 0.1);
}

}  // namespace
}  // namespace facet::cpu
