// facet bench: offline prefill and decode throughput of one sequence, next to
// the machine's own limits (streaming-read bandwidth, FMA peak), so every
// figure is also a fraction of its roofline.
//
//   facet bench --model DIR --prompt-len 512 --gen-len 32 --threads 2
//   facet bench --config tests/data/configs/gemma3-1b.json --dtype bf16   # random weights, real shape
#include <sys/resource.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/bench_serve.h"
#include "cli/commands.h"
#include "core/thread_pool.h"
#include "kernels/cpu/machine_probe.h"
#include "models/model.h"
#include "models/random_weights.h"
#include "worker/device_registry.h"
#include "worker/generator.h"

namespace facet::cli {
namespace {

struct BenchOptions {
  std::string model;
  std::string config;
  std::string dtype = "bf16";
  int prompt_len = 512;
  int gen_len = 32;
  int threads = 0;
  int repeats = 1;
  bool probe = true;
  std::string device = "cpu";  // --device: cpu or cuda (worker/device_registry.h)
};

int64_t MatrixParams(const WeightRef& w) { return w.data ? w.rows * w.cols : 0; }

// FLOPs of a prefill of T tokens (multiply-add = 2): every linear layer per
// token (experts: top_k of num_experts), attention scores and values over the
// keys each query sees, and the LM head for the last token only.
double PrefillFlops(const Model& m, int64_t T) {
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  double flops = 2.0 * MatrixParams(w.lm_head);
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& lw = w.layers[i];
    const LayerConfig& l = c.layers[i];
    int64_t p = 0;
    for (const WeightRef* x : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down, &lw.router}) {
      p += MatrixParams(*x);
    }
    if (l.moe) {
      p += (MatrixParams(lw.experts_gate_up) + MatrixParams(lw.experts_down)) * c.top_k_experts /
           c.num_experts;
    }
    flops += 2.0 * double(p) * double(T);
    double keys = 0;
    for (int64_t t = 0; t < T; ++t) keys += l.is_sliding() ? std::min<int64_t>(t + 1, l.sliding_window) : t + 1;
    flops += 4.0 * keys * l.num_heads * l.head_dim;
  }
  return flops;
}

int RunBench(const BenchOptions& opt) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "facet bench: " << s.message() << "\n";
    return 1;
  };
  if (absl::Status st = CheckDevice(opt.device); !st.ok()) return fail(st);
  ThreadPool pool(opt.threads);
  std::unique_ptr<Model> model;
  std::string name;
  if (!opt.model.empty()) {
    auto m = Model::Load(opt.model, &pool);
    if (!m.ok()) return fail(m.status());
    model = std::move(*m);
    name = opt.model;
  } else if (!opt.config.empty()) {
    auto cfg = LoadModelConfig(opt.config);
    if (!cfg.ok()) return fail(cfg.status());
    WeightFormat f = opt.dtype == "f32" ? WeightFormat::kF32
                     : opt.dtype == "f16" ? WeightFormat::kF16
                                          : WeightFormat::kBF16;
    if (opt.dtype != "f32" && opt.dtype != "f16" && opt.dtype != "bf16") {
      return fail(absl::InvalidArgumentError("--dtype must be f32, f16 or bf16"));
    }
    auto w = MakeRandomWeights(*cfg, f, /*seed=*/1, &pool);
    if (!w.ok()) return fail(w.status());
    model = std::make_unique<Model>(*cfg, std::move(*w), &pool);
    name = opt.config + " (random " + opt.dtype + ")";
  } else {
    return fail(absl::InvalidArgumentError("pass --model DIR or --config CONFIG.json"));
  }
  const ModelConfig& cfg = model->config();
  if (opt.prompt_len < 1 || opt.gen_len < 2) {
    return fail(absl::InvalidArgumentError("--prompt-len must be >= 1 and --gen-len >= 2"));
  }

  // A fixed pseudo-random prompt avoiding special ids; greedy decoding with
  // no stop tokens so exactly gen_len tokens are produced.
  std::vector<int32_t> prompt(opt.prompt_len);
  for (int i = 0; i < opt.prompt_len; ++i) prompt[i] = 3 + int32_t((i * 7919u) % uint32_t(cfg.vocab_size - 3));
  prompt[0] = cfg.bos_token_id;
  SamplingParams sp;
  sp.max_tokens = opt.gen_len;

  double best_prefill = 0, best_decode = 0;
  for (int r = 0; r < std::max(1, opt.repeats); ++r) {
    auto res = GenerateOn(opt.device, *model, prompt, sp);
    if (!res.ok()) return fail(res.status());
    best_prefill = std::max(best_prefill, res->prefill_tok_s());
    best_decode = std::max(best_decode, res->decode_tok_s());
  }

  const double weight_bytes = double(model->DecodeWeightBytes());
  const double prefill_flops = PrefillFlops(*model, opt.prompt_len);
  const double prefill_gflops = prefill_flops / (opt.prompt_len / best_prefill) / 1e9;
  nlohmann::json j = {{"model", name},
                      {"device", opt.device},
                      {"threads", pool.num_threads()},
                      {"prompt_len", opt.prompt_len},
                      {"gen_len", opt.gen_len},
                      {"prefill_tok_s", best_prefill},
                      {"decode_tok_s", best_decode},
                      {"decode_weight_bytes_per_token", weight_bytes},
                      {"prefill_gflops", prefill_gflops}};
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) == 0) j["peak_rss_mb"] = double(usage.ru_maxrss) / 1024.0;  // KiB on Linux
  if (opt.probe && opt.device == "cpu") {  // host DRAM: no roofline for a GPU run
    cpu::MachineLimits lim = cpu::MeasureMachine(&pool);
    const double roofline = lim.mem_read_gbps * 1e9 / weight_bytes;
    j["machine"] = {{"mem_read_gbps", lim.mem_read_gbps}, {"fma_gflops", lim.fma_gflops}, {"threads", lim.threads}};
    j["decode_roofline_tok_s"] = roofline;
    j["decode_fraction_of_roofline"] = best_decode / roofline;
    j["prefill_fraction_of_fma_peak"] = prefill_gflops / lim.fma_gflops;
  }
  std::cout << j.dump(2) << "\n";
  return 0;
}

}  // namespace

