// NCCL communicator on one GPU (a world of one, bootstrapped over the
// single-rank communicator): the collectives run on device buffers and come
// back right. Skips without a GPU; multi-GPU runs come with the CUDA issues
// (same test under mpirun, one GPU per rank).
#include <cuda_runtime.h>

#include <vector>

#include "gtest/gtest.h"
#include "parallel/nccl_communicator.h"
#include "parallel/single_communicator.h"

namespace facet::parallel {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

TEST(NcclCommunicator, OneRankCollectivesOnDevice) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  SingleCommunicator boot;
  auto c = NcclCommunicator::Create(boot, 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->size(), 1);
  std::vector<float> h = {1, 2, 3, 4}, out(4);
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 2 * sizeof(float) * 4), cudaSuccess);
  cudaMemcpy(d, h.data(), sizeof(float) * 4, cudaMemcpyHostToDevice);
  ASSERT_TRUE((*c)->AllReduce(d, d + 4, 4, DType::kF32, ReduceOp::kSum).ok());
  std::vector<size_t> n = {4};
  ASSERT_TRUE((*c)->AllToAllV(d + 4, n, d, n, DType::kF32).ok());
  ASSERT_TRUE((*c)->Synchronize().ok());
  cudaMemcpy(out.data(), d, sizeof(float) * 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(out, h);
  auto counts = (*c)->ExchangeCounts(n);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)[0], 4u);
  EXPECT_TRUE((*c)->Barrier().ok());
  EXPECT_FALSE((*c)->AllReduce(d, d, 4, DType::kBytes, ReduceOp::kSum).ok());
  cudaFree(d);
}

}  // namespace
}  // namespace facet::parallel
