// `facet bench --serve`: the serving benchmark against a running server.
#pragma once

#include <string>
#include <vector>

namespace facet::cli {

struct ServeBenchOptions {
  std::string addr = "127.0.0.1:50051";
  std::vector<int> concurrency = {1, 4, 16};  // one run per level
  int requests = 0;                           // per level; 0 = max(2·concurrency, 4)
  int prompt_len = 128;
  int gen_len = 64;
  int seed = 1;
};

int RunServeBench(const ServeBenchOptions& opt);

}  // namespace facet::cli
