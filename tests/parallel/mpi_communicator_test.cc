// Every collective of the MPI communicator against a serial computation of
// the same values, plus the error paths. Runs under mpirun -np 1/2/4; every
// rank makes the same sequence of calls whatever an EXPECT found, so a
// failure cannot desynchronize later collectives.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "tests/parallel/test_world.h"

namespace facet::parallel {
namespace {

// A value every rank can compute for any (rank, index).
float Val(int r, size_t i) { return float(r * 1000 + int(i % 97)) * 0.25f - 3.0f; }

TEST(MpiCommunicator, WorldMatchesLauncher) {
  Communicator& w = TestWorld();
  EXPECT_EQ(w.backend(), "mpi");
  EXPECT_EQ(w.size(), LaunchedWorldSize());
  EXPECT_GE(w.rank(), 0);
  EXPECT_LT(w.rank(), w.size());
  EXPECT_GE(MpiCommunicator::ThreadLevel(), MPI_THREAD_SINGLE);
}

TEST(MpiCommunicator, AllReduceF32SumMaxMin) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  const size_t count = 1001;  // odd, not a multiple of anything
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    std::vector<float> send(count), recv(count, -1.f);  // [count]
    for (size_t i = 0; i < count; ++i) send[i] = Val(r, i) * (r % 2 ? -1.f : 1.f);
    ASSERT_TRUE(w.AllReduce(send.data(), recv.data(), count, DType::kF32, op).ok());
    for (size_t i = 0; i < count; ++i) {
      float want = op == ReduceOp::kSum ? 0.f : (op == ReduceOp::kMax ? -1e30f : 1e30f);
      for (int j = 0; j < n; ++j) {
        float v = Val(j, i) * (j % 2 ? -1.f : 1.f);
        want = op == ReduceOp::kSum ? want + v : op == ReduceOp::kMax ? std::max(want, v)
                                                                      : std::min(want, v);
      }
      // Sums of quarter-integers below 2^20 are exact in fp32 in any order.
      ASSERT_EQ(recv[i], want) << ReduceOpName(op) << " i=" << i;
    }
  }
}

TEST(MpiCommunicator, AllReduceInPlaceIntsAndBf16) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  std::vector<int32_t> a(17);
  std::vector<int64_t> b(9);
  std::vector<bf16> h(33);
  for (size_t i = 0; i < a.size(); ++i) a[i] = int32_t(r * 10 + i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = (int64_t(1) << 40) * (r + 1) + int64_t(i);
  for (size_t i = 0; i < h.size(); ++i) h[i] = F32ToBf16(float(r + 1) * float(i));
  ASSERT_TRUE(w.AllReduce(std::span<int32_t>(a)).ok());
  ASSERT_TRUE(w.AllReduce(std::span<int64_t>(b), ReduceOp::kMax).ok());
  ASSERT_TRUE(w.AllReduce(std::span<bf16>(h)).ok());
  const int tri = n * (n + 1) / 2;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], int32_t(10 * n * (n - 1) / 2 + n * int(i)));
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], (int64_t(1) << 40) * n + int64_t(i));
  // (1+..+n) * i stays an integer below 256 for i < 33, n <= 4: exact in bf16
  // only while it fits 8 significant bits, so compare with bf16 rounding.
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_NEAR(Bf16ToF32(h[i]), float(tri * int(i)), float(tri * int(i)) / 128.f) << i;
  }
}

TEST(MpiCommunicator, AllGatherOutOfPlaceAndInPlace) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  const size_t count = 37;
  std::vector<float> send(count), recv(count * n);  // [count], [n, count]
  for (size_t i = 0; i < count; ++i) send[i] = Val(r, i);
  ASSERT_TRUE(w.AllGather<float>(send, recv).ok());
  for (int j = 0; j < n; ++j)
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(recv[j * count + i], Val(j, i));
  // In place: this rank's block already sits at its offset in recv.
  std::vector<int64_t> buf(count * n, -1);
  for (size_t i = 0; i < count; ++i) buf[r * count + i] = r * 100 + int64_t(i);
  ASSERT_TRUE(w.AllGather(buf.data() + r * count, buf.data(), count, DType::kI64).ok());
  for (int j = 0; j < n; ++j)
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(buf[j * count + i], j * 100 + int64_t(i));
}

TEST(MpiCommunicator, ReduceScatter) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  const size_t count = 11;
  std::vector<float> send(count * n), recv(count);  // [n, count], [count]
  for (size_t i = 0; i < send.size(); ++i) send[i] = Val(r, i);
  ASSERT_TRUE(w.ReduceScatter<float>(send, recv).ok());
  for (size_t i = 0; i < count; ++i) {
    float want = 0;
    for (int j = 0; j < n; ++j) want += Val(j, r * count + i);
    ASSERT_EQ(recv[i], want);
  }
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  Communicator& w = TestWorld();
  for (int root = 0; root < w.size(); ++root) {
    std::vector<uint8_t> buf(100, uint8_t(w.rank()));
    if (w.rank() == root)
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(root * 7 + i);
    ASSERT_TRUE(w.Broadcast<uint8_t>(buf, root).ok());
    for (size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], uint8_t(root * 7 + i));
  }
}

