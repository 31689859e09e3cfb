// worker/cuda_step.h: engine steps (scheduled by the real Scheduler over a
// KvBlockManager with a global and a sliding pool) become the GPU model's
// block tables and cache slots, including sliding blocks released behind
// the window; a batch that is not the scheduled step is refused.
#include "worker/cuda_step.h"

#include <gtest/gtest.h>

namespace facet {
namespace {

constexpr int64_t kBlockSize = 4;
constexpr int64_t kWidth = 16;  // table width the model would have

// The step the engine loop would build from `plan` (worker/local_engine.cc).
StepBatch BatchFor(const StepPlan& plan) {
  StepBatch b;
  for (const ScheduledSeq& s : plan.seqs) {
    b.segments.push_back(SeqSegment{s.id, int64_t(b.tokens.size()), s.num_tokens, s.begin});
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      b.tokens.push_back(int32_t(100 + s.begin + i));
      b.positions.push_back(int32_t(s.begin + i));
    }
    if (s.samples) b.logit_rows.push_back(int64_t(b.tokens.size()) - 1);
  }
  return b;
}

// Every field of `s` against the block manager, by first principles.
void ExpectMatches(const CudaStep& s, const StepBatch& b, const KvBlockManager& blocks) {
  int pool_of[kNumCudaPools];
  MapCudaPools(blocks, pool_of);
  ASSERT_EQ(s.tokens, b.tokens);
  ASSERT_EQ(s.positions, b.positions);
  ASSERT_EQ(s.q_start.size(), b.segments.size() + 1);
  ASSERT_EQ(s.logit_rows.size(), b.logit_rows.size());
  for (size_t r = 0; r < b.logit_rows.size(); ++r) EXPECT_EQ(s.logit_rows[r], b.logit_rows[r]);
  for (size_t i = 0; i < b.segments.size(); ++i) {
    const SeqSegment& seg = b.segments[i];
    EXPECT_EQ(s.q_start[i], seg.token_begin);
    EXPECT_EQ(s.kv_len[i], seg.pos0 + seg.num_tokens);
    for (int p = 0; p < kNumCudaPools; ++p) {
      const std::vector<int32_t>& table = blocks.Table(seg.seq, pool_of[p]);
      for (int64_t j = 0; j < kWidth; ++j) {
        const int32_t want = j < int64_t(table.size()) ? table[j] : -1;
        EXPECT_EQ(s.tables[p][i * kWidth + j], want) << "pool " << p << " seq " << i << " block " << j;
      }
      for (int64_t t = 0; t < seg.num_tokens; ++t) {
        const int64_t pos = seg.pos0 + t;
        const int32_t block = table[pos / kBlockSize];
        ASSERT_GE(block, 0);
        EXPECT_EQ(s.slots[p][seg.token_begin + t], block * kBlockSize + pos % kBlockSize);
      }
    }
  }
}

TEST(CudaStepTest, TablesAndSlotsFollowTheScheduler) {
  KvBlockManager blocks(kBlockSize, {PoolSpec{"global", 40, 0}, PoolSpec{"sliding", 40, 6}});
  Scheduler sched(SchedulerConfig{8, 4, 16, 64}, &blocks);
  ASSERT_TRUE(sched.Add(1, 11, 20).ok());
  ASSERT_TRUE(sched.Add(2, 3, 20).ok());
  bool saw_release = false, saw_chunk = false, saw_decode_only = false;
  CudaStep s;
  int steps = 0;
  for (;; ++steps) {  // until both have sampled their 20 tokens
    StepPlan plan = sched.Schedule();
    if (plan.empty()) break;
    ASSERT_LT(steps, 100);
    StepBatch b = BatchFor(plan);
    ASSERT_TRUE(BuildCudaStep(b, plan, blocks, kWidth, &s).ok());
    ExpectMatches(s, b, blocks);
    saw_chunk |= b.logit_rows.size() < b.segments.size();  // a prefill chunk short of the end
    saw_decode_only |= b.tokens.size() == b.segments.size() && b.segments.size() == 2;
    // Logical block 0 is allocated at a sequence's first step; -1 there
    // means the sliding pool took it back behind the window.
    for (size_t i = 0; i < b.segments.size(); ++i) {
      if (s.tables[kSlidingPool][i * kWidth] == -1) {
        saw_release = true;
        EXPECT_GE(s.tables[kGlobalPool][i * kWidth], 0);  // global keeps everything
      }
    }
    sched.OnStepDone(plan, {});
  }
  EXPECT_GE(steps, 20);
  EXPECT_TRUE(saw_chunk);
  EXPECT_TRUE(saw_decode_only);
  // Sequence 1 ran past 11 + 6 positions: the window (6) let blocks go.
  EXPECT_TRUE(saw_release);
}

TEST(CudaStepTest, RefusesABatchThatIsNotTheScheduledStep) {
  KvBlockManager blocks(kBlockSize, {PoolSpec{"global", 40, 0}});
  Scheduler sched(SchedulerConfig{16, 4, 16, 64}, &blocks);
  ASSERT_TRUE(sched.Add(7, 5, 4).ok());
  StepPlan plan = sched.Schedule();
  StepBatch b = BatchFor(plan);
  CudaStep s;
  ASSERT_TRUE(BuildCudaStep(b, plan, blocks, kWidth, &s).ok());
  EXPECT_TRUE(s.tables[kSlidingPool].empty());  // no sliding layers: no sliding pool

  StepBatch wrong = b;
  wrong.segments[0].pos0 += 1;
  EXPECT_EQ(BuildCudaStep(wrong, plan, blocks, kWidth, &s).code(), absl::StatusCode::kInternal);
  wrong = b;
  wrong.segments[0].seq = 8;
  EXPECT_EQ(BuildCudaStep(wrong, plan, blocks, kWidth, &s).code(), absl::StatusCode::kInternal);
  wrong = b;
  wrong.tokens.push_back(1);
  wrong.positions.push_back(5);
  EXPECT_EQ(BuildCudaStep(wrong, plan, blocks, kWidth, &s).code(), absl::StatusCode::kInternal);
  StepPlan other = plan;
  other.seqs.clear();
  EXPECT_EQ(BuildCudaStep(b, other, blocks, kWidth, &s).code(), absl::StatusCode::kInternal);
  // A table wider than the model's: 5 positions need 2 blocks of 4.
  EXPECT_EQ(BuildCudaStep(b, plan, blocks, /*max_blocks=*/1, &s).code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace facet
