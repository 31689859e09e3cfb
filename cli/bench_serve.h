// `facet bench --serve`: the serving benchmark against a running server —
// `facet serve` over gRPC (--addr) or any OpenAI-compatible HTTP server
// (--url: Facet's HTTP front, llama.cpp, vLLM, ...) with the same workload.
#pragma once

#include <string>
#include <vector>

namespace facet::cli {

struct ServeBenchOptions {
  std::string addr = "127.0.0.1:50051";       // gRPC, unless url is set
  std::string url;                            // http://host:port (OpenAI API)
  std::string model;                          // --url: empty = the server's first model
  std::vector<int> concurrency = {1, 4, 16};  // one run per level (the sweep)
  int requests = 0;                           // per level; 0 = max(2·concurrency, 4)
  int prompt_len = 128;                       // tokens (--url: words, ~1 token each)
  int gen_len = 64;
  double range_ratio = 0;   // > 0: lengths uniform in [len·(1-r), len·(1+r)]
  double request_rate = 0;  // > 0: Poisson arrivals (req/s), at most `concurrency` in flight
  bool ignore_eos = false;  // --url: ask for exactly gen_len tokens ("ignore_eos": true)
  std::string extra_body;   // --url: a JSON object merged into every request body
  int seed = 1;
  std::string json_out;      // also write the JSON here
  std::string markdown_out;  // also write the markdown table here
};

int RunServeBench(const ServeBenchOptions& opt);

}  // namespace facet::cli
