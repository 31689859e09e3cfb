// Runtime handles, the caching allocator and the "cuda" backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "kernels/backend.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/runtime.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace facet::cuda {
namespace {

using namespace facet::cuda::testing;

TEST(CudaRuntime, DeviceDescriptionSaysWhatIsThere) {
  const std::string d = DeviceDescription(0);
  EXPECT_FALSE(d.empty());
  if (DeviceCount() == 0) {
    EXPECT_NE(d.find("no CUDA device"), std::string::npos) << d;
  } else {
    EXPECT_NE(d.find("sm_"), std::string::npos) << d;
  }
}

TEST(CudaRuntime, RoundSizeBuckets) {
  EXPECT_EQ(CachingAllocator::RoundSize(0), 0u);
  EXPECT_EQ(CachingAllocator::RoundSize(1), 512u);
  EXPECT_EQ(CachingAllocator::RoundSize(513), 1024u);
  EXPECT_EQ(CachingAllocator::RoundSize((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(CachingAllocator::RoundSize(5u << 20), 6u << 20);
}

TEST(CudaRuntime, BackendIsRegisteredAndHonestAboutTheDevice) {
  const std::vector<std::string> names = RegisteredBackends();
  ASSERT_NE(std::find(names.begin(), names.end(), "cuda"), names.end());
  auto b = CreateBackend("cuda");
  if (DeviceCount() == 0) {
    EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable) << b.status();
  } else {
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->activation_dtype(), DType::kBF16);
  }
  EXPECT_EQ(CreateBackend("tpu").status().code(), absl::StatusCode::kNotFound);
}

TEST(CudaRuntime, BuffersStreamsEventsRoundTrip) {
  FACET_REQUIRE_GPU();
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto start = Event::Create(), stop = Event::Create();
  ASSERT_TRUE(start.ok() && stop.ok());
  std::vector<int32_t> host(1000);
  std::iota(host.begin(), host.end(), 7);
  auto pinned = PinnedBuffer::Allocate(sizeof(int32_t) * host.size());
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  std::copy(host.begin(), host.end(), pinned->as<int32_t>());
  auto dev = DeviceBuffer::Allocate(sizeof(int32_t) * host.size());
  ASSERT_TRUE(dev.ok()) << dev.status();
  FACET_ASSERT_OK(start->Record(stream->get()));
  ASSERT_EQ(cudaMemcpyAsync(dev->data(), pinned->data(), pinned->bytes(), cudaMemcpyHostToDevice,
                            stream->get()), cudaSuccess);
  FACET_ASSERT_OK(stop->Record(stream->get()));
  FACET_ASSERT_OK(stop->Synchronize());
  auto ms = stop->ElapsedMsSince(*start);
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GE(*ms, 0.0f);
  // Moved-from handles are empty; the moved-to one owns the memory.
  DeviceBuffer moved = std::move(*dev);
  EXPECT_EQ(dev->data(), nullptr);
  std::vector<int32_t> back(host.size());
  FACET_ASSERT_OK(CopyToHost(back.data(), moved.data(), moved.bytes(), stream->get()));
  EXPECT_EQ(back, host);
}

TEST(CudaRuntime, CachingAllocatorReusesBlocksAndReportsOom) {
  FACET_REQUIRE_GPU();
  CachingAllocator alloc;
  void* first = nullptr;
  {
    auto a = alloc.Allocate(1000);
    ASSERT_TRUE(a.ok()) << a.status();
    first = a->data();
    EXPECT_EQ(alloc.in_use_bytes(), 1024u);
  }
  EXPECT_EQ(alloc.cached_bytes(), 1024u);
  auto b = alloc.Allocate(900);  // same bucket: the cached block, no cudaMalloc
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(alloc.device_mallocs(), 1);
  auto huge = alloc.Allocate(size_t(1) << 50);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  b->Reset();
  FACET_ASSERT_OK(alloc.ReleaseCache());
  EXPECT_EQ(alloc.cached_bytes(), 0u);
}

TEST(CudaRuntime, BackendOpsMatchReference) {
  FACET_REQUIRE_GPU();
  auto b = CreateBackend("cuda");
  ASSERT_TRUE(b.ok()) << b.status();
  Backend& be = **b;
  const int64_t rows = 3, dim = 256;
  std::vector<float> x = Random(rows * dim, 70), w = Random(dim, 71, 0.5f, false);
  std::vector<float> want(rows * dim);
  cpu::ref::RmsNorm(x.data(), w.data(), want.data(), rows, dim, 1e-6f, false);
  auto xb = ToBf16Bits(x);
  auto d_x = be.Allocate(xb.size() * 2), d_y = be.Allocate(xb.size() * 2), d_w = be.Allocate(w.size() * 4);
  ASSERT_TRUE(d_x.ok() && d_y.ok() && d_w.ok());
  FACET_ASSERT_OK(be.CopyIn(*d_x, xb.data(), xb.size() * 2));
  FACET_ASSERT_OK(be.CopyIn(*d_w, w.data(), w.size() * 4));
  FACET_ASSERT_OK(be.RmsNorm(*d_x, static_cast<float*>(*d_w), *d_y, rows, dim, 1e-6f, false));
  std::vector<uint16_t> yb(xb.size());
  FACET_ASSERT_OK(be.CopyOut(yb.data(), *d_y, yb.size() * 2));
  ExpectNear(FromBf16Bits(yb), want, kBf16Eps + 2 * dim * kF32Eps, 0, "backend RmsNorm");
  // A bad token id is an error, not a crash.
  std::vector<int32_t> ids = {1, 99999};
  auto d_ids = be.Allocate(8), d_out = be.Allocate(2 * dim * 4);
  ASSERT_TRUE(d_ids.ok() && d_out.ok());
  FACET_ASSERT_OK(be.CopyIn(*d_ids, ids.data(), 8));
  const WeightRef table{*d_x, WeightFormat::kBF16, rows, dim};
  EXPECT_EQ(be.Embed(table, static_cast<int32_t*>(*d_ids), 2, 1.0f, static_cast<float*>(*d_out)).code(),
            absl::StatusCode::kInvalidArgument);
  for (void* p : {*d_x, *d_y, *d_w, *d_ids, *d_out}) be.Free(p);
}

}  // namespace
}  // namespace facet::cuda
