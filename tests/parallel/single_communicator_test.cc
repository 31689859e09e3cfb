// The world of one: collectives are copies, errors match the MPI ones.
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator.h"
#include "parallel/single_communicator.h"

namespace facet::parallel {
namespace {

TEST(SingleCommunicator, CollectivesCopy) {
  SingleCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  std::vector<float> a = {1, 2, 3}, b(3);
  ASSERT_TRUE(c.AllReduce(a.data(), b.data(), 3, DType::kF32, ReduceOp::kSum).ok());
  EXPECT_EQ(b, a);
  std::vector<float> g(3);
  ASSERT_TRUE(c.AllGather<float>(a, g).ok());
  EXPECT_EQ(g, a);
  std::vector<float> rs(3);
  ASSERT_TRUE(c.ReduceScatter<float>(a, rs).ok());
  EXPECT_EQ(rs, a);
  ASSERT_TRUE(c.Broadcast<float>(a, 0).ok());
  std::vector<size_t> n = {3};
  std::vector<float> t(3);
  ASSERT_TRUE(c.AllToAllV(a.data(), n, t.data(), n, DType::kF32).ok());
  EXPECT_EQ(t, a);
  auto rc = c.ExchangeCounts(n);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ((*rc)[0], 3u);
  auto s = c.Split(0, 0);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->size(), 1);
  EXPECT_TRUE(c.Barrier().ok());
}

TEST(SingleCommunicator, Errors) {
  SingleCommunicator c;
  std::vector<uint8_t> b(4);
  EXPECT_FALSE(c.AllReduce(b.data(), b.data(), 4, DType::kBytes, ReduceOp::kSum).ok());
  EXPECT_FALSE(c.Broadcast(b.data(), 4, DType::kBytes, 1).ok());
  std::vector<size_t> s = {2}, r = {3};
  EXPECT_FALSE(c.AllToAllV(b.data(), s, b.data(), r, DType::kBytes).ok());
  EXPECT_FALSE(c.Split(-1, 0).ok());
  auto groups = MakeProcessGroups(c, 1, 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(groups->tp->size(), 1);
  EXPECT_FALSE(MakeProcessGroups(c, 2, 1).ok());
}

TEST(SingleCommunicator, WorldWithoutLauncherIsSingle) {
  if (LaunchedWorldSize() != 1) GTEST_SKIP() << "run under a launcher";
  auto w = CreateWorldCommunicator();
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->size(), 1);
}

}  // namespace
}  // namespace facet::parallel
