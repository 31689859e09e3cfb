#include "coordinator/http_openai.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(field), "' ", std::string(what)));
}

// A present, non-null field; null counts as absent (OpenAI clients send nulls).
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<double> Number(const json& v, const char* name, double lo, double hi) {
  if (!v.is_number()) return Bad(name, "must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return Bad(name, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v.dump()));
  }
  return x;
}

absl::StatusOr<int64_t> Integer(const json& v, const char* name) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double x = v.get<double>();
    if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9e15) return int64_t(x);
  }
  return Bad(name, absl::StrCat("must be an integer, got ", v.dump()));
}

absl::StatusOr<bool> Bool(const json& body, const char* name) {
  const json* v = Field(body, name);
  if (!v) return false;
  if (!v->is_boolean()) return Bad(name, absl::StrCat("must be a boolean, got ", v->dump()));
  return v->get<bool>();
}

// Fields shared by both endpoints into `s` and `out`.
absl::Status ParseCommon(const json& body, const char* max_tokens_field, OpenAiRequest* out,
                         v1::SamplingParams* s) {
  const json* model = Field(body, "model");
  if (model && !model->is_string()) return Bad("model", "must be a string");
  if (model) out->model = model->get<std::string>();
  ASSIGN_OR_RETURN(out->stream, Bool(body, "stream"));
  ASSIGN_OR_RETURN(out->ignore_eos, Bool(body, "ignore_eos"));
  if (const json* so = Field(body, "stream_options")) {
    if (!so->is_object()) return Bad("stream_options", "must be an object");
    if (!out->stream) return Bad("stream_options", "is only allowed with stream: true");
    ASSIGN_OR_RETURN(out->include_usage, Bool(*so, "include_usage"));
  }
  // OpenAI's default temperature is 1; Facet's proto default (0) is greedy.
  s->set_temperature(1.0f);
  if (const json* v = Field(body, "temperature")) {
    ASSIGN_OR_RETURN(double t, Number(*v, "temperature", 0, 2));
    s->set_temperature(float(t));
  }
  if (const json* v = Field(body, "top_p")) {
    ASSIGN_OR_RETURN(double p, Number(*v, "top_p", 0, 1));
    if (p == 0) return Bad("top_p", "must be > 0");
    s->set_top_p(float(p));
  }
  if (const json* v = Field(body, "top_k")) {
    ASSIGN_OR_RETURN(int64_t k, Integer(*v, "top_k"));
    if (k < 0 || k > std::numeric_limits<int32_t>::max()) return Bad("top_k", "must be >= 0");
    s->set_top_k(int32_t(k));
  }
  if (const json* v = Field(body, "min_p")) {
    ASSIGN_OR_RETURN(double p, Number(*v, "min_p", 0, 1));
    s->set_min_p(float(p));
  }
  if (const json* v = Field(body, "repetition_penalty")) {
    ASSIGN_OR_RETURN(double p, Number(*v, "repetition_penalty", 1e-6, 1e6));
    s->set_repetition_penalty(float(p));
  }
  if (const json* v = Field(body, "seed")) {
    ASSIGN_OR_RETURN(int64_t seed, Integer(*v, "seed"));
    s->set_seed(uint64_t(seed));
  }
  for (const char* name : {max_tokens_field, "max_tokens"}) {
    const json* v = Field(body, name);
    if (!v) continue;
    ASSIGN_OR_RETURN(int64_t m, Integer(*v, name));
    if (m < 1) return Bad(name, absl::StrCat("must be >= 1, got ", m));
    if (m > std::numeric_limits<int32_t>::max()) return Bad(name, "is too large");
    s->set_max_tokens(int32_t(m));
    break;
  }
  if (const json* v = Field(body, "stop")) {
    if (v->is_string()) {
      s->add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4) return Bad("stop", "holds at most 4 strings");
      for (const json& x : *v) {
        if (!x.is_string()) return Bad("stop", "must be a string or a list of strings");
        s->add_stop(x.get<std::string>());
      }
    } else {
      return Bad("stop", "must be a string or a list of strings");
    }
  }
  if (const json* v = Field(body, "n")) {
    ASSIGN_OR_RETURN(int64_t n, Integer(*v, "n"));
    if (n < 1 || n > kMaxChoices) return Bad("n", absl::StrCat("must be in [1, ", kMaxChoices, "]"));
    out->n = int(n);
  }
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* v = Field(body, name)) {
      ASSIGN_OR_RETURN(double p, Number(*v, name, -2, 2));
      if (p != 0) return Bad(name, "is not supported (use repetition_penalty)");
    }
  }
  for (const char* name : {"logprobs", "top_logprobs", "echo", "best_of", "tools", "functions",
                           "logit_bias", "suffix"}) {
    const json* v = Field(body, name);
    if (!v) continue;
    // Off-values clients send by default are fine: false, 0, "", {}, [], best_of 1.
    const bool off = (v->is_boolean() && !v->get<bool>()) || (v->is_number() && v->get<double>() == 0) ||
                     (v->is_string() && v->get<std::string>().empty()) ||
                     ((v->is_object() || v->is_array()) && v->empty()) ||
                     (std::string_view(name) == "best_of" && v->is_number() && v->get<double>() == 1);
    if (!off) return Bad(name, "is not supported");
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseObject(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the request body is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return j;
}

// Message content: a string or a list of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> ContentText(const json& content, size_t i) {
  const std::string field = absl::StrCat("messages[", i, "].content");
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Bad(field, "must be a string or a list of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Bad(field, "parts must be {\"type\": \"text\", \"text\": string} (only text is supported)");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseChatCompletion(std::string_view body) {
  ASSIGN_OR_RETURN(json j, ParseObject(body));
  OpenAiRequest out;
  out.chat = true;
  v1::ChatRequest& r = out.chat_request;
  RETURN_IF_ERROR(ParseCommon(j, "max_completion_tokens", &out, r.mutable_sampling()));
  r.set_model(out.model);
  const json* messages = Field(j, "messages");
  if (!messages) return Bad("messages", "is required");
  if (!messages->is_array()) return Bad("messages", "must be a list");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    if (!m.is_object()) return Bad(absl::StrCat("messages[", i, "]"), "must be an object");
    const json* role = Field(m, "role");
    if (!role || !role->is_string()) return Bad(absl::StrCat("messages[", i, "].role"), "must be a string");
    const json* content = Field(m, "content");
    if (!content) return Bad(absl::StrCat("messages[", i, "].content"), "is required");
    ASSIGN_OR_RETURN(std::string text, ContentText(*content, i));
    v1::ChatMessage* msg = r.add_messages();
    msg->set_role(role->get<std::string>());
    msg->set_content(std::move(text));
  }
  return out;
}

absl::StatusOr<OpenAiRequest> ParseCompletion(std::string_view body) {
  ASSIGN_OR_RETURN(json j, ParseObject(body));
  OpenAiRequest out;
  out.chat = false;
  v1::GenerateRequest& r = out.generate_request;
  RETURN_IF_ERROR(ParseCommon(j, "max_tokens", &out, r.mutable_sampling()));
  r.set_model(out.model);
  const json* prompt = Field(j, "prompt");
  if (!prompt) return Bad("prompt", "is required");
  // A string, a list of one string, or a list of token ids (OpenAI's forms;
  // several prompts per request are not supported).
  const json* p = prompt;
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  if (p->is_string()) {
    r.set_prompt(p->get<std::string>());
    if (r.prompt().empty()) return Bad("prompt", "is empty");
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    for (const json& id : *p) {
      if (!id.is_number_integer()) return Bad("prompt", "token ids must be integers");
      const int64_t x = id.get<int64_t>();
      if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
        return Bad("prompt", absl::StrCat("token id ", x, " is out of range"));
      }
      r.add_prompt_token_ids(int32_t(x));
    }
  } else {
    return Bad("prompt", "must be a string, a list of one string, or a list of token ids");
  }
  return out;
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

nlohmann::json ErrorJson(int status, std::string_view message) {
  const char* type = status == 400 || status == 404 || status == 413 || status == 405
                         ? "invalid_request_error"
                     : status == 429 ? "rate_limit_error"
                     : status == 503 ? "service_unavailable"
                                     : "server_error";
  json code = nullptr;
  if (status == 404 && message.find("model") != std::string_view::npos) code = "model_not_found";
  return {{"error", {{"message", std::string(message)}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

const char* OpenAiFinishReason(EngineFinish finish) {
  return finish == EngineFinish::kStop ? "stop" : "length";
}

nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json StreamChunk(const OpenAiRequest& request, const std::string& id, int64_t created,
                           const std::string& model, int index, const std::string& text,
                           bool first, EngineFinish finish) {
  json choice = {{"index", index}};
  if (request.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish == EngineFinish::kNone ? json(nullptr) : json(OpenAiFinishReason(finish));
  return {{"id", id},
          {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

std::string SseEvent(const nlohmann::json& j) {
  // error_handler::replace: invalid UTF-8 from a model never throws here.
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace facet
