// One streaming request to an OpenAI-compatible server (/v1/completions with
// "stream": true), timed at the client: the piece of `facet bench --serve --url`
// that speaks HTTP. Shared result type with the gRPC driver.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace facet::cli {

struct BenchResult {
  bool ok = false;
  std::string error;
  double ttft_ms = 0;
  std::vector<double> itl_ms;  // gaps between successive token chunks
  int64_t prompt_tokens = -1;  // as the server reported it (-1: not reported)
  int64_t tokens = 0;          // output tokens (usage if reported, else chunks with text)
  double tpot_ms = 0;          // (last - first token) / (tokens - 1)
  double latency_ms = 0;
};

struct HttpTarget {
  std::string base;   // "http://host:port"
  std::string model;  // sent as "model"
  std::string extra;  // a JSON object merged into each body ("" = none)
};

// "http://host:port[/v1]" -> base; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> HttpBase(const std::string& url);
// GET /v1/models: the first model's id.
absl::StatusOr<std::string> FirstModel(const std::string& base);
BenchResult HttpCompletion(const HttpTarget& target, const std::string& prompt, int max_tokens,
                           bool ignore_eos);

}  // namespace facet::cli
