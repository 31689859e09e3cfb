// The engine loop of `facet batch`: keeps up to `max_in_flight` requests
// submitted to a continuous-batching engine (submitting many at once is what
// makes offline throughput), writes each answer as it finishes, in finishing
// order, and stops cleanly when asked.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/batch_jsonl.h"
#include "cli/batch_progress.h"
#include "cli/batch_writer.h"
#include "coordinator/model_registry.h"
#include "coordinator/request_builder.h"

namespace facet::cli {

struct BatchRunOptions {
  int64_t max_in_flight = 256;  // submitted and not finished; keep <= the engine's waiting + running room
  RequestDefaults defaults;
};

struct BatchRunResult {
  BatchCounts counts;
  bool stopped = false;  // `stop` was raised: requests in flight were cancelled, not written
};

// Answers every line of `lines` (none already done) through model.engine:
// lines at fault and requests the engine refuses or fails get an error line;
// the rest get a result line. Errors only when the output cannot be written.
// `stop` is polled a few times a second; once set, nothing new is submitted
// and the engine is shut down without draining.
absl::StatusOr<BatchRunResult> RunBatchLines(const ServedModel& model, const std::vector<BatchLine>& lines,
                                             const BatchRunOptions& options, BatchWriter& writer,
                                             BatchProgress& progress, const std::atomic<bool>& stop);

}  // namespace facet::cli
