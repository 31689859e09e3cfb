// facet serve: the embedded mode — the public gRPC API (facet.v1.Facet) and a
// single-rank engine in one process; with --http-port, the OpenAI-compatible
// HTTP API and Prometheus /metrics beside it on the same engine.
//
//   facet serve --model gemma-3-270m-it-Q4_K_M.gguf --port 50051 --http-port 8080
//   facet client --addr 127.0.0.1:50051 --prompt "Why is the sky blue?" --chat
//   curl localhost:8080/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'
//
// SIGINT/SIGTERM: stop admitting, let the streams in flight finish for up to
// --grace seconds, cancel the rest, exit 0.
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/load.h"
#include "coordinator/http_server.h"
#include "coordinator/server.h"
#include "core/thread_pool.h"
#include "models/model.h"
#include "worker/device_registry.h"
#include "worker/engine.h"

namespace facet::cli {
namespace {

struct ServeCmdOptions {
  std::string model;
  std::string tokenizer;  // empty: the model's own (tokenizer.json beside it, or the GGUF's)
  std::string name;  // empty: the model file or folder name
  std::string host = "127.0.0.1";
  int port = 50051;
  int http_port = -1;  // -1: no HTTP front; 0: any free port
  int http_threads = 256;
  int64_t max_body_mb = 8;
  int threads = 0;
  int64_t kv_cache_mb = 1024;
  int64_t max_batch_tokens = 512;
  int64_t max_running = 64;
  int64_t max_waiting = 256;
  int64_t max_context = 0;
  int32_t default_max_tokens = 512;
  double grace_s = 30;
  std::string device = "cpu";  // --device: cpu or cuda (worker/device_registry.h)
};

std::string DefaultModelName(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  std::string name = p.filename().string();
  if (p.extension() == ".gguf") name = p.stem().string();
  return name.empty() ? "model" : name;
}

int RunServe(const ServeCmdOptions& opt) {
  auto fail = [](const std::string& what, const absl::Status& s) {
    std::cerr << "facet serve: " << what << ": " << s.message() << "\n";
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  };
  // Every thread created from here on inherits the blocked signals; the main
  // thread takes them with sigwait, so shutdown runs in ordinary code, not in
  // a signal handler. (A signal during model loading waits until it is loaded.)
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ThreadPool pool(opt.threads);
  auto loaded = Model::Load(opt.model, &pool);
  if (!loaded.ok()) return fail("loading " + opt.model, loaded.status());
  std::shared_ptr<Model> model = std::move(*loaded);
  const ModelConfig& cfg = model->config();

  std::shared_ptr<const Tokenizer> tokenizer;
  if (auto tok = LoadTokenizer(opt.tokenizer.empty() ? opt.model : opt.tokenizer); tok.ok()) {
    tokenizer = std::move(*tok);
  } else {
    std::cerr << "facet serve: no tokenizer (" << tok.status().message()
              << "); serving token-id requests only\n";
  }

  EngineOptions eopt;
  eopt.kv_cache_bytes = opt.kv_cache_mb << 20;
  eopt.max_batch_tokens = opt.max_batch_tokens;
  eopt.max_running = opt.max_running;
  eopt.max_waiting = opt.max_waiting;
  eopt.max_context = opt.max_context;
  auto created = CreateEngineOn(opt.device, model, tokenizer, eopt);
  if (!created.ok()) return fail("creating the engine", created.status());
  std::shared_ptr<Engine> engine = std::move(*created);

  ModelInfo info = ModelInfoFromConfig(opt.name.empty() ? DefaultModelName(opt.model) : opt.name,
                                       cfg, opt.max_context);
  info.stop_token_ids = DefaultStopTokens(cfg, tokenizer.get());

  ServerOptions sopt;
  sopt.host = opt.host;
  sopt.port = opt.port;
  sopt.service.defaults.max_tokens = opt.default_max_tokens;
  auto started = FacetServer::Start(sopt, engine, tokenizer, info);
  if (!started.ok()) {
    engine->Shutdown(/*drain=*/false);
    return fail("starting the server", started.status());
  }
  std::unique_ptr<FacetServer> server = std::move(*started);
  std::unique_ptr<HttpFront> http;
  if (opt.http_port >= 0) {
    // The same engine behind a second registry: both fronts share it.
    auto registry = std::make_shared<ModelRegistry>();
    absl::Status added = registry->Add(ServedModel{info, engine, tokenizer});
    HttpOptions hopt;
    hopt.host = opt.host;
    hopt.port = opt.http_port;
    hopt.defaults = sopt.service.defaults;
    hopt.threads = opt.http_threads;
    hopt.max_body_bytes = size_t(opt.max_body_mb) << 20;
    auto front = added.ok() ? HttpFront::Start(hopt, registry) : absl::StatusOr<std::unique_ptr<HttpFront>>(added);
    if (!front.ok()) {
      server->Shutdown(std::chrono::milliseconds(0));
      server->Wait();
      engine->Shutdown(/*drain=*/false);
      return fail("starting the HTTP front", front.status());
    }
    http = std::move(*front);
  }
  std::cerr << "facet serve: model \"" << info.name << "\" (" << ModelFamilyName(cfg.family) << ", "
            << info.context_length << " tokens of context"
            << (tokenizer ? "" : ", no tokenizer") << ")\n";
  if (http) {
    std::cerr << "facet serve: HTTP (OpenAI API, /metrics) on http://" << http->address() << std::endl;
  }
  std::cerr << "facet serve: listening on " << server->address() << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "facet serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", draining "
            << server->active_streams() << " streams (up to " << opt.grace_s << " s)\n";
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(opt.grace_s * 1000));
  std::thread http_down([&] {
    if (http) http->Shutdown(grace);
  });
  server->Shutdown(grace);
  server->Wait();
  http_down.join();
  engine->Shutdown(/*drain=*/false);
  std::cerr << "facet serve: stopped\n";
  return 0;
}

}  // namespace

