#include "worker/leader.h"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

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

namespace {

using Clock = std::chrono::steady_clock;

class LeaderExecutor : public StepExecutor {
 public:
  LeaderExecutor(std::shared_ptr<Model> model, parallel::Communicator* group, LeaderOptions opt)
      : model_(std::move(model)), group_(group), opt_(std::move(opt)) {
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

  absl::Status Forward(const StepBatch& batch, KvStore* kv, std::vector<float>* logits) override {
    StepMessage m;
    m.kind = StepMessage::Kind::kStep;
    m.batch = batch;
    TakeOps(&m);
    std::string bytes = EncodeStepMessage(m);
    Begin();
    absl::Status st = BroadcastBytes(*group_, &bytes);
    if (st.ok()) st = model_->ForwardBatch(batch.tokens, batch.positions, batch.segments, kv, batch.logit_rows, logits);
    End();
    // A failed broadcast or collective leaves the followers out of step; the
    // watchdog or MPI's fail-fast takes the group down.
    if (!st.ok() && group_->size() > 1) FACET_LOG(ERROR) << "leader step " << m.step << " failed: " << st;
    return st;
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