TEST(MpiCommunicator, AllToAllVWithExchangedCounts) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  // Rank r sends (r + j) % 3 + j elements to rank j; element k of that block
  // is r * 10000 + j * 100 + k.
  auto cnt = [](int from, int to) { return size_t((from + to) % 3 + to); };
  std::vector<size_t> sc(n);
  std::vector<float> send;
  for (int j = 0; j < n; ++j) {
    sc[j] = cnt(r, j);
    for (size_t k = 0; k < sc[j]; ++k) send.push_back(float(r * 10000 + j * 100 + int(k)));
  }
  auto rc = w.ExchangeCounts(sc);
  ASSERT_TRUE(rc.ok()) << rc.status();
  for (int j = 0; j < n; ++j) EXPECT_EQ((*rc)[j], cnt(j, r));
  std::vector<float> recv(std::accumulate(rc->begin(), rc->end(), size_t(0)));
  ASSERT_TRUE(w.AllToAllV(send.data(), sc, recv.data(), *rc, DType::kF32).ok());
  size_t off = 0;
  for (int j = 0; j < n; ++j)
    for (size_t k = 0; k < (*rc)[j]; ++k) ASSERT_EQ(recv[off++], float(j * 10000 + r * 100 + int(k)));
}

TEST(MpiCommunicator, SplitAndProcessGroups) {
  Communicator& w = TestWorld();
  const int n = w.size(), r = w.rank();
  auto half = w.Split(r % 2, r);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ((*half)->size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ((*half)->rank(), r / 2);
  int32_t v = r;
  ASSERT_TRUE((*half)->AllReduce(std::span<int32_t>(&v, 1)).ok());
  int32_t want = 0;
  for (int j = r % 2; j < n; j += 2) want += j;
  EXPECT_EQ(v, want);
  if (n % 2 == 0) {
    auto g = MakeProcessGroups(w, 2, 1);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->tp->size(), 2);
    EXPECT_EQ(g->tp->rank(), r % 2);
    EXPECT_EQ(g->ep->size(), 1);
    EXPECT_EQ(g->dp->size(), n / 2);
    EXPECT_EQ(g->dp->rank(), r / 2);
  }
  EXPECT_FALSE(MakeProcessGroups(w, 2, 4).ok());  // tp != ep, both > 1
  EXPECT_FALSE(MakeProcessGroups(w, n + 1, 1).ok());
}

TEST(MpiCommunicator, MismatchedCountsAreAnErrorOnEveryRank) {
  Communicator& w = TestWorld();
  if (w.size() < 2) GTEST_SKIP() << "needs two ranks";
  const int r = w.rank();
  std::vector<float> buf(8, 1.f);
  absl::Status s = w.AllReduce(buf.data(), buf.data(), r == 0 ? 8 : 7, DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = w.AllReduce(buf.data(), buf.data(), 8, r == 0 ? DType::kF32 : DType::kI32, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = w.Broadcast(buf.data(), 8, DType::kF32, r == 0 ? 0 : 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  std::vector<float> g(8 * w.size());
  s = w.AllGather(buf.data(), g.data(), r == 1 ? 4 : 8, DType::kF32);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // AllToAllV: rank 0 expects one element too many from rank 1.
  std::vector<size_t> sc(w.size(), 1), rc(w.size(), 1);
  if (r == 0) rc[1] = 2;
  std::vector<float> send(w.size(), 1.f), recv(w.size() + 1);
  s = w.AllToAllV(send.data(), sc, recv.data(), rc, DType::kF32);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  auto split = w.Split(r == 1 ? -1 : 0, r);
  EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
  // The communicator is still usable after the rejected calls.
  int32_t one = 1;
  ASSERT_TRUE(w.AllReduce(std::span<int32_t>(&one, 1)).ok());
  EXPECT_EQ(one, w.size());
}

TEST(MpiCommunicator, LocalArgumentErrors) {
  Communicator& w = TestWorld();
  std::vector<uint8_t> b(4);
  EXPECT_EQ(w.AllReduce(b.data(), b.data(), 4, DType::kBytes, ReduceOp::kSum).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.Broadcast(b.data(), 4, DType::kBytes, w.size()).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> s(3), big(3 * w.size() + 1);
  EXPECT_EQ(w.AllGather<float>(s, big).code(), absl::StatusCode::kInvalidArgument);
  std::vector<size_t> wrong(w.size() + 1);
  EXPECT_EQ(w.AllToAllV(s.data(), wrong, s.data(), wrong, DType::kF32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(w.ExchangeCounts(wrong).ok());
  EXPECT_TRUE(w.Barrier().ok());
}

// Not a pass/fail check: prints the cost of a small all-reduce (a decode
// step's [1, H] f32 with H = 2816) with and without the count agreement, so
// the validation overhead is a measured number.
TEST(MpiCommunicator, SmallAllReduceLatency) {
  auto* w = dynamic_cast<MpiCommunicator*>(&TestWorld());
  ASSERT_NE(w, nullptr);
  std::vector<float> buf(2816, 1.0f);
  for (bool validate : {true, false}) {
    w->set_validate(validate);
    ASSERT_TRUE(w->Barrier().ok());
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int kIters = 500;
    for (int i = 0; i < kIters; ++i) ASSERT_TRUE(w->AllReduce(std::span<float>(buf)).ok());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kIters;
    if (w->rank() == 0) std::printf("[ measured ] %d ranks: AllReduce 11 KiB f32, validate=%d: %.1f us\n", w->size(), validate, us);
  }
  w->set_validate(true);
}

}  // namespace
}  // namespace facet::parallel
