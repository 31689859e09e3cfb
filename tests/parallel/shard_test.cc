// Shard arithmetic: every head / row / expert is owned exactly as the rules
// in parallel/shard.h say. (Gemma's post-attention RMSNorm hides a doubled
// o_proj sum in the forward pass, so the one-contributor-per-head rule is
// checked here directly.)
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/shard.h"

namespace facet::parallel {
namespace {

TEST(EvenShard, SplitsAndRejects) {
  auto r = EvenShard(12, 4, 3, "x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->begin, 9);
  EXPECT_EQ(r->size, 3);
  EXPECT_FALSE(EvenShard(10, 4, 0, "x").ok());
  EXPECT_FALSE(EvenShard(12, 4, 4, "x").ok());
}

// For every (heads, kv heads, tp) a Gemma config can produce: each query
// head is computed by tp/nq ranks (or once), exactly one of them adds its
// o_proj output, and each rank's KV heads are the ones its query heads read.
TEST(ShardHeads, EachHeadCountedOnce) {
  for (int nq : {1, 2, 4, 8, 16, 32}) {
    for (int nkv = 1; nkv <= nq; nkv *= 2) {
      if (nq % nkv) continue;
      for (int tp : {1, 2, 4, 8}) {
        if (nq % tp != 0 && tp % nq != 0) {
          EXPECT_FALSE(ShardHeads(nq, nkv, tp, 0).ok()) << nq << " " << tp;
          continue;
        }
        std::map<int64_t, int> contributions, computed;
        for (int r = 0; r < tp; ++r) {
          auto s = ShardHeads(nq, nkv, tp, r);
          ASSERT_TRUE(s.ok()) << nq << "/" << nkv << " tp " << tp << ": " << s.status();
          const int group = nq / nkv;
          for (int64_t h = s->q_heads.begin; h < s->q_heads.end(); ++h) {
            ++computed[h];
            if (s->reduces_output) ++contributions[h];
            EXPECT_TRUE(s->kv_heads.Contains(h / group)) << "head " << h << " rank " << r;
          }
          EXPECT_EQ(s->kv_heads.size, std::max(1, nkv / tp));
          EXPECT_EQ(s->q_heads.size, std::max(1, nq / tp));
        }
        ASSERT_EQ(int(contributions.size()), nq);
        for (auto [h, n] : contributions) EXPECT_EQ(n, 1) << "head " << h;
        for (auto [h, n] : computed) EXPECT_EQ(n, std::max(1, tp / nq)) << "head " << h;
      }
    }
  }
  EXPECT_FALSE(ShardHeads(4, 3, 2, 0).ok());  // heads not a multiple of KV heads
  EXPECT_FALSE(ShardHeads(4, 2, 2, 2).ok());  // rank out of range
}

}  // namespace
}  // namespace facet::parallel
