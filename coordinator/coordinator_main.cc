// facet-coordinator: the cluster's front door (DESIGN.md §1). Serves
// facet.v1.Facet to clients and EngineLink to engine group leaders: plans
// each launching job's shards, routes requests across the registered groups
// (least loaded) and moves a dead group's requests to a live one. With
// --http-port it also serves the OpenAI-compatible HTTP API and Prometheus
// /metrics (coordinator/http_server.h) over the same replicas.
//
//   facet-coordinator --model tests/data/golden/gemma3 --tokenizer T.json --port 50051 --link-port 50052 \
//       --http-port 8000
//   mpirun -np 2 facet-worker --coordinator 127.0.0.1:50052     # once per replica job
//
// Several models: repeat --model (and --name / --tokenizer); each has its own
// replicas, and a worker job says which it serves with facet-worker --model NAME.
#include <signal.h>

#include <iostream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "coordinator/engine_link.h"
#include "coordinator/http_server.h"
#include "coordinator/replica_set.h"
#include "coordinator/server.h"
#include "models/tokenizer.h"

namespace facet {
namespace {

struct CoordinatorOptions {
  std::vector<std::string> models;      // one per served model
  std::vector<std::string> names;       // none, or one per model
  std::vector<std::string> tokenizers;  // none, one for all, or one per model
  std::string host = "127.0.0.1";
  int port = 50051;
  int link_port = 50052;
  int http_port = -1;  // -1: no HTTP front; 0: any free port
  int http_threads = 256;
  int64_t max_body_mb = 8;
  std::string link_host = "0.0.0.0";
  int tp = 0, ep = 0;
  int64_t context = 0;
  double memory_fraction = 0.9;
  int64_t kv_cache_mb = 256;
  int64_t max_batch_tokens = 512;
  int64_t max_running = 64;
  int32_t step_timeout_ms = 60000;
  int32_t link_timeout_ms = 10000;
  double failover_wait_s = 30;
  int default_max_tokens = 512;
  double grace_s = 10;
};

// The served name of a model path: its folder (or file) name.
std::string DefaultName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path.substr(path.find_last_of('/') + 1);
}

int Run(const CoordinatorOptions& opt) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const size_t n = opt.models.size();
  if (!opt.names.empty() && opt.names.size() != n) {
    std::cerr << "facet-coordinator: give --name once per --model (" << opt.names.size() << " names, " << n
              << " models)\n";
    return 2;
  }
  if (opt.tokenizers.size() > 1 && opt.tokenizers.size() != n) {
    std::cerr << "facet-coordinator: give --tokenizer once for all models or once per --model ("
              << opt.tokenizers.size() << " tokenizers, " << n << " models)\n";
    return 2;
  }
  ReplicaSetOptions ro;
  ro.failover_wait = std::chrono::milliseconds(int64_t(opt.failover_wait_s * 1000));
  std::vector<ModelLink> links;
  std::vector<ServedModel> served;
  for (size_t i = 0; i < n; ++i) {
    auto cfg = LoadModelConfig(opt.models[i]);
    if (!cfg.ok()) {
      std::cerr << "facet-coordinator: " << cfg.status() << "\n";
      return 2;
    }
    const std::string tokenizer_path =
        opt.tokenizers.empty() ? "" : opt.tokenizers[opt.tokenizers.size() == 1 ? 0 : i];
    std::shared_ptr<const Tokenizer> tokenizer;
    if (!tokenizer_path.empty()) {
      auto t = Tokenizer::FromJsonFile(tokenizer_path);
      if (!t.ok()) {
        std::cerr << "facet-coordinator: " << t.status() << "\n";
        return 2;
      }
      tokenizer = std::make_shared<Tokenizer>(std::move(*t));
    }
    const std::string name = opt.names.empty() ? DefaultName(opt.models[i]) : opt.names[i];
    for (const ModelLink& other : links) {
      if (other.options.model_name == name) {
        std::cerr << "facet-coordinator: two models are named \"" << name << "\" (use --name)\n";
        return 2;
      }
    }
    EngineLinkOptions lo;
    lo.model_name = name;
    lo.model_path = opt.models[i];
    lo.tokenizer_path = tokenizer_path;
    lo.config = *cfg;
    lo.plan.tp = opt.tp;
    lo.plan.ep = opt.ep;
    lo.plan.max_context = opt.context;
    lo.plan.memory_fraction = opt.memory_fraction;
    lo.engine.set_kv_cache_bytes(opt.kv_cache_mb << 20);
    lo.engine.set_max_batch_tokens(opt.max_batch_tokens);
    lo.engine.set_max_running(opt.max_running);
    lo.engine.set_max_context(opt.context);
    lo.step_timeout_ms = opt.step_timeout_ms;
    lo.link_timeout_ms = opt.link_timeout_ms;
    auto replicas = std::make_shared<ReplicaSet>(ro);
    served.push_back(ServedModel{ModelInfoFromConfig(name, *cfg, opt.context), replicas, tokenizer});
    links.push_back(ModelLink{std::move(lo), std::move(replicas)});
  }
  auto shutdown_replicas = [&](bool drain) {
    for (const ModelLink& m : links) {
      if (drain) m.replicas->ShutdownReplicas(/*drain=*/true);
      m.replicas->Shutdown(/*drain=*/false);
    }
  };