void RegisterServe(CLI::App& app) {
  auto opt = std::make_shared<ServeCmdOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over gRPC (facet.v1.Facet)");
  cmd->add_option("--model", opt->model, "model directory (config.json + safetensors) or .gguf file")
      ->required();
  cmd->add_option("--tokenizer", opt->tokenizer,
                  "tokenizer.json (or a folder/.gguf holding one) when the model has none beside it");
  cmd->add_option("--http-port", opt->http_port,
                  "also serve the OpenAI-compatible HTTP API and /metrics on this port (0 = any free port)");
  cmd->add_option("--http-threads", opt->http_threads,
                  "HTTP connections served at once (each stream holds one)")
      ->capture_default_str();
  cmd->add_option("--max-body-mb", opt->max_body_mb, "largest HTTP request body (MiB); larger: 413")
      ->capture_default_str();
  cmd->add_option("--name", opt->name, "model name clients use (default: the file or folder name)");
  cmd->add_option("--host", opt->host, "address to listen on (0.0.0.0 or :: for every interface)")
      ->capture_default_str();
  cmd->add_option("--port", opt->port, "port (0 = any free port)")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all cores)");
  cmd->add_option("--kv-cache-mb", opt->kv_cache_mb, "KV cache size in MiB")->capture_default_str();
  cmd->add_option("--max-batch-tokens", opt->max_batch_tokens,
                  "token budget of one engine step (prefill chunks + decodes)")
      ->capture_default_str();
  cmd->add_option("--max-running", opt->max_running, "sequences decoded together")
      ->capture_default_str();
  cmd->add_option("--max-waiting", opt->max_waiting,
                  "queued requests; beyond them clients get RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd->add_option("--max-context", opt->max_context,
                  "tokens per sequence (0 = the model's context length)");
  cmd->add_option("--default-max-tokens", opt->default_max_tokens,
                  "max_tokens of requests that leave it unset")
      ->capture_default_str();
  cmd->add_option("--grace", opt->grace_s, "seconds streams may finish after SIGINT/SIGTERM")
      ->capture_default_str();
  cmd->add_option("--device", opt->device, "where the forward runs: cpu or cuda (one GPU)")
      ->capture_default_str();
  cmd->callback([opt] { SetExitCode(RunServe(*opt)); });
}

}  // namespace facet::cli
