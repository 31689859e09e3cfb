// facet bench --serve: drives a running `facet serve` over gRPC with N
// concurrent streaming clients on random token-id prompts and reports request
// throughput, output tokens/s, time to first token (TTFT), time per output
// token (TPOT) and inter-token latency (ITL) percentiles as JSON.
#include "cli/bench_serve.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <nlohmann/json.hpp>

#include "facet/v1/facet.grpc.pb.h"

namespace facet::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

nlohmann::json Summary(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))]; };
  double sum = 0;
  for (double x : v) sum += x;
  return {{"mean", sum / double(v.size())}, {"p50", pct(50)}, {"p90", pct(90)}, {"p99", pct(99)}};
}

struct RequestResult {
  bool ok = false;
  std::string error;
  double ttft_ms = 0;
  std::vector<double> itl_ms;
  int64_t tokens = 0;
  double tpot_ms = 0;
};

RequestResult OneRequest(facet::v1::Facet::Stub& stub, const std::vector<int32_t>& prompt, int gen_len) {
  RequestResult r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  facet::v1::GenerateRequest req;
  for (int32_t id : prompt) req.add_prompt_token_ids(id);
  req.set_add_bos(false);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(gen_len);
  const auto start = Clock::now();
  auto reader = stub.Generate(&ctx, req);
  facet::v1::GenerateResponse chunk;
  auto last = start;
  Clock::time_point first{};
  while (reader->Read(&chunk)) {
    if (chunk.token_ids_size() == 0) continue;
    const auto now = Clock::now();
    if (r.tokens == 0) {
      first = now;
      r.ttft_ms = Ms(now - start);
    } else {
      // Tokens that arrive merged in one chunk share its gap evenly.
      const double gap = Ms(now - last) / chunk.token_ids_size();
      for (int i = 0; i < chunk.token_ids_size(); ++i) r.itl_ms.push_back(gap);
    }
    last = now;
    r.tokens += chunk.token_ids_size();
  }
  grpc::Status st = reader->Finish();
  r.ok = st.ok();
  if (!st.ok()) r.error = st.error_message();
  if (r.tokens > 1) r.tpot_ms = Ms(last - first) / double(r.tokens - 1);
  return r;
}

}  // namespace

int RunServeBench(const ServeBenchOptions& opt) {
  auto channel = grpc::CreateChannel(opt.addr, grpc::InsecureChannelCredentials());
  auto stub = facet::v1::Facet::NewStub(channel);
  int64_t vocab = 0;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    facet::v1::ListModelsRequest req;
    facet::v1::ListModelsResponse resp;
    grpc::Status st = stub->ListModels(&ctx, req, &resp);
    if (!st.ok() || resp.models_size() == 0) {
      std::cerr << "facet bench --serve: cannot list models at " << opt.addr << ": " << st.error_message() << "\n";
      return 1;
    }
    vocab = resp.models(0).vocab_size();
  }
  nlohmann::json out = {{"addr", opt.addr}, {"prompt_len", opt.prompt_len}, {"gen_len", opt.gen_len}};
  nlohmann::json runs = nlohmann::json::array();
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ uint64_t(opt.seed);
  auto next = [&] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  for (int c : opt.concurrency) {
    const int n = opt.requests > 0 ? opt.requests : std::max(2 * c, 4);
    std::vector<std::vector<int32_t>> prompts(n);
    for (auto& p : prompts) {
      p.resize(opt.prompt_len);
      p[0] = 2;  // <bos>
      for (int i = 1; i < opt.prompt_len; ++i) p[i] = int32_t(3 + next() % uint64_t(vocab - 3));
    }
    std::vector<RequestResult> results(n);
    std::atomic<int> next_req{0};
    const auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < c; ++w) {
      workers.emplace_back([&] {
        for (int i; (i = next_req.fetch_add(1)) < n;) results[i] = OneRequest(*stub, prompts[i], opt.gen_len);
      });
    }
    for (auto& t : workers) t.join();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> ttft, tpot, itl;
    int64_t tokens = 0, ok = 0;
    std::string first_error;
    for (const RequestResult& r : results) {
      if (!r.ok) {
        if (first_error.empty()) first_error = r.error;
        continue;
      }
      ++ok;
      tokens += r.tokens;
      ttft.push_back(r.ttft_ms);
      if (r.tokens > 1) tpot.push_back(r.tpot_ms);
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    }
    nlohmann::json run = {{"concurrency", c},
                          {"requests", n},
                          {"failed", n - ok},
                          {"duration_s", secs},
                          {"request_throughput", double(ok) / secs},
                          {"output_tok_s", double(tokens) / secs},
                          {"ttft_ms", Summary(ttft)},
                          {"tpot_ms", Summary(tpot)},
                          {"itl_ms", Summary(itl)}};
    if (!first_error.empty()) run["first_error"] = first_error;
    runs.push_back(run);
    std::cerr << "concurrency " << c << ": " << double(tokens) / secs << " output tok/s\n";
  }
  out["runs"] = runs;
  std::cout << out.dump(2) << "\n";
  for (const auto& r : runs) {
    if (r["failed"].get<int>() > 0) return 1;
  }
  return 0;
}

}  // namespace facet::cli
