#include "worker/leader.h"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "models/model.h"
#include "worker/step_message.h"

namespace facet {

absl::Status BroadcastBytes(parallel::Communicator& comm, std::string* bytes) {
  int64_t n = comm.rank() == 0 ? int64_t(bytes->size()) : 0;
  RETURN_IF_ERROR(comm.Broadcast(std::span<int64_t>(&n, 1), 0));
  if (n < 0) return absl::InternalError("broadcast: negative message size");
  if (comm.rank() != 0) bytes->resize(size_t(n));
  if (n == 0) return absl::OkStatus();
  return comm.Broadcast(bytes->data(), size_t(n), parallel::DType::kBytes, 0);
}

absl::Status SampleOnGroup(const Model& model, const StepBatch& batch, const std::vector<float>& logits,
                           std::vector<int32_t>* tokens) {
  parallel::Communicator* tp = model.tp();
  if (tp == nullptr) return absl::FailedPreconditionError("group sampling needs a tensor-parallel model");
  const size_t rows = batch.logit_rows.size();
  const parallel::Range vocab = model.vocab_shard();
  const int64_t V = model.config().vocab_size;
  if (batch.sampling.size() != rows) {
    return absl::InvalidArgumentError(absl::StrCat("group sampling: ", rows, " sampled rows but ",
                                                   batch.sampling.size(), " sampling rows"));
  }
  if (logits.size() != rows * size_t(vocab.size)) {
    return absl::InvalidArgumentError(absl::StrCat("group sampling: ", logits.size(), " logits for ", rows,
                                                   " rows of a ", vocab.size, "-token vocabulary slice"));
  }
  tokens->resize(rows);
  for (size_t r = 0; r < rows; ++r) {
    const RowSampling& rs = batch.sampling[r];
    // A Sampler per row and step: it holds only scratch space, and every
    // input of the draw is in `rs`, so followers need no per-request state.
    Sampler sampler(rs.params);
    ASSIGN_OR_RETURN((*tokens)[r], sampler.SampleSharded(*tp, logits.data() + r * vocab.size, vocab, V,
                                                         rs.history, rs.step));
  }
  return absl::OkStatus();
}

namespace {

using Clock = std::chrono::steady_clock;

class LeaderExecutor : public StepExecutor {
 public:
  LeaderExecutor(std::shared_ptr<Model> model, parallel::Communicator* group, LeaderOptions opt)
      : model_(std::move(model)), group_(group), opt_(std::move(opt)), samples_(model_->tp() != nullptr) {
    // A vocabulary-parallel LM head: sample on the group rather than
    // all-gather [rows, V] logits to every rank (for Gemma's 262k vocabulary,
    // 1 MiB per sampled row per rank per step).
    if (samples_) model_->set_gather_logits(false);
    if (!opt_.on_hang) {
      parallel::Communicator* g = group_;
      const auto limit = opt_.step_timeout;
      opt_.on_hang = [g, limit] {
        FACET_LOG(ERROR) << "step watchdog: a step has run for more than " << limit.count()
                         << " ms (a peer died or a collective hangs); aborting the group";
        g->Abort(3);
        _exit(3);
      };
    }
    if (opt_.step_timeout.count() > 0) watchdog_ = std::thread([this] { Watch(); });
  }

  ~LeaderExecutor() override { StopWatchdog(); }

  void OnAdd(SeqId id, int64_t prompt_len, int64_t max_new) override {
    SchedulerOp op;
    op.kind = SchedulerOp::Kind::kAdd;
    op.id = id;
    op.prompt_len = prompt_len;
    op.max_new_tokens = max_new;
    Record(std::move(op));
  }
  void OnAbort(SeqId id) override {
    SchedulerOp op;
    op.kind = SchedulerOp::Kind::kAbort;
    op.id = id;
    Record(std::move(op));
  }
  void OnSchedule() override { Record(SchedulerOp{}); }
  void OnStepDone(const std::vector<SeqId>& finished) override {
    SchedulerOp op;
    op.kind = SchedulerOp::Kind::kStepDone;
    op.finished = finished;
    Record(std::move(op));
  }

  bool samples() const override { return samples_; }

