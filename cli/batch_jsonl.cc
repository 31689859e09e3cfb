#include "cli/batch_jsonl.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace facet::cli {
namespace {

using nlohmann::json;

constexpr const char* kChatUrl = "/v1/chat/completions";
constexpr const char* kCompletionsUrl = "/v1/completions";

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// FNV-1a: a stable seed per key, the same on every machine and run.
uint64_t StableHash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string TypeName(const json& v) { return v.type_name(); }

absl::Status ReadNumber(const json& body, const char* field, double* out) {
  const json& v = body[field];
  if (!v.is_number()) return Bad(absl::StrCat("body.", field, " must be a number, not ", TypeName(v)));
  *out = v.get<double>();
  return absl::OkStatus();
}

absl::Status ReadInt(const json& body, const char* field, int64_t* out) {
  const json& v = body[field];
  if (!v.is_number_integer()) {
    return Bad(absl::StrCat("body.", field, " must be an integer, not ", TypeName(v)));
  }
  *out = v.get<int64_t>();
  return absl::OkStatus();
}

// body sampling fields -> v1::SamplingParams. Range checks are the
// request builder's (the same ones the server applies).
absl::Status ReadSampling(const json& body, v1::SamplingParams* s) {
  double d;
  int64_t i;
  if (body.contains("max_tokens") && body.contains("max_completion_tokens")) {
    return Bad("set body.max_tokens or body.max_completion_tokens, not both");
  }
  for (const char* f : {"max_tokens", "max_completion_tokens"}) {
    if (body.contains(f) && !body[f].is_null()) {
      if (auto st = ReadInt(body, f, &i); !st.ok()) return st;
      if (i < 1 || i > INT32_MAX) return Bad(absl::StrCat("body.", f, " must be >= 1, got ", i));
      s->set_max_tokens(static_cast<int32_t>(i));
    }
  }
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    if (auto st = ReadNumber(body, "temperature", &d); !st.ok()) return st;
    s->set_temperature(static_cast<float>(d));
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    if (auto st = ReadNumber(body, "top_p", &d); !st.ok()) return st;
    s->set_top_p(static_cast<float>(d));
  }
  if (body.contains("min_p") && !body["min_p"].is_null()) {
    if (auto st = ReadNumber(body, "min_p", &d); !st.ok()) return st;
    s->set_min_p(static_cast<float>(d));
  }
  if (body.contains("repetition_penalty") && !body["repetition_penalty"].is_null()) {
    if (auto st = ReadNumber(body, "repetition_penalty", &d); !st.ok()) return st;
    s->set_repetition_penalty(static_cast<float>(d));
  }
  if (body.contains("top_k") && !body["top_k"].is_null()) {
    if (auto st = ReadInt(body, "top_k", &i); !st.ok()) return st;
    if (i < 0 || i > INT32_MAX) return Bad(absl::StrCat("body.top_k must be >= 0, got ", i));
    s->set_top_k(static_cast<int32_t>(i));
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    const json& v = body["seed"];
    if (!v.is_number_integer()) return Bad("body.seed must be an integer, not " + TypeName(v));
    s->set_seed(v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>()));
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& v = body["stop"];
    if (v.is_string()) {
      s->add_stop(v.get<std::string>());
    } else if (v.is_array()) {
      for (size_t k = 0; k < v.size(); ++k) {
        if (!v[k].is_string()) return Bad(absl::StrCat("body.stop[", k, "] must be a string"));
        s->add_stop(v[k].get<std::string>());
      }
    } else {
      return Bad("body.stop must be a string or a list of strings, not " + TypeName(v));
    }
  }
  if (body.contains("stop_token_ids") && !body["stop_token_ids"].is_null()) {
    const json& v = body["stop_token_ids"];
    if (!v.is_array()) return Bad("body.stop_token_ids must be a list of integers");
    for (size_t k = 0; k < v.size(); ++k) {
      if (!v[k].is_number_integer()) {
        return Bad(absl::StrCat("body.stop_token_ids[", k, "] must be an integer"));
      }
      s->add_stop_token_ids(v[k].get<int32_t>());
    }
  }
  return absl::OkStatus();
}

