// NcclCommunicator (parallel/nccl_communicator.h) with one rank on one GPU,
// bootstrapped over the single-rank host communicator: the path `facet
// serve --device cuda` takes when the TP group is one GPU. Collectives on
// device buffers must leave the data as a world of one defines it
// (AllReduce/AllGather/Broadcast = copy), and a split gives a working
// communicator. Label gpu: skips without a GPU.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "parallel/single_communicator.h"

namespace facet::parallel {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: run scripts/gpu-check-engine.sh on a GPU machine"

// A device copy of `host`, freed on scope exit.
struct DeviceFloats {
  float* p = nullptr;
  size_t n = 0;
  explicit DeviceFloats(const std::vector<float>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(p); }
  std::vector<float> Host() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

TEST(NcclOneRankTest, CollectivesOnDeviceBuffers) {
  SKIP_WITHOUT_GPU();
  SingleCommunicator bootstrap;
  auto nccl = NcclCommunicator::Create(bootstrap, /*device=*/0, std::chrono::seconds(60));
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  NcclCommunicator& c = **nccl;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);

  std::vector<float> values(1000);
  std::iota(values.begin(), values.end(), -3.5f);
  DeviceFloats src(values), dst(std::vector<float>(values.size(), 0.0f));
  ASSERT_TRUE(c.AllReduce(src.p, dst.p, values.size(), DType::kF32, ReduceOp::kSum).ok());
  ASSERT_TRUE(c.Synchronize().ok());
  EXPECT_EQ(dst.Host(), values);

  DeviceFloats gathered(std::vector<float>(values.size(), 0.0f));
  ASSERT_TRUE(c.AllGather(src.p, gathered.p, values.size(), DType::kF32).ok());
  ASSERT_TRUE(c.Synchronize().ok());
  EXPECT_EQ(gathered.Host(), values);

  DeviceFloats inplace(values);
  ASSERT_TRUE(c.AllReduce(inplace.p, inplace.p, values.size(), DType::kF32, ReduceOp::kMax).ok());
  ASSERT_TRUE(c.Broadcast(inplace.p, values.size(), DType::kF32, 0).ok());
  ASSERT_TRUE(c.Barrier().ok());
  ASSERT_TRUE(c.Synchronize().ok());
  EXPECT_EQ(inplace.Host(), values);

  auto sub = c.Split(/*color=*/0, /*key=*/0);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->size(), 1);
  DeviceFloats again(std::vector<float>(values.size(), 0.0f));
  ASSERT_TRUE((*sub)->AllReduce(src.p, again.p, values.size(), DType::kF32, ReduceOp::kSum).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(again.Host(), values);
}

TEST(NcclOneRankTest, BadRootIsAnError) {
  SKIP_WITHOUT_GPU();
  SingleCommunicator bootstrap;
  auto nccl = NcclCommunicator::Create(bootstrap, 0, std::chrono::seconds(60));
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  DeviceFloats buf(std::vector<float>(16, 1.0f));
  EXPECT_FALSE((*nccl)->Broadcast(buf.p, 16, DType::kF32, /*root=*/3).ok());
}

}  // namespace
}  // namespace facet::parallel
