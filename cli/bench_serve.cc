// facet bench --serve: drives a running server with N concurrent streaming
// clients (or Poisson arrivals at --request-rate, at most N in flight) and
// reports request throughput, output tokens/s, time to first token (TTFT),
// time per output token (TPOT) and inter-token latency (ITL): mean, p50, p90,
// p99 per concurrency level, as JSON (stdout) and a markdown table (stderr).
//
// --addr: `facet serve` over gRPC with random token-id prompts.
// --url: any OpenAI-compatible server (/v1/completions, streamed) with random
// prompts of common English words (~1 token each for Gemma's tokenizer), so
// Facet and a peer get byte-identical requests.
#include "cli/bench_serve.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <nlohmann/json.hpp>

#include "cli/bench_http.h"
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

// One request of the workload: a prompt (ids for gRPC, text for HTTP) and its output length.
struct WorkItem {
  std::vector<int32_t> ids;
  std::string text;
  int gen_len = 0;
};

BenchResult GrpcRequest(facet::v1::Facet::Stub& stub, const WorkItem& item) {
  BenchResult r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  facet::v1::GenerateRequest req;
  for (int32_t id : item.ids) req.add_prompt_token_ids(id);
  req.set_add_bos(false);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(item.gen_len);
  const auto start = Clock::now();
  auto reader = stub.Generate(&ctx, req);
  facet::v1::GenerateResponse chunk;
  auto last = start;
  Clock::time_point first{};
  while (reader->Read(&chunk)) {
    if (chunk.has_usage()) r.prompt_tokens = chunk.usage().prompt_tokens();
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
  r.latency_ms = Ms(Clock::now() - start);
  r.ok = st.ok();
  if (!st.ok()) r.error = st.error_message();
  if (r.tokens > 1) r.tpot_ms = Ms(last - first) / double(r.tokens - 1);
  return r;
}

// Common words that Gemma's tokenizer keeps whole (" word" = one token).
constexpr const char* kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "year",
    "water", "house", "river", "city", "music", "light", "story", "world", "small", "great"};

class Workload {
 public:
  Workload(const ServeBenchOptions& opt, int32_t vocab) : opt_(opt), vocab_(vocab), rng_(uint64_t(opt.seed)) {}

  int Length(int base) {
    if (opt_.range_ratio <= 0) return base;
    const int lo = std::max(1, int(std::lround(base * (1 - opt_.range_ratio))));
    const int hi = std::max(lo, int(std::lround(base * (1 + opt_.range_ratio))));
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }

  WorkItem Next() {
    WorkItem w;
    const int n = Length(opt_.prompt_len);
    w.gen_len = std::max(1, Length(opt_.gen_len));
    if (vocab_ > 0) {
      w.ids.resize(n);
      w.ids[0] = 2;  // <bos>
      for (int i = 1; i < n; ++i) w.ids[i] = int32_t(3 + rng_() % uint64_t(vocab_ - 3));
    } else {
      constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
      for (int i = 0; i < n; ++i) {
        if (i) w.text += ' ';
        w.text += kWords[rng_() % kCount];
      }
    }
    return w;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  const ServeBenchOptions& opt_;
  int32_t vocab_;
  std::mt19937_64 rng_;
};

// Runs `items` with at most `concurrency` in flight; with a rate, request i
// starts no earlier than its Poisson arrival time.
std::vector<BenchResult> RunLevel(const std::vector<WorkItem>& items, int concurrency, double rate,
                                  std::mt19937_64& rng,
                                  const std::function<BenchResult(const WorkItem&)>& one) {
  const size_t n = items.size();
  std::vector<Clock::duration> arrival(n, Clock::duration::zero());
  if (rate > 0) {
    std::exponential_distribution<double> gap(rate);
    double t = 0;
    for (size_t i = 0; i < n; ++i) {
      arrival[i] = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t));
      t += gap(rng);
    }
  }
  std::vector<BenchResult> results(n);
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) {
        std::this_thread::sleep_until(t0 + arrival[i]);
        results[i] = one(items[i]);
      }
    });
  }
  for (auto& t : workers) t.join();
  return results;
}

std::string Fixed(const nlohmann::json& summary, const char* key, int digits = 1) {
  if (summary.is_null()) return "-";
  char buf[32];
  snprintf(buf, sizeof(buf), "%.*f", digits, summary[key].get<double>());
  return buf;
}

std::string MarkdownTable(const nlohmann::json& out) {
  std::string md =
      "| concurrency | req/s | output tok/s | TTFT mean / p50 / p99 (ms) | TPOT mean / p50 / p99 (ms) | "
      "ITL p50 / p99 (ms) | failed |\n|---|---|---|---|---|---|---|\n";
  for (const auto& r : out["runs"]) {
    char head[128];
    snprintf(head, sizeof(head), "| %d | %.2f | %.1f | ", r["concurrency"].get<int>(),
             r["request_throughput"].get<double>(), r["output_tok_s"].get<double>());
    md += head + Fixed(r["ttft_ms"], "mean") + " / " + Fixed(r["ttft_ms"], "p50") + " / " +
          Fixed(r["ttft_ms"], "p99") + " | " + Fixed(r["tpot_ms"], "mean") + " / " +
          Fixed(r["tpot_ms"], "p50") + " / " + Fixed(r["tpot_ms"], "p99") + " | " +
          Fixed(r["itl_ms"], "p50") + " / " + Fixed(r["itl_ms"], "p99") + " | " +
          std::to_string(r["failed"].get<int>()) + " |\n";
  }
  return md;
}

}  // namespace

