#include "worker/kv_blocks.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace facet {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The bound the design promises for a sliding pool (DESIGN.md §4).
int64_t SlidingBound(int64_t window, int64_t chunk, int64_t block_size) {
  return CeilDiv(window - 1 + chunk, block_size) + 1;
}

TEST(KvBlocksTest, GlobalPoolMapsPositionsToBlocks) {
  KvBlockManager kv(4, {{"global", 10, 0}});
  EXPECT_EQ(kv.BlocksNeeded(1, 0, 0, 5), 2);
  ASSERT_TRUE(kv.Allocate(1, 0, 5).ok());
  EXPECT_TRUE(kv.Has(1));
  EXPECT_EQ(kv.used_blocks(1, 0), 2);
  EXPECT_EQ(kv.free_blocks(0), 8);
  const std::vector<int32_t>& t = kv.Table(1, 0);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_NE(t[0], t[1]);
  EXPECT_EQ(kv.Slot(1, 0, 3), std::make_pair(t[0], 3));
  EXPECT_EQ(kv.Slot(1, 0, 4), std::make_pair(t[1], 0));
  // Positions 5..7 still fit the second block; position 8 needs a third.
  EXPECT_EQ(kv.BlocksNeeded(1, 0, 5, 8), 0);
  EXPECT_EQ(kv.BlocksNeeded(1, 0, 5, 9), 1);
  ASSERT_TRUE(kv.Allocate(1, 5, 9).ok());
  EXPECT_EQ(kv.Table(1, 0).size(), 3u);
  EXPECT_EQ(kv.Table(1, 0)[0], t[0]);  // growing never moves earlier blocks
}

TEST(KvBlocksTest, ExhaustionChangesNothing) {
  KvBlockManager kv(4, {{"global", 4, 0}, {"sliding", 2, 4}});
  ASSERT_TRUE(kv.Allocate(1, 0, 8).ok());  // global: 2 blocks, sliding: 2 blocks
  EXPECT_EQ(kv.free_blocks(1), 0);
  // The global pool has room, the sliding one does not: neither may change.
  EXPECT_FALSE(kv.CanAllocate(2, 0, 1));
  const absl::Status s = kv.Allocate(2, 0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(s.message()).find("sliding"), std::string::npos) << s.message();
  EXPECT_FALSE(kv.Has(2));
  EXPECT_EQ(kv.free_blocks(0), 2);
  EXPECT_EQ(kv.free_blocks(1), 0);
  // Growing seq 1 past the global pool fails the same way and keeps its tables.
  const std::vector<int32_t> before = kv.Table(1, 0);
  EXPECT_FALSE(kv.Allocate(1, 8, 17).ok());
  EXPECT_EQ(kv.Table(1, 0), before);
  EXPECT_EQ(kv.free_blocks(0), 2);
}

TEST(KvBlocksTest, FreedBlocksAreReused) {
  KvBlockManager kv(2, {{"global", 3, 0}});
  ASSERT_TRUE(kv.Allocate(1, 0, 6).ok());
  std::vector<int32_t> first = kv.Table(1, 0);
  EXPECT_FALSE(kv.CanAllocate(2, 0, 1));
  kv.Free(1);
  EXPECT_FALSE(kv.Has(1));
  EXPECT_EQ(kv.free_blocks(0), 3);
  EXPECT_EQ(kv.used_blocks(1, 0), 0);
  ASSERT_TRUE(kv.Allocate(2, 0, 6).ok());
  std::vector<int32_t> second = kv.Table(2, 0);
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
  EXPECT_EQ(first, second);
  kv.Free(99);  // unknown: ignored
  EXPECT_EQ(kv.free_blocks(0), 0);
}

TEST(KvBlocksTest, SlidingPoolReleasesBlocksThatLeaveTheWindow) {
  const int64_t bs = 4, window = 8;
  KvBlockManager kv(bs, {{"global", 64, 0}, {"sliding", 64, window}});
  int64_t pos = 0;
  ASSERT_TRUE(kv.Allocate(1, 0, 10).ok());  // prefill chunk of 10
  pos = 10;
  for (; pos < 200; ++pos) {
    ASSERT_TRUE(kv.Allocate(1, pos, pos + 1).ok()) << pos;
    const int64_t lo = std::max<int64_t>(0, pos - (window - 1));
    // Every key the query at `pos` reads has a slot ...
    for (int64_t k = lo; k <= pos; ++k) kv.Slot(1, 1, k);
    // ... and every block wholly below the window is back in the pool.
    const std::vector<int32_t>& t = kv.Table(1, 1);
    for (int64_t i = 0; i < lo / bs; ++i) EXPECT_EQ(t[i], -1) << "block " << i << " at pos " << pos;
    EXPECT_LE(kv.used_blocks(1, 1), SlidingBound(window, 1, bs));
    EXPECT_EQ(kv.used_blocks(1, 1) + kv.free_blocks(1), kv.total_blocks(1));
    EXPECT_EQ(kv.used_blocks(1, 0), CeilDiv(pos + 1, bs));  // global keeps everything
  }
}

