#include "coordinator/request_builder.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "models/chat_template.h"
#include "worker/sampler.h"

namespace facet {
namespace {

constexpr size_t kMaxRequestIdBytes = 256;

uint64_t RandomU64() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return rng();
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id is ", id.size(),
                                                   " bytes long; at most ", kMaxRequestIdBytes));
  }
  return absl::OkStatus();
}

// Sampling, stop conditions, id and seed; `prompt` is already final.
absl::StatusOr<EngineRequest> Finish(std::vector<int32_t> prompt, const v1::SamplingParams& s,
                                     const std::string& request_id, const ServedModel& model,
                                     const RequestDefaults& defaults) {
  const ModelInfo& info = model.info;
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (n >= info.context_length) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", n, " tokens; model \"", info.name,
                                              "\" holds at most ", info.context_length,
                                              " tokens (prompt + output) per sequence"));
  }
  RETURN_IF_ERROR(CheckRequestId(request_id));

  EngineRequest out;
  out.request_id = request_id.empty() ? NewRequestId() : request_id;
  SamplingParams& p = out.sampling;
  p.temperature = s.temperature();
  p.top_k = s.top_k();
  p.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  p.min_p = s.min_p();
  p.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  p.seed = s.has_seed() ? s.seed() : RandomU64();
  if (s.has_max_tokens()) {
    if (s.max_tokens() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling: max_tokens must be >= 1, got ", s.max_tokens()));
    }
    if (n + s.max_tokens() > info.context_length) {
      return absl::OutOfRangeError(absl::StrCat(
          "the prompt (", n, " tokens) + max_tokens (", s.max_tokens(),
          ") exceeds the context of model \"", info.name, "\" (", info.context_length,
          " tokens)"));
    }
    p.max_tokens = s.max_tokens();
  } else {
    p.max_tokens = static_cast<int32_t>(std::min<int64_t>(defaults.max_tokens, info.context_length - n));
  }
  p.stop_token_ids = info.stop_token_ids;
  p.stop_token_ids.insert(p.stop_token_ids.end(), s.stop_token_ids().begin(),
                          s.stop_token_ids().end());
  RETURN_IF_ERROR(ValidateSamplingParams(p, info.vocab_size));

  for (int i = 0; i < s.stop_size(); ++i) {
    if (s.stop(i).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sampling: stop[", i, "] is empty"));
    }
    out.stop_strings.push_back(s.stop(i));
  }
  if (!out.stop_strings.empty() && !model.tokenizer) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sampling: stop strings need a tokenizer and model \"", info.name,
        "\" is served without one; use stop_token_ids"));
  }
  out.prompt = std::move(prompt);
  return out;
}

absl::StatusOr<ChatFormat> ChatFormatOf(ModelFamily family) {
  return ChatFormatFromName(ModelFamilyName(family));
}

}  // namespace

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  char hex[9];
  snprintf(hex, sizeof(hex), "%08x", static_cast<uint32_t>(RandomU64()));
  return absl::StrCat("facet-", counter.fetch_add(1) + 1, "-", hex);
}

absl::StatusOr<EngineRequest> BuildGenerateRequest(const v1::GenerateRequest& request,
                                                   const ServedModel& model,
                                                   const RequestDefaults& defaults) {
  const ModelInfo& info = model.info;
  const bool has_text = !request.prompt().empty();
  const bool has_ids = request.prompt_token_ids_size() > 0;
  if (has_text && has_ids) {
    return absl::InvalidArgumentError("set prompt or prompt_token_ids, not both");
  }
  if (!has_text && !has_ids) {
    return absl::InvalidArgumentError("the prompt is empty: set prompt or prompt_token_ids");
  }
  std::vector<int32_t> prompt;
  if (has_text) {
    if (!model.tokenizer) {
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", info.name,
                       "\" is served without a tokenizer: send prompt_token_ids instead of text"));
    }
    const bool add_bos = request.has_add_bos() ? request.add_bos() : model.tokenizer->adds_bos();
    prompt = model.tokenizer->Encode(request.prompt(), add_bos);
    if (request.has_add_bos() && add_bos && !model.tokenizer->adds_bos()) {
      prompt.insert(prompt.begin(), info.bos_id);
    }
  } else {
    prompt.reserve(request.prompt_token_ids_size() + 1);
    if (request.add_bos() && request.prompt_token_ids(0) != info.bos_id) {
      prompt.push_back(info.bos_id);
    }
    for (int i = 0; i < request.prompt_token_ids_size(); ++i) {
      const int32_t id = request.prompt_token_ids(i);
      if (id < 0 || id >= info.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompt_token_ids[", i, "] = ", id,
                                                       " is outside the vocabulary [0, ",
                                                       info.vocab_size, ")"));
      }
      prompt.push_back(id);
    }
  }
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  return Finish(std::move(prompt), request.sampling(), request.request_id(), model, defaults);
}

absl::StatusOr<EngineRequest> BuildChatRequest(const v1::ChatRequest& request,
                                               const ServedModel& model,
                                               const RequestDefaults& defaults) {
  const ModelInfo& info = model.info;
  if (request.messages_size() == 0) return absl::InvalidArgumentError("messages is empty");
  if (!model.tokenizer) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model \"", info.name, "\" is served without a tokenizer: Chat needs one; use Generate "
        "with prompt_token_ids"));
  }
  std::vector<ChatMessage> messages;
  for (int i = 0; i < request.messages_size(); ++i) {
    std::string role = request.messages(i).role();
    if (role == "model") role = "assistant";
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role is \"", request.messages(i).role(),
          "\"; expected system, user or assistant"));
    }
    messages.push_back(ChatMessage::Text(std::move(role), request.messages(i).content()));
  }
  ASSIGN_OR_RETURN(ChatFormat format, ChatFormatOf(info.family));
  ChatOptions options;
  options.enable_thinking = request.enable_thinking();
  auto rendered = RenderChat(format, messages, /*add_generation_prompt=*/true, options);
  if (!rendered.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages: ", std::string(rendered.status().message())));
  }
  // The template starts with the literal <bos>: no second one.
  std::vector<int32_t> prompt = model.tokenizer->Encode(*rendered, /*add_bos=*/false);
  return Finish(std::move(prompt), request.sampling(), request.request_id(), model, defaults);
}

}  // namespace facet
