// Step messages round-trip exactly, and malformed bytes are refused with a
// reason instead of crashing or allocating without bound.
#include "worker/step_message.h"

#include <gtest/gtest.h>

namespace facet {
namespace {

StepMessage Sample() {
  StepMessage m;
  m.step = 7;
  SchedulerOp add;
  add.kind = SchedulerOp::Kind::kAdd;
  add.id = 3;
  add.prompt_len = 12;
  add.max_new_tokens = 5;
  SchedulerOp abort;
  abort.kind = SchedulerOp::Kind::kAbort;
  abort.id = 2;
  SchedulerOp done;
  done.kind = SchedulerOp::Kind::kStepDone;
  done.finished = {1, 9};
  m.ops = {done, add, abort, SchedulerOp{}};
  m.batch.tokens = {2, 100, 101, 7};
  m.batch.positions = {0, 1, 2, 40};
  m.batch.segments = {SeqSegment{3, 0, 3, 0}, SeqSegment{1, 3, 1, 40}};
  m.batch.logit_rows = {2, 3};
  return m;
}

// Sample() as a tensor-parallel group sends it: one sampling row per logit
// row, one of them with a repetition penalty and so a history.
StepMessage SampleWithSampling() {
  StepMessage m = Sample();
  RowSampling greedy;
  greedy.step = 0;
  RowSampling hot;
  hot.params.temperature = 0.7f;
  hot.params.top_k = 40;
  hot.params.top_p = 0.9f;
  hot.params.min_p = 0.05f;
  hot.params.repetition_penalty = 1.3f;
  hot.params.seed = 0xfedcba9876543210ull;  // the high bit survives the int64 wire
  hot.step = 12;
  hot.history = {2, 100, 101, 7, 262143};
  m.batch.sampling = {greedy, hot};
  return m;
}

void ExpectSameSampling(const RowSampling& a, const RowSampling& b) {
  EXPECT_EQ(a.params.temperature, b.params.temperature);
  EXPECT_EQ(a.params.top_k, b.params.top_k);
  EXPECT_EQ(a.params.top_p, b.params.top_p);
  EXPECT_EQ(a.params.min_p, b.params.min_p);
  EXPECT_EQ(a.params.repetition_penalty, b.params.repetition_penalty);
  EXPECT_EQ(a.params.seed, b.params.seed);
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.history, b.history);
}

TEST(StepMessage, RoundTrip) {
  const StepMessage m = Sample();
  const std::string bytes = EncodeStepMessage(m);
  auto back = DecodeStepMessage(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, m.kind);
  EXPECT_EQ(back->step, 7);
  EXPECT_EQ(back->ops, m.ops);
  EXPECT_EQ(back->batch.tokens, m.batch.tokens);
  EXPECT_EQ(back->batch.positions, m.batch.positions);
  ASSERT_EQ(back->batch.segments.size(), 2u);
  EXPECT_EQ(back->batch.segments[1].pos0, 40);
  EXPECT_EQ(back->batch.segments[1].token_begin, 3);
  EXPECT_EQ(back->batch.logit_rows, m.batch.logit_rows);
  EXPECT_TRUE(back->batch.sampling.empty());
  // Compact: a 4-token step with 4 ops stays well under a KiB.
  EXPECT_LT(bytes.size(), 300u);
}

TEST(StepMessage, SamplingRowsRoundTrip) {
  const StepMessage m = SampleWithSampling();
  const std::string bytes = EncodeStepMessage(m);
  auto back = DecodeStepMessage(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->batch.sampling.size(), 2u);
  for (size_t i = 0; i < 2; ++i) ExpectSameSampling(back->batch.sampling[i], m.batch.sampling[i]);
  // 44 bytes a row plus 4 per history id: the whole point versus gathering logits.
  EXPECT_EQ(bytes.size(), EncodeStepMessage(Sample()).size() + 2 * 44 + 5 * 4);
}

TEST(StepMessage, Shutdown) {
  StepMessage m;
  m.kind = StepMessage::Kind::kShutdown;
  m.step = 3;
  auto back = DecodeStepMessage(EncodeStepMessage(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, StepMessage::Kind::kShutdown);
  EXPECT_TRUE(back->batch.tokens.empty());
}

TEST(StepMessage, EveryTruncationIsRefused) {
  const std::string bytes = EncodeStepMessage(SampleWithSampling());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = DecodeStepMessage(bytes.substr(0, n));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "prefix " << n;
  }
  EXPECT_FALSE(DecodeStepMessage(bytes + "x").ok());
}

TEST(StepMessage, BadContentIsRefused) {
  std::string bytes = EncodeStepMessage(Sample());
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_NE(DecodeStepMessage(bad).status().message().find("magic"), std::string::npos);
  bad = bytes;
  bad[5] = 9;  // kind
  EXPECT_NE(DecodeStepMessage(bad).status().message().find("kind"), std::string::npos);
  // A segment that runs past the token arrays.
  StepMessage m = Sample();
  m.batch.segments[1].num_tokens = 5;
  EXPECT_NE(DecodeStepMessage(EncodeStepMessage(m)).status().message().find("segment"), std::string::npos);
  m = Sample();
  m.batch.logit_rows = {4};
  EXPECT_FALSE(DecodeStepMessage(EncodeStepMessage(m)).ok());
  // A huge count does not allocate: it is checked against the bytes left.
  bad = bytes.substr(0, 14);
  for (int i = 0; i < 8; ++i) bad.push_back(char(0x7f));
  EXPECT_FALSE(DecodeStepMessage(bad).ok());
}

TEST(StepMessage, BadSamplingRowsAreRefused) {
  auto reason = [](const StepMessage& m) {
    return std::string(DecodeStepMessage(EncodeStepMessage(m)).status().message());
  };
  StepMessage m = SampleWithSampling();
  m.batch.sampling.pop_back();  // two logit rows, one sampling row
  EXPECT_NE(reason(m).find("sampling rows do not match"), std::string::npos) << reason(m);
  m = SampleWithSampling();
  m.batch.sampling[1].params.temperature = -1;  // the Sampler would CHECK-fail on it
  EXPECT_NE(reason(m).find("invalid sampling parameters"), std::string::npos) << reason(m);
  m = SampleWithSampling();
  m.batch.sampling[1].params.top_p = 0;
  EXPECT_NE(reason(m).find("invalid sampling parameters"), std::string::npos) << reason(m);
  m = SampleWithSampling();
  m.batch.sampling[0].step = -3;
  EXPECT_NE(reason(m).find("negative sampling step"), std::string::npos) << reason(m);
}

}  // namespace
}  // namespace facet