  EngineLinkService link(links);
  grpc::ServerBuilder lb;
  int link_port = 0;
  lb.AddListeningPort(opt.link_host + ":" + std::to_string(opt.link_port), grpc::InsecureServerCredentials(),
                      &link_port);
  lb.RegisterService(&link);
  std::unique_ptr<grpc::Server> link_server = lb.BuildAndStart();
  if (!link_server || link_port == 0) {
    std::cerr << "facet-coordinator: cannot listen for engine links on port " << opt.link_port << "\n";
    return 1;
  }

  ModelRegistry registry;
  auto http_registry = std::make_shared<ModelRegistry>();
  std::string names;
  for (const ServedModel& m : served) {
    absl::Status st = registry.Add(m);
    if (st.ok()) st = http_registry->Add(m);
    if (!st.ok()) {
      std::cerr << "facet-coordinator: " << st << "\n";
      return 1;
    }
    names += (names.empty() ? "\"" : ", \"") + m.info.name + "\"";
  }
  ServerOptions so;
  so.host = opt.host;
  so.port = opt.port;
  so.service.defaults.max_tokens = opt.default_max_tokens;
  auto server = FacetServer::Start(so, std::move(registry));
  if (!server.ok()) {
    std::cerr << "facet-coordinator: " << server.status() << "\n";
    return 1;
  }
  // The HTTP front: the same ReplicaSets behind its own registry, so routing,
  // failover and health are shared with the gRPC clients.
  std::unique_ptr<HttpFront> http;
  if (opt.http_port >= 0) {
    HttpOptions ho;
    ho.host = opt.host;
    ho.port = opt.http_port;
    ho.defaults = so.service.defaults;
    ho.threads = opt.http_threads;
    ho.max_body_bytes = size_t(opt.max_body_mb) << 20;
    auto front = HttpFront::Start(ho, http_registry);
    if (!front.ok()) {
      std::cerr << "facet-coordinator: HTTP front: " << front.status() << "\n";
      (*server)->Shutdown(std::chrono::milliseconds(0));
      (*server)->Wait();
      shutdown_replicas(/*drain=*/false);
      link_server->Shutdown(std::chrono::system_clock::now());
      return 1;
    }
    http = *std::move(front);
  }
  std::cerr << "facet-coordinator: " << (n == 1 ? "model " : "models ") << names << "; clients on " << (*server)->address()
            << (http ? ", HTTP (OpenAI API, /metrics) on http://" + http->address() : std::string())
            << ", engine links on port " << link_port << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "facet-coordinator: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", draining\n";
  const auto grace = std::chrono::milliseconds(int64_t(opt.grace_s * 1000));
  std::thread http_down([&] {
    if (http) http->Shutdown(grace);
  });
  (*server)->Shutdown(grace);
  (*server)->Wait();
  http_down.join();
  shutdown_replicas(/*drain=*/true);
  link_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

}  // namespace
}  // namespace facet

int main(int argc, char** argv) {
  CLI::App app{"facet-coordinator — public gRPC front door and engine-group router"};
  facet::CoordinatorOptions opt;
  app.add_option("--model", opt.models,
                 "model directory or config.json the workers load (repeat to serve several; workers then pick "
                 "one with facet-worker --model NAME)")
      ->required();
  app.add_option("--name", opt.names, "served model name, once per --model (default: the directory name)");
  app.add_option("--tokenizer", opt.tokenizers,
                 "tokenizer.json for text requests: once for all models or once per --model");
  app.add_option("--host", opt.host, "client address to bind")->capture_default_str();
  app.add_option("--port", opt.port, "client port (facet.v1.Facet)")->capture_default_str();
  app.add_option("--http-port", opt.http_port,
                 "also serve the OpenAI-compatible HTTP API and /metrics on this port (0 = any free port)");
  app.add_option("--http-threads", opt.http_threads, "HTTP connections served at once (each stream holds one)")
      ->capture_default_str();
  app.add_option("--max-body-mb", opt.max_body_mb, "largest HTTP request body (MiB); larger: 413")
      ->capture_default_str();
  app.add_option("--link-host", opt.link_host, "engine link address to bind")->capture_default_str();
  app.add_option("--link-port", opt.link_port, "engine link port (EngineLink)")->capture_default_str();
  app.add_option("--tp", opt.tp, "tensor-parallel size (default: the planner's choice)");
  app.add_option("--ep", opt.ep, "expert-parallel size");
  app.add_option("--context", opt.context, "max tokens per sequence (default: the model's)");
  app.add_option("--memory-fraction", opt.memory_fraction, "usable share of each rank's memory")
      ->capture_default_str();
  app.add_option("--kv-cache-mb", opt.kv_cache_mb, "KV cache per engine group")->capture_default_str();
  app.add_option("--max-batch-tokens", opt.max_batch_tokens, "tokens per step")->capture_default_str();
  app.add_option("--max-running", opt.max_running, "sequences per batch")->capture_default_str();
  app.add_option("--step-timeout-ms", opt.step_timeout_ms, "leader step watchdog (0 = off)")->capture_default_str();
  app.add_option("--link-timeout-ms", opt.link_timeout_ms, "drop a leader silent this long (0 = never)")
      ->capture_default_str();
  app.add_option("--failover-wait", opt.failover_wait_s, "seconds a request waits for a live group")
      ->capture_default_str();
  app.add_option("--default-max-tokens", opt.default_max_tokens, "when a request sets none")->capture_default_str();
  app.add_option("--grace", opt.grace_s, "seconds to drain on SIGTERM")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return facet::Run(opt);
}