TEST(KvBlocksTest, SlidingSequenceRunsInAPoolOfItsPeakSize) {
  // The release of out-of-window blocks must count as room for the same step,
  // or a pool of exactly the peak size would stall.
  for (int64_t bs : {1, 2, 4, 16}) {
    for (int64_t window : {1, 3, 4, 5, 8, 33}) {
      const int64_t positions = 150;
      KvBlockManager probe(bs, {{"sliding", 1000, window}});
      const int64_t peak = probe.PeakBlocks(0, positions);
      KvBlockManager kv(bs, {{"sliding", peak, window}});
      int64_t most = 0;
      for (int64_t pos = 0; pos < positions; ++pos) {
        ASSERT_TRUE(kv.Allocate(7, pos, pos + 1).ok()) << "bs " << bs << " window " << window << " pos " << pos;
        most = std::max(most, kv.used_blocks(7, 0));
      }
      // The peak is reached (the window's first key lands in a block's last slot).
      EXPECT_EQ(most, peak) << "bs " << bs << " window " << window;
      EXPECT_LE(peak, SlidingBound(window, 1, bs));
      kv.Free(7);
      EXPECT_EQ(kv.free_blocks(0), peak);
    }
  }
}

TEST(KvBlocksTest, PeakBlocksOfGlobalPoolIsTheWholeSequence) {
  KvBlockManager kv(16, {{"global", 10, 0}, {"sliding", 10, 1024}});
  EXPECT_EQ(kv.PeakBlocks(0, 1), 1);
  EXPECT_EQ(kv.PeakBlocks(0, 16), 1);
  EXPECT_EQ(kv.PeakBlocks(0, 17), 2);
  EXPECT_EQ(kv.PeakBlocks(0, 100000), 6250);
  EXPECT_EQ(kv.PeakBlocks(1, 100), 7);       // shorter than the window: all of it
  EXPECT_EQ(kv.PeakBlocks(1, 100000), 65);   // 1023 keys behind a query span 64 blocks + 1
}

// Many sequences grow, stall and free at random over small pools; after
// every operation the pools must account for every block exactly once.
TEST(KvBlocksTest, RandomizedInterleavingKeepsInvariants) {
  const int64_t bs = 4;
  const std::vector<PoolSpec> specs = {{"global", 60, 0}, {"sliding", 40, 6}, {"sliding_big", 50, 17}};
  KvBlockManager kv(bs, specs);
  std::mt19937 rng(12345);
  std::map<SeqId, int64_t> computed;  // live sequences -> positions with KV
  int64_t successes = 0, failures = 0;
  for (int step = 0; step < 20000; ++step) {
    const SeqId id = std::uniform_int_distribution<SeqId>(0, 24)(rng);
    const int op = std::uniform_int_distribution<int>(0, 9)(rng);
    int64_t chunk = 0;
    if (op == 0) {
      kv.Free(id);
      computed.erase(id);
    } else {
      const int64_t begin = computed.count(id) ? computed[id] : 0;
      chunk = op < 7 ? 1 : std::uniform_int_distribution<int64_t>(1, 12)(rng);
      std::vector<int64_t> free_before;
      for (int p = 0; p < kv.num_pools(); ++p) free_before.push_back(kv.free_blocks(p));
      const bool predicted = kv.CanAllocate(id, begin, begin + chunk);
      const absl::Status s = kv.Allocate(id, begin, begin + chunk);
      ASSERT_EQ(s.ok(), predicted) << s.message();
      if (s.ok()) {
        ++successes;
        computed[id] = begin + chunk;
        for (int p = 0; p < kv.num_pools(); ++p) {
          const int64_t w = specs[p].window;
          const int64_t lo = w == 0 ? 0 : std::max<int64_t>(0, begin - (w - 1));
          for (int64_t k = lo; k < begin + chunk; ++k) kv.Slot(id, p, k);
          if (w > 0) {
            EXPECT_LE(kv.used_blocks(id, p), SlidingBound(w, chunk, bs));
          }
        }
      } else {
        ++failures;
        EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
        for (int p = 0; p < kv.num_pools(); ++p) ASSERT_EQ(kv.free_blocks(p), free_before[p]);
        EXPECT_EQ(kv.Has(id), computed.count(id) == 1);
      }
    }
    // Accounting, and no physical block held twice or both held and free.
    for (int p = 0; p < kv.num_pools(); ++p) {
      int64_t used = 0;
      std::vector<int> owners(specs[p].num_blocks, 0);
      for (const auto& [seq, n] : computed) {
        ASSERT_TRUE(kv.Has(seq));
        used += kv.used_blocks(seq, p);
        int64_t held = 0;
        for (int32_t b : kv.Table(seq, p)) {
          if (b < 0) continue;
          ASSERT_LT(b, specs[p].num_blocks);
          ++owners[b];
          ++held;
        }
        ASSERT_EQ(held, kv.used_blocks(seq, p));
      }
      ASSERT_EQ(used + kv.free_blocks(p), kv.total_blocks(p)) << "pool " << p << " step " << step;
      for (int b = 0; b < specs[p].num_blocks; ++b) ASSERT_LE(owners[b], 1) << "block " << b;
    }
  }
  // The run must have exercised both outcomes to mean anything.
  EXPECT_GT(successes, 1000);
  EXPECT_GT(failures, 100);
  for (const auto& [seq, n] : computed) kv.Free(seq);
  for (int p = 0; p < kv.num_pools(); ++p) EXPECT_EQ(kv.free_blocks(p), kv.total_blocks(p));
}

}  // namespace
}  // namespace facet
