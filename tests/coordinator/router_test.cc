// Least-loaded routing across replicas.
#include "coordinator/router.h"

#include <gtest/gtest.h>

#include <vector>

namespace facet {
namespace {

TEST(Router, PicksTheLeastAssignedLiveReplica) {
  std::vector<ReplicaLoad> r = {{"a", true, 3, 0, 0}, {"b", true, 1, 5, 5}, {"c", true, 2, 0, 0}};
  for (uint64_t rot = 0; rot < 3; ++rot) EXPECT_EQ(PickReplica(r, rot), 1);
  r[1].up = false;
  for (uint64_t rot = 0; rot < 3; ++rot) EXPECT_EQ(PickReplica(r, rot), 2);
}

TEST(Router, BreaksTiesByQueueThenRotation) {
  std::vector<ReplicaLoad> r = {{"a", true, 1, 4, 0}, {"b", true, 1, 1, 1}};
  EXPECT_EQ(PickReplica(r, 0), 1);
  EXPECT_EQ(PickReplica(r, 1), 1);
  std::vector<ReplicaLoad> even = {{"a", true, 0, 0, 0}, {"b", true, 0, 0, 0}, {"c", true, 0, 0, 0}};
  EXPECT_EQ(PickReplica(even, 0), 0);
  EXPECT_EQ(PickReplica(even, 1), 1);
  EXPECT_EQ(PickReplica(even, 5), 2);
}

TEST(Router, NoneUp) {
  std::vector<ReplicaLoad> r = {{"a", false, 0, 0, 0}};
  EXPECT_EQ(PickReplica(r, 0), -1);
  EXPECT_EQ(PickReplica({}, 0), -1);
}

}  // namespace
}  // namespace facet