// Fields accepted as long as they ask for nothing Facet does differently.
absl::Status CheckNeutralFields(const json& body) {
  if (body.contains("n") && !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1)) {
    return Bad("body.n: only one choice per line is supported (n = 1)");
  }
  for (const char* f : {"stream", "logprobs", "echo"}) {
    if (body.contains(f) && !(body[f].is_null() || (body[f].is_boolean() && !body[f].get<bool>()))) {
      return Bad(absl::StrCat("body.", f, " is not supported by facet batch (leave it false)"));
    }
  }
  for (const char* f : {"presence_penalty", "frequency_penalty"}) {
    if (body.contains(f) && !(body[f].is_null() || (body[f].is_number() && body[f].get<double>() == 0))) {
      return Bad(absl::StrCat("body.", f, " is not supported (use repetition_penalty)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadMessages(const json& messages, v1::ChatRequest* req) {
  if (!messages.is_array()) return Bad("body.messages must be a list");
  for (size_t k = 0; k < messages.size(); ++k) {
    const json& m = messages[k];
    const std::string at = absl::StrCat("body.messages[", k, "]");
    if (!m.is_object()) return Bad(at + " must be an object");
    for (const auto& [key, v] : m.items()) {
      if (key != "role" && key != "content" && key != "name") {
        return Bad(absl::StrCat(at, ".", key, " is not a supported field"));
      }
    }
    if (!m.contains("role") || !m["role"].is_string()) return Bad(at + ".role must be a string");
    v1::ChatMessage* out = req->add_messages();
    out->set_role(m["role"].get<std::string>());
    if (!m.contains("content")) return Bad(at + ".content is missing");
    const json& c = m["content"];
    if (c.is_string()) {
      out->set_content(c.get<std::string>());
    } else if (c.is_array()) {  // [{"type": "text", "text": ...}, ...]
      std::string text;
      for (size_t p = 0; p < c.size(); ++p) {
        const json& part = c[p];
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Bad(absl::StrCat(at, ".content[", p, "]: only {\"type\": \"text\", \"text\": ...} parts are supported"));
        }
        text += part["text"].get<std::string>();
      }
      out->set_content(text);
    } else {
      return Bad(at + ".content must be a string or a list of text parts, not " + TypeName(c));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadPrompt(const json& prompt, v1::GenerateRequest* req) {
  if (prompt.is_string()) {
    req->set_prompt(prompt.get<std::string>());
    return absl::OkStatus();
  }
  if (prompt.is_array()) {
    for (size_t k = 0; k < prompt.size(); ++k) {
      if (!prompt[k].is_number_integer()) {
        return Bad("body.prompt must be a string or one list of token ids (one prompt per line)");
      }
      const int64_t id = prompt[k].get<int64_t>();
      if (id < INT32_MIN || id > INT32_MAX) {
        return Bad(absl::StrCat("body.prompt[", k, "] = ", id, " is not a token id"));
      }
      req->add_prompt_token_ids(static_cast<int32_t>(id));
    }
    return absl::OkStatus();
  }
  return Bad("body.prompt must be a string or a list of token ids, not " + TypeName(prompt));
}

absl::Status ParseInto(const json& j, BatchLine* line) {
  if (!j.is_object()) return Bad("the line is not a JSON object");
  if (!j.contains("custom_id")) return Bad("custom_id is missing");
  if (!j["custom_id"].is_string() || j["custom_id"].get<std::string>().empty()) {
    return Bad("custom_id must be a non-empty string");
  }
  line->custom_id = j["custom_id"].get<std::string>();
  if (line->custom_id.rfind("line:", 0) == 0) {
    const std::string id = line->custom_id;
    line->custom_id.clear();  // would collide with the key of an id-less line
    return Bad("custom_id \"" + id + "\" is reserved (ids starting with \"line:\" name lines without one)");
  }
  for (const auto& [key, v] : j.items()) {
    if (key != "custom_id" && key != "method" && key != "url" && key != "body") {
      return Bad("\"" + key + "\" is not a supported field (expected custom_id, method, url, body)");
    }
  }
  if (j.contains("method") && j["method"] != "POST") return Bad("method must be \"POST\"");
  if (!j.contains("body") || !j["body"].is_object()) return Bad("body must be an object");
  const json& body = j["body"];
  const bool has_messages = body.contains("messages");
  const bool has_prompt = body.contains("prompt");
  if (has_messages == has_prompt) return Bad("body must have exactly one of messages and prompt");
  line->chat = has_messages;
  if (j.contains("url")) {
    if (!j["url"].is_string()) return Bad("url must be a string");
    const std::string url = j["url"].get<std::string>();
    if (url != kChatUrl && url != kCompletionsUrl) {
      return Bad("url \"" + url + "\" is not supported (" + kChatUrl + " or " + kCompletionsUrl + ")");
    }
    if ((url == kChatUrl) != has_messages) {
      return Bad("url \"" + url + "\" expects body." + (url == kChatUrl ? "messages" : "prompt"));
    }
  }
  static const char* const kKnown[] = {
      "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p",
      "top_k", "min_p", "repetition_penalty", "seed", "stop", "stop_token_ids", "n", "stream",
      "logprobs", "echo", "presence_penalty", "frequency_penalty", "user"};
  for (const auto& [key, v] : body.items()) {
    bool known = false;
    for (const char* k : kKnown) known = known || key == k;
    if (!known) return Bad("body." + key + " is not a supported field");
  }
  if (auto st = CheckNeutralFields(body); !st.ok()) return st;
  v1::SamplingParams* sampling =
      line->chat ? line->chat_request.mutable_sampling() : line->generate_request.mutable_sampling();
  if (auto st = ReadSampling(body, sampling); !st.ok()) return st;
  if (!sampling->has_seed()) sampling->set_seed(StableHash(line->Key()));
  return line->chat ? ReadMessages(body["messages"], &line->chat_request)
                    : ReadPrompt(body["prompt"], &line->generate_request);
}

json Usage(const BatchCompletion& c) {
  return {{"prompt_tokens", c.prompt_tokens},
          {"completion_tokens", c.completion_tokens},
          {"total_tokens", c.prompt_tokens + c.completion_tokens}};
}

json Envelope(const BatchLine& line) {
  json out;
  out["id"] = "batch_req_" + line.Key();
  if (line.custom_id.empty()) {
    out["custom_id"] = nullptr;
    out["line"] = line.line_no;
  } else {
    out["custom_id"] = line.custom_id;
  }
  return out;
}

std::string ErrorCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return "invalid_request";
    case absl::StatusCode::kOutOfRange: return "context_length_exceeded";
    case absl::StatusCode::kFailedPrecondition: return "failed_precondition";
    case absl::StatusCode::kResourceExhausted: return "resource_exhausted";
    default: return "server_error";
  }
}

}  // namespace

std::string BatchLine::Key() const {
  return custom_id.empty() ? absl::StrCat("line:", line_no) : custom_id;
}

BatchLine ParseBatchLine(std::string_view text, int64_t line_no) {
  BatchLine line;
  line.line_no = line_no;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    line.error = Bad(std::string("malformed JSON: ") + e.what());
    return line;
  }
  line.error = ParseInto(j, &line);
  return line;
}

std::string FormatBatchResult(const BatchLine& line, const BatchCompletion& c,
                              const std::string& model_name) {
  json choice = {{"index", 0}, {"finish_reason", c.finish_reason}, {"logprobs", nullptr},
                 {"token_ids", c.token_ids}};
  json body = {{"id", "cmpl-" + line.Key()}, {"model", model_name}, {"usage", Usage(c)}};
  if (line.chat) {
    body["object"] = "chat.completion";
    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
  } else {
    body["object"] = "text_completion";
    choice["text"] = c.text;
  }
  body["choices"] = json::array({choice});
  json out = Envelope(line);
  out["response"] = {{"status_code", 200}, {"body", body}};
  out["error"] = nullptr;
  // Replacement characters instead of an exception if a model emits invalid UTF-8.
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string FormatBatchError(const BatchLine& line, const absl::Status& error) {
  json out = Envelope(line);
  out["response"] = nullptr;
  out["error"] = {{"code", ErrorCode(error.code())}, {"message", std::string(error.message())}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string BatchOutputKey(std::string_view line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("custom_id")) return "";
  if (j["custom_id"].is_string()) return j["custom_id"].get<std::string>();
  if (j["custom_id"].is_null() && j.contains("line") && j["line"].is_number_integer()) {
    return absl::StrCat("line:", j["line"].get<int64_t>());
  }
  return "";
}

absl::StatusOr<BatchDone> ReadBatchDone(const std::string& path) {
  BatchDone done;
  std::ifstream in(path, std::ios::binary);
  if (!in) return done;  // nothing written yet
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < data.size()) {
    const size_t nl = data.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) {  // a write cut short: redone on this run
      done.torn_tail = true;
      break;
    }
    std::string_view text(data.data() + pos, nl - pos);
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    const std::string key = BatchOutputKey(text);
    if (key.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " line ", line_no, " is not a facet batch result; refusing to append to it"));
    }
    done.keys.insert(key);
    ++done.lines;
    if (!j["error"].is_null()) ++done.errors;
    if (j["response"].is_object()) {
      done.completion_tokens +=
          j["response"]["body"]["usage"].value("completion_tokens", int64_t{0});
    }
    pos = nl + 1;
    done.good_bytes = static_cast<int64_t>(pos);
  }
  return done;
}

}  // namespace facet::cli
