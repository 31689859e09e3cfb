#include "cli/bench_http.h"

#include <chrono>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace facet::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

absl::StatusOr<std::string> HttpBase(const std::string& url) {
  std::string base = url;
  if (base.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError("--url must start with http:// (e.g. http://127.0.0.1:8080), got \"" +
                                      url + "\"");
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (base.size() > 3 && base.compare(base.size() - 3, 3, "/v1") == 0) base.resize(base.size() - 3);
  if (base.find('/', 7) != std::string::npos) {
    return absl::InvalidArgumentError("--url must be http://host:port[/v1], got \"" + url + "\"");
  }
  return base;
}

absl::StatusOr<std::string> FirstModel(const std::string& base) {
  httplib::Client client(base);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(30, 0);
  auto res = client.Get("/v1/models");
  if (!res) return absl::UnavailableError("GET " + base + "/v1/models: " + httplib::to_string(res.error()));
  if (res->status != 200) {
    return absl::UnavailableError("GET " + base + "/v1/models: HTTP " + std::to_string(res->status));
  }
  json j = json::parse(res->body, nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id")) {
    return absl::UnavailableError("GET " + base + "/v1/models: no model listed");
  }
  return j["data"][0]["id"].get<std::string>();
}

BenchResult HttpCompletion(const HttpTarget& target, const std::string& prompt, int max_tokens,
                           bool ignore_eos) {
  BenchResult r;
  json body = {{"model", target.model},
               {"prompt", prompt},
               {"max_tokens", max_tokens},
               {"temperature", 0},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (ignore_eos) body["ignore_eos"] = true;
  if (!target.extra.empty()) body.update(json::parse(target.extra));  // validated by the caller
  httplib::Client client(target.base);
  client.set_connection_timeout(30, 0);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");

  const auto start = Clock::now();
  Clock::time_point first{}, last{};
  int64_t chunks = 0, usage_tokens = -1;
  std::string buffer, error;
  // SSE: events end with a blank line; only `data:` lines matter.
  auto on_event = [&](const std::string& event) {
    for (size_t pos = 0; pos < event.size();) {
      size_t end = event.find('\n', pos);
      if (end == std::string::npos) end = event.size();
      std::string line = event.substr(pos, end - pos);
      pos = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data:", 0) != 0) continue;
      std::string data = line.substr(line.size() > 5 && line[5] == ' ' ? 6 : 5);
      if (data == "[DONE]") continue;
      json j = json::parse(data, nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("error")) {
        error = j["error"].is_object() ? j["error"].value("message", j["error"].dump()) : j["error"].dump();
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object() && j["usage"].contains("completion_tokens")) {
        usage_tokens = j["usage"]["completion_tokens"].get<int64_t>();
        if (j["usage"].contains("prompt_tokens")) r.prompt_tokens = j["usage"]["prompt_tokens"].get<int64_t>();
      }
      if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) continue;
      const json& c = j["choices"][0];
      std::string text;
      if (c.contains("text") && c["text"].is_string()) text = c["text"].get<std::string>();
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        text = c["delta"]["content"].get<std::string>();
      }
      if (text.empty()) continue;
      const auto now = Clock::now();
      if (chunks == 0) {
        first = now;
        r.ttft_ms = Ms(now - start);
      } else {
        r.itl_ms.push_back(Ms(now - last));
      }
      last = now;
      ++chunks;
    }
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      on_event(buffer.substr(0, end));
      buffer.erase(0, end + 2);
    }
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool sent = client.send(req, res, err);
  r.latency_ms = Ms(Clock::now() - start);
  if (!sent) {
    r.error = "HTTP: " + httplib::to_string(err);
    return r;
  }
  if (res.status != 200) {
    r.error = "HTTP " + std::to_string(res.status) + ": " + (buffer.empty() ? res.body : buffer);
    return r;
  }
  if (!buffer.empty()) on_event(buffer);
  if (!error.empty()) {
    r.error = error;
    return r;
  }
  r.tokens = usage_tokens >= 0 ? usage_tokens : chunks;
  if (r.tokens > 1 && chunks > 0) r.tpot_ms = Ms(last - first) / double(r.tokens - 1);
  r.ok = true;
  return r;
}

}  // namespace facet::cli
