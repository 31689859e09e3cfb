// The OpenAI HTTP API's JSON <-> Facet's requests and events, free of any
// HTTP server so it is unit-tested on strings. Requests become the same
// v1::ChatRequest / v1::GenerateRequest the gRPC front takes, so both fronts
// share request_builder's validation and defaults.
//
// Accepted (chat and completions): model, stream, stream_options.include_usage,
// max_tokens (chat: or max_completion_tokens), temperature (default 1, as
// OpenAI's), top_p, seed, stop (string or list), n (1..kMaxChoices), and the
// common extensions top_k, min_p, repetition_penalty, ignore_eos. Other fields are
// ignored, except the ones whose meaning we cannot honour (logprobs, echo,
// best_of, non-zero presence/frequency penalties, tools): INVALID_ARGUMENT.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "facet/v1/facet.pb.h"
#include "worker/engine.h"

namespace facet {

inline constexpr int kMaxChoices = 16;

struct OpenAiRequest {
  bool chat = true;               // /v1/chat/completions, else /v1/completions
  std::string model;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  int n = 1;                      // choices; each is its own engine request
  bool ignore_eos = false;        // extension (vLLM's): only max_tokens and stop strings end it
  v1::ChatRequest chat_request;           // chat
  v1::GenerateRequest generate_request;   // completions
};

// INVALID_ARGUMENT naming the field: malformed JSON, wrong types, values
// outside their range, unsupported features.
absl::StatusOr<OpenAiRequest> ParseChatCompletion(std::string_view body);
absl::StatusOr<OpenAiRequest> ParseCompletion(std::string_view body);

// The HTTP status for a Status code, as OpenAI's API uses them: 400 bad input,
// 404 unknown model, 429 queue full, 503 shutting down, 500 otherwise.
int HttpStatusOf(absl::StatusCode code);
// {"error": {"message", "type", "param", "code"}} as OpenAI sends it.
nlohmann::json ErrorJson(int http_status, std::string_view message);

// "stop" / "length" (the OpenAI names; a cancelled or failed request is an error instead).
const char* OpenAiFinishReason(EngineFinish finish);

// One choice's "delta" chunk of a stream; `finish` kNone for a middle chunk.
nlohmann::json StreamChunk(const OpenAiRequest& request, const std::string& id, int64_t created,
                           const std::string& model, int index, const std::string& text,
                           bool first, EngineFinish finish);
nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens);

// "data: <json>\n\n"
std::string SseEvent(const nlohmann::json& j);

}  // namespace facet
