#include "cli/batch_runner.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet::cli {
namespace {

// What the engine thread hands to the writing thread when a request ends.
struct Finished {
  size_t index = 0;  // into `lines`
  EngineFinish finish = EngineFinish::kNone;
  absl::Status error;
  BatchCompletion completion;
};

// Shared between the sinks (engine thread) and the loop (this thread).
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Finished> finished;
};

absl::StatusOr<EngineRequest> BuildRequest(const BatchLine& line, const ServedModel& model,
                                           const RequestDefaults& defaults) {
  if (line.chat) return BuildChatRequest(line.chat_request, model, defaults);
  return BuildGenerateRequest(line.generate_request, model, defaults);
}

}  // namespace

absl::StatusOr<BatchRunResult> RunBatchLines(const ServedModel& model, const std::vector<BatchLine>& lines,
                                             const BatchRunOptions& options, BatchWriter& writer,
                                             BatchProgress& progress, const std::atomic<bool>& stop) {
  BatchRunResult result;
  BatchCounts& counts = result.counts;
  auto mailbox = std::make_shared<Mailbox>();
  int64_t in_flight = 0;

  auto write_error = [&](const BatchLine& line, const absl::Status& st) -> absl::Status {
    ++counts.done;
    ++counts.failed;
    return writer.Append(FormatBatchError(line, st));
  };
  // Writes what has finished; waits up to `wait` for the first one.
  auto collect = [&](std::chrono::milliseconds wait) -> absl::Status {
    std::deque<Finished> ready;
    {
      std::unique_lock<std::mutex> lock(mailbox->mu);
      mailbox->cv.wait_for(lock, wait, [&] { return !mailbox->finished.empty(); });
      ready.swap(mailbox->finished);
    }
    for (Finished& f : ready) {
      --in_flight;
      const BatchLine& line = lines[f.index];
      if (f.finish == EngineFinish::kCancelled) continue;  // stopping: redone on restart
      if (f.finish == EngineFinish::kError || f.finish == EngineFinish::kDeadline) {
        RETURN_IF_ERROR(write_error(line, f.error.ok() ? absl::InternalError("the engine failed the request") : f.error));
        continue;
      }
      ++counts.done;
      counts.prompt_tokens += f.completion.prompt_tokens;
      counts.completion_tokens += f.completion.completion_tokens;
      RETURN_IF_ERROR(writer.Append(FormatBatchResult(line, f.completion, model.info.name)));
    }
    progress.Update(counts);
    return absl::OkStatus();
  };

  for (size_t i = 0; i < lines.size() && !stop.load(); ++i) {
    const BatchLine& line = lines[i];
    if (!line.error.ok()) {
      RETURN_IF_ERROR(write_error(line, line.error));
      continue;
    }
    auto request = BuildRequest(line, model, options.defaults);
    if (!request.ok()) {
      RETURN_IF_ERROR(write_error(line, request.status()));
      continue;
    }
    // Engine ids must be unique among live requests and short; custom_ids
    // need be neither.
    request->request_id = absl::StrCat("batch-", line.line_no);
    while (in_flight >= options.max_in_flight && !stop.load()) {
      RETURN_IF_ERROR(collect(std::chrono::milliseconds(200)));
    }
    if (stop.load()) break;
    auto state = std::make_shared<Finished>();
    state->index = i;
    absl::Status submitted = model.engine->Submit(std::move(*request), [state, mailbox](const TokenEvent& ev) {
      state->completion.text += ev.text;
      state->completion.token_ids.insert(state->completion.token_ids.end(), ev.ids.begin(), ev.ids.end());
      if (!ev.finished) return;
      state->finish = ev.finish;
      state->error = ev.error;
      state->completion.finish_reason = EngineFinishName(ev.finish);
      state->completion.prompt_tokens = ev.prompt_tokens;
      state->completion.completion_tokens = ev.completion_tokens;
      std::lock_guard<std::mutex> lock(mailbox->mu);
      mailbox->finished.push_back(std::move(*state));
      mailbox->cv.notify_one();
    });
    if (!submitted.ok()) {
      RETURN_IF_ERROR(write_error(line, submitted));
      continue;
    }
    ++in_flight;
    RETURN_IF_ERROR(collect(std::chrono::milliseconds(0)));
  }
  while (in_flight > 0 && !stop.load()) RETURN_IF_ERROR(collect(std::chrono::milliseconds(200)));
  if (stop.load()) {
    result.stopped = true;
    model.engine->Shutdown(/*drain=*/false);  // the rest finish as cancelled
    // Whatever finished before the cancel is still written. Shutdown has
    // finished every sink; the bound only guards against a lost event.
    for (int tries = 0; in_flight > 0 && tries < 10; ++tries) {
      RETURN_IF_ERROR(collect(std::chrono::milliseconds(200)));
    }
  }
  RETURN_IF_ERROR(writer.Sync());
  return result;
}

}  // namespace facet::cli