void RegisterBench(CLI::App& app) {
  auto opt = std::make_shared<BenchOptions>();
  auto serve = std::make_shared<ServeBenchOptions>();
  auto serve_mode = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("bench", "Offline prefill/decode throughput vs the machine's limits");
  cmd->add_option("--model", opt->model, "model directory");
  cmd->add_option("--config", opt->config, "config.json: benchmark random weights of that shape");
  cmd->add_option("--dtype", opt->dtype, "weight dtype for --config: bf16, f16, f32")->capture_default_str();
  cmd->add_option("--prompt-len", opt->prompt_len, "prompt tokens")->capture_default_str();
  cmd->add_option("--gen-len", opt->gen_len, "generated tokens")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all cores)");
  cmd->add_option("--repeats", opt->repeats, "runs; the best is reported")->capture_default_str();
  cmd->add_flag("!--no-probe", opt->probe, "skip measuring bandwidth and FMA peak");
  cmd->add_flag("--serve", *serve_mode,
                "benchmark a running server instead: `facet serve` over gRPC (--addr) or any "
                "OpenAI-compatible HTTP server (--url)");
  cmd->add_option("--addr", serve->addr, "--serve: gRPC server address")->capture_default_str();
  cmd->add_option("--url", serve->url, "--serve: OpenAI-compatible server, http://host:port");
  cmd->add_option("--served-model", serve->model, "--serve --url: model name (default: the first listed)");
  cmd->add_option("--concurrency", serve->concurrency,
                  "--serve: requests in flight, one run per value (a sweep: 1,4,16)")
      ->delimiter(',');
  cmd->add_option("--requests", serve->requests, "--serve: requests per run (0 = 2 x concurrency)");
  cmd->add_option("--request-rate", serve->request_rate,
                  "--serve: Poisson arrivals per second (0 = closed loop at --concurrency)");
  cmd->add_option("--random-range-ratio", serve->range_ratio,
                  "--serve: lengths uniform in [len*(1-r), len*(1+r)] (0 = fixed)");
  cmd->add_flag("--ignore-eos", serve->ignore_eos, "--serve --url: send ignore_eos (exact output lengths)");
  cmd->add_option("--extra-body", serve->extra_body,
                  "--serve --url: JSON object merged into every request (e.g. a peer's logit_bias)");
  cmd->add_option("--seed", serve->seed, "--serve: workload seed")->capture_default_str();
  cmd->add_option("--json-out", serve->json_out, "--serve: also write the JSON report here");
  cmd->add_option("--markdown-out", serve->markdown_out, "--serve: also write the markdown table here");
  cmd->add_option("--device", opt->device, "where the forward runs: cpu or cuda (one GPU)")
      ->capture_default_str();
  cmd->callback([opt, serve, serve_mode] {
    if (*serve_mode) {
      serve->prompt_len = opt->prompt_len;
      serve->gen_len = opt->gen_len;
      SetExitCode(RunServeBench(*serve));
    } else {
      SetExitCode(RunBench(*opt));
    }
  });
}

}  // namespace facet::cli