  absl::Status Forward(const StepBatch& batch, KvStore* kv, std::vector<float>* logits) override {
    if (samples_) {
      // Followers would wait in the sampling collectives for ever.
      return absl::FailedPreconditionError("a tensor-parallel leader samples on its group: call ForwardAndSample");
    }
    return Step(batch, kv, logits, nullptr);
  }

  absl::Status ForwardAndSample(const StepBatch& batch, KvStore* kv, std::vector<int32_t>* tokens) override {
    if (!samples_) return StepExecutor::ForwardAndSample(batch, kv, tokens);
    if (batch.sampling.size() != batch.logit_rows.size()) {
      return absl::InvalidArgumentError(absl::StrCat("leader: ", batch.logit_rows.size(), " sampled rows but ",
                                                     batch.sampling.size(), " sampling rows"));
    }
    return Step(batch, kv, &logits_, tokens);
  }

  void Close() override {
    StepMessage m;
    m.kind = StepMessage::Kind::kShutdown;
    TakeOps(&m);
    std::string bytes = EncodeStepMessage(m);
    Begin();
    absl::Status st = BroadcastBytes(*group_, &bytes);
    End();
    if (!st.ok()) FACET_LOG(WARNING) << "leader: shutdown broadcast failed: " << st;
    StopWatchdog();
  }

 private:
  // Broadcast, forward and, when `tokens` is set, the group's sampling: all
  // collectives, so all under the watchdog.
  absl::Status Step(const StepBatch& batch, KvStore* kv, std::vector<float>* logits, std::vector<int32_t>* tokens) {
    StepMessage m;
    m.kind = StepMessage::Kind::kStep;
    m.batch = batch;
    TakeOps(&m);
    std::string bytes = EncodeStepMessage(m);
    Begin();
    absl::Status st = BroadcastBytes(*group_, &bytes);
    if (st.ok()) st = model_->ForwardBatch(batch.tokens, batch.positions, batch.segments, kv, batch.logit_rows, logits);
    if (st.ok() && tokens != nullptr) st = SampleOnGroup(*model_, batch, *logits, tokens);
    End();
    // A failed broadcast or collective leaves the followers out of step; the
    // watchdog or MPI's fail-fast takes the group down.
    if (!st.ok() && group_->size() > 1) FACET_LOG(ERROR) << "leader step " << m.step << " failed: " << st;
    return st;
  }

  void Record(SchedulerOp op) {
    std::lock_guard<std::mutex> l(ops_mu_);
    ops_.push_back(std::move(op));
  }
  void TakeOps(StepMessage* m) {
    std::lock_guard<std::mutex> l(ops_mu_);
    m->ops.swap(ops_);
    ops_.clear();
    m->step = next_step_++;
  }
  void Begin() {
    std::lock_guard<std::mutex> l(mu_);
    in_step_ = true;
    started_ = Clock::now();
  }
  void End() {
    std::lock_guard<std::mutex> l(mu_);
    in_step_ = false;
  }
  void Watch() {
    std::unique_lock<std::mutex> l(mu_);
    const auto tick = std::max(std::chrono::milliseconds(10), opt_.step_timeout / 10);
    while (!stop_) {
      if (in_step_ && Clock::now() - started_ > opt_.step_timeout) {
        l.unlock();
        opt_.on_hang();
        return;
      }
      cv_.wait_for(l, tick);
    }
  }
  void StopWatchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable() && watchdog_.get_id() != std::this_thread::get_id()) watchdog_.join();
  }

  std::shared_ptr<Model> model_;
  parallel::Communicator* group_;
  LeaderOptions opt_;
  const bool samples_;            // TP > 1: ForwardAndSample on the group
  std::vector<float> logits_;     // [rows, V/tp] this rank's slice, when samples_

  std::mutex ops_mu_;  // the engine records ops under its own lock; Forward runs without it
  std::vector<SchedulerOp> ops_;
  int64_t next_step_ = 1;

  std::mutex mu_;
  std::condition_variable cv_;
  bool in_step_ = false;
  bool stop_ = false;
  Clock::time_point started_{};
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<StepExecutor> MakeLeaderExecutor(std::shared_ptr<Model> model, parallel::Communicator* group,
                                                 LeaderOptions options) {
  return std::make_unique<LeaderExecutor>(std::move(model), group, std::move(options));
}

}  // namespace facet
