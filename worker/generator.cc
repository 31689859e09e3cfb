#include "worker/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet {

std::string_view FinishReasonName(FinishReason r) {
  return r == FinishReason::kStop ? "stop" : "length";
}

absl::StatusOr<GenerationResult> Generate(Model& model, std::span<const int32_t> prompt,
                                          const SamplingParams& params,
                                          const GenerateOptions& options) {
  const ModelConfig& cfg = model.config();
  RETURN_IF_ERROR(ValidateSamplingParams(params, cfg.vocab_size));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", prompt[i], " at index ", i,
                                                     " is outside the vocabulary of ",
                                                     cfg.vocab_size));
    }
  }
  const int64_t total = int64_t(prompt.size()) + params.max_tokens;
  if (int64_t(prompt.size()) >= cfg.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", prompt.size(),
                                              " tokens; the model's context is ",
                                              cfg.max_position_embeddings));
  }
  // Generation stops at the context limit rather than failing mid-way.
  const int64_t capacity = std::min<int64_t>(total, cfg.max_position_embeddings);
  KvCache cache(cfg, capacity);
  Sampler sampler(params);
  // A tensor-parallel model: every rank runs this loop in lockstep and draws
  // the same token from its own vocabulary slice (Sampler::SampleSharded), so
  // no rank gathers the [V] logits row (1 MiB a step for Gemma's 262k
  // vocabulary). The model's gather setting is restored on return.
  parallel::Communicator* tp = model.tp();
  struct GatherRestore {
    Model& m;
    bool was;
    ~GatherRestore() { m.set_gather_logits(was); }
  } restore{model, model.gather_logits()};
  if (tp != nullptr) model.set_gather_logits(false);

  using Clock = std::chrono::steady_clock;
  GenerationResult r;
  r.prompt_tokens = int64_t(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;

  auto t0 = Clock::now();
  for (size_t b = 0; b < prompt.size(); b += size_t(options.prefill_chunk)) {
    const size_t n = std::min(prompt.size() - b, size_t(options.prefill_chunk));
    RETURN_IF_ERROR(model.Forward(prompt.subspan(b, n), &cache, false, &logits));
  }
  auto t1 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  for (int64_t step = 0;; ++step) {
    int32_t next = 0;
    if (tp != nullptr) {
      ASSIGN_OR_RETURN(next, sampler.SampleSharded(*tp, logits.data(), model.vocab_shard(), cfg.vocab_size,
                                                   history, step));
    } else {
      next = sampler.Sample(logits.data(), cfg.vocab_size, history, step);
    }
    r.ids.push_back(next);
    history.push_back(next);
    if (sampler.IsStop(next)) {
      r.finish = FinishReason::kStop;
      break;
    }
    if (options.on_token && !options.on_token(next)) {
      r.finish = FinishReason::kStop;
      break;
    }
    if (int64_t(r.ids.size()) >= params.max_tokens || cache.length() >= capacity) {
      r.finish = FinishReason::kLength;
      break;
    }
    RETURN_IF_ERROR(model.Forward(std::span<const int32_t>(&next, 1), &cache, false, &logits));
  }
  r.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return r;
}

}  // namespace facet
