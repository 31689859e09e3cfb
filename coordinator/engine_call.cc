#include "coordinator/engine_call.h"

#include "absl/strings/str_cat.h"
#include "core/logging.h"

namespace facet {

absl::StatusOr<std::unique_ptr<EngineCall>> EngineCall::Submit(Engine& engine,
                                                               EngineRequest request) {
  std::unique_ptr<EngineCall> call(new EngineCall(engine, request.request_id, request.sampling.seed));
  std::shared_ptr<EventQueue> queue = call->queue_;
  absl::Status submitted =
      engine.Submit(std::move(request), [queue](const TokenEvent& e) { queue->Push(e); });
  if (!submitted.ok()) {
    call->done_ = true;  // the engine never calls a rejected request's sink: nothing to await
    return submitted;
  }
  return call;
}

EngineCall::~EngineCall() {
  if (!done_) CancelAndWait();
}

std::optional<TokenEvent> EngineCall::Next(std::chrono::milliseconds timeout) {
  if (done_) return std::nullopt;
  std::optional<TokenEvent> event = queue_->PopFor(timeout);
  if (event && event->finished) done_ = true;
  return event;
}

bool EngineCall::CancelAndWait(std::chrono::milliseconds grace) {
  if (done_) return true;
  engine_.Cancel(id_);
  const auto end = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < end) {
    std::optional<TokenEvent> event = queue_->PopFor(std::chrono::milliseconds(20));
    if (event && event->finished) {
      done_ = true;
      return true;
    }
  }
  FACET_LOG(WARNING) << "request " << id_ << ": the engine did not confirm the cancellation within "
                     << grace.count() << " ms";
  done_ = true;  // nothing more to wait for; a late event lands in the shared queue
  return false;
}

absl::Status FinishStatus(const TokenEvent& e, const std::string& id) {
  switch (e.finish) {
    case EngineFinish::kStop:
    case EngineFinish::kLength:
      return absl::OkStatus();
    case EngineFinish::kDeadline:
      return absl::DeadlineExceededError(
          absl::StrCat("the deadline passed after ", e.completion_tokens, " generated tokens"));
    case EngineFinish::kCancelled:
      return absl::UnavailableError(
          absl::StrCat("the engine cancelled request ", id, " (shutting down); retry"));
    case EngineFinish::kError:
      if (!e.error.ok()) return e.error;
      [[fallthrough]];
    case EngineFinish::kNone:
      break;
  }
  return absl::InternalError(absl::StrCat("the engine failed request ", id, " without a reason"));
}

}  // namespace facet
