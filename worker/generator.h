// Single-sequence generation: prefill the prompt, then sample token by token
// until a stop token or the token limit. Backs `facet generate`, `facet chat`
// and `facet bench`; the batched serving engine uses the same Model and
// Sampler through its scheduler.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/model.h"
#include "worker/sampler.h"

namespace facet {

enum class FinishReason { kStop, kLength };
std::string_view FinishReasonName(FinishReason r);  // "stop" / "length"

struct GenerationResult {
  std::vector<int32_t> ids;  // generated tokens (a final stop token included)
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // all steps after the first token
  double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tok_s() const {
    return decode_seconds > 0 && ids.size() > 1 ? (ids.size() - 1) / decode_seconds : 0;
  }
};

struct GenerateOptions {
  int64_t prefill_chunk = 512;  // prompt tokens per forward call
  // Called with each new token as soon as it is sampled; return false to stop.
  std::function<bool(int32_t)> on_token;
};

// Validates the prompt (non-empty, ids in the vocabulary, prompt + max_tokens
// within the model's context) and the sampling parameters before any work.
absl::StatusOr<GenerationResult> Generate(Model& model, std::span<const int32_t> prompt,
                                          const SamplingParams& params,
                                          const GenerateOptions& options = {});

}  // namespace facet