int RunServeBench(const ServeBenchOptions& opt) {
  auto fail = [](const std::string& what) {
    std::cerr << "facet bench --serve: " << what << "\n";
    return 1;
  };
  if (opt.prompt_len < 1 || opt.gen_len < 1) return fail("--prompt-len and --gen-len must be >= 1");
  if (opt.range_ratio < 0 || opt.range_ratio >= 1) return fail("--random-range-ratio must be in [0, 1)");
  if (opt.request_rate < 0) return fail("--request-rate must be >= 0");
  for (int c : opt.concurrency) {
    if (c < 1 || c > 4096) return fail("--concurrency values must be in [1, 4096]");
  }

  std::function<BenchResult(const WorkItem&)> one;
  int32_t vocab = 0;  // > 0: token-id prompts (gRPC)
  nlohmann::json out;
  std::unique_ptr<facet::v1::Facet::Stub> stub;
  HttpTarget target;
  if (!opt.url.empty()) {
    auto base = HttpBase(opt.url);
    if (!base.ok()) return fail(std::string(base.status().message()));
    target.base = *base;
    target.model = opt.model;
    if (!opt.extra_body.empty()) {
      auto extra = nlohmann::json::parse(opt.extra_body, nullptr, false);
      if (!extra.is_object()) return fail("--extra-body must be a JSON object");
      target.extra = opt.extra_body;
    }
    if (target.model.empty()) {
      auto model = FirstModel(target.base);
      if (!model.ok()) return fail(std::string(model.status().message()));
      target.model = *model;
    }
    out = {{"url", target.base}, {"model", target.model}};
    one = [&](const WorkItem& w) { return HttpCompletion(target, w.text, w.gen_len, opt.ignore_eos); };
  } else {
    auto channel = grpc::CreateChannel(opt.addr, grpc::InsecureChannelCredentials());
    stub = facet::v1::Facet::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    facet::v1::ListModelsRequest req;
    facet::v1::ListModelsResponse resp;
    grpc::Status st = stub->ListModels(&ctx, req, &resp);
    if (!st.ok() || resp.models_size() == 0) {
      return fail("cannot list models at " + opt.addr + ": " + st.error_message());
    }
    vocab = resp.models(0).vocab_size();
    out = {{"addr", opt.addr}, {"model", resp.models(0).name()}};
    one = [&](const WorkItem& w) { return GrpcRequest(*stub, w); };
  }
  out["prompt_len"] = opt.prompt_len;
  out["gen_len"] = opt.gen_len;
  out["random_range_ratio"] = opt.range_ratio;
  out["request_rate"] = opt.request_rate;

  Workload workload(opt, vocab);
  nlohmann::json runs = nlohmann::json::array();
  for (int c : opt.concurrency) {
    const int n = opt.requests > 0 ? opt.requests : std::max(2 * c, 4);
    std::vector<WorkItem> items;
    for (int i = 0; i < n; ++i) items.push_back(workload.Next());
    const auto t0 = Clock::now();
    std::vector<BenchResult> results = RunLevel(items, c, opt.request_rate, workload.rng(), one);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> ttft, tpot, itl, latency;
    int64_t tokens = 0, ok = 0, prompt_tokens = 0, prompt_reported = 0;
    std::string first_error;
    for (const BenchResult& r : results) {
      if (!r.ok) {
        if (first_error.empty()) first_error = r.error;
        continue;
      }
      ++ok;
      tokens += r.tokens;
      ttft.push_back(r.ttft_ms);
      latency.push_back(r.latency_ms);
      if (r.tokens > 1) tpot.push_back(r.tpot_ms);
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
      if (r.prompt_tokens >= 0) {
        prompt_tokens += r.prompt_tokens;
        ++prompt_reported;
      }
    }
    nlohmann::json run = {{"concurrency", c},
                          {"requests", n},
                          {"failed", n - ok},
                          {"duration_s", secs},
                          {"request_throughput", double(ok) / secs},
                          {"output_tok_s", double(tokens) / secs},
                          {"mean_output_tokens", ok ? double(tokens) / double(ok) : 0.0},
                          {"ttft_ms", Summary(ttft)},
                          {"tpot_ms", Summary(tpot)},
                          {"itl_ms", Summary(itl)},
                          {"latency_ms", Summary(latency)}};
    if (prompt_reported) run["mean_prompt_tokens"] = double(prompt_tokens) / double(prompt_reported);
    if (!first_error.empty()) run["first_error"] = first_error;
    runs.push_back(run);
    std::cerr << "concurrency " << c << ": " << double(tokens) / secs << " output tok/s"
              << (first_error.empty() ? "" : ", first error: " + first_error) << "\n";
  }
  out["runs"] = runs;
  const std::string md = MarkdownTable(out);
  std::cout << out.dump(2) << "\n";
  std::cerr << "\n" << md;
  if (!opt.json_out.empty()) std::ofstream(opt.json_out) << out.dump(2) << "\n";
  if (!opt.markdown_out.empty()) std::ofstream(opt.markdown_out) << md;
  for (const auto& r : runs) {
    if (r["failed"].get<int>() > 0) return 1;
  }
  return 0;
}

}  // namespace facet::cli
