#include "worker/follower.h"

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "models/model.h"
#include "worker/leader.h"

namespace facet {

Follower::Follower(std::shared_ptr<Model> model, const EngineOptions& options, parallel::Communicator* group)
    : model_(std::move(model)),
      group_(group),
      blocks_(options.block_size, EnginePools(model_->config(), options)),
      kv_(model_->config(), &blocks_),
      scheduler_(EngineSchedulerConfig(model_->config(), options), &blocks_) {
  // As the leader's executor does (worker/leader.h): sample on the group.
  if (model_->tp() != nullptr) model_->set_gather_logits(false);
}

absl::Status Follower::Run() {
  std::string bytes;
  for (;;) {
    RETURN_IF_ERROR(BroadcastBytes(*group_, &bytes));
    ASSIGN_OR_RETURN(StepMessage m, DecodeStepMessage(bytes));
    ASSIGN_OR_RETURN(bool more, Apply(m));
    if (!more) return absl::OkStatus();
  }
}

absl::StatusOr<bool> Follower::Apply(const StepMessage& m) {
  if (m.step != next_step_) {
    return absl::InternalError(absl::StrCat("follower: expected step ", next_step_, ", got ", m.step));
  }
  ++next_step_;
  bool scheduled = false;
  for (const SchedulerOp& op : m.ops) {
    switch (op.kind) {
      case SchedulerOp::Kind::kAdd: {
        absl::Status st = scheduler_.Add(op.id, op.prompt_len, op.max_new_tokens);
        if (!st.ok()) {
          return absl::InternalError(absl::StrCat("follower diverged at step ", m.step, ": the leader added sequence ",
                                                  op.id, " but here: ", st.ToString()));
        }
        break;
      }
      case SchedulerOp::Kind::kAbort:
        scheduler_.Abort(op.id);
        break;
      case SchedulerOp::Kind::kSchedule:
        plan_ = scheduler_.Schedule();
        scheduled = true;
        break;
      case SchedulerOp::Kind::kStepDone:
        scheduler_.OnStepDone(plan_, op.finished);
        break;
    }
  }
  if (m.kind == StepMessage::Kind::kShutdown) return false;

  const StepBatch& b = m.batch;
  bool same = scheduled && plan_.seqs.size() == b.segments.size();
  for (size_t i = 0; same && i < b.segments.size(); ++i) {
    const ScheduledSeq& s = plan_.seqs[i];
    same = s.id == b.segments[i].seq && s.begin == b.segments[i].pos0 && s.num_tokens == b.segments[i].num_tokens;
  }
  if (!same) {
    return absl::InternalError(absl::StrCat("follower diverged at step ", m.step, ": its plan has ",
                                            plan_.seqs.size(), " sequences, the leader's batch ",
                                            b.segments.size(), " (or they differ)"));
  }
  absl::Status st = model_->ForwardBatch(b.tokens, b.positions, b.segments, &kv_, b.logit_rows, &logits_);
  tokens_.clear();
  if (st.ok() && model_->tp() != nullptr) st = SampleOnGroup(*model_, b, logits_, &tokens_);
  // The leader fails the same sequences and keeps serving; so does the group.
  if (!st.ok()) FACET_LOG(WARNING) << "follower step " << m.step << " failed: " << st;
  ++steps_;
  return true;
}

}  // namespace facet
