// The leader -> follower step message (DESIGN.md §3 step 2): a compact diff.
// It carries the scheduler calls the leader made since the previous step (in
// order, so followers replay them and keep identical KV block tables) and the
// forward's inputs. Sampled tokens reach followers as next step's input ids;
// nothing per running sequence is resent, except, when the group samples
// (StepExecutor::samples(), tensor parallel), each sampled row's filters,
// seed and step (44 bytes) and, only under a repetition penalty, its history.
// A few KiB per step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/executor.h"

namespace facet {

struct SchedulerOp {
  enum class Kind : uint8_t { kAdd = 1, kAbort = 2, kSchedule = 3, kStepDone = 4 };
  Kind kind = Kind::kSchedule;
  SeqId id = 0;                  // kAdd, kAbort
  int64_t prompt_len = 0;        // kAdd
  int64_t max_new_tokens = 0;    // kAdd
  std::vector<SeqId> finished;   // kStepDone
  bool operator==(const SchedulerOp&) const = default;
};

struct StepMessage {
  enum class Kind : uint8_t { kStep = 1, kShutdown = 2 };
  Kind kind = Kind::kStep;
  int64_t step = 0;               // 1, 2, ... (followers check the sequence)
  std::vector<SchedulerOp> ops;   // since the previous message, in order
  StepBatch batch;                // kStep: the forward's inputs; empty on kShutdown
};

// Little-endian, length-prefixed; "FSTP" + version 2 (2 added per-row sampling).
std::string EncodeStepMessage(const StepMessage& message);
// INVALID_ARGUMENT naming what is wrong for a truncated, oversized or
// inconsistent message (bad magic, unknown kind, counts past the end,
// segments outside the token arrays, sampling rows that do not match the
// logit rows, sampling parameters ValidateSamplingParams refuses).
absl::StatusOr<StepMessage> DecodeStepMessage(absl::string_view bytes);

}  // namespace facet
