// The OpenAI-compatible HTTP front of the coordinator (cpp-httplib), beside
// the gRPC service on the same models:
//   POST /v1/chat/completions, POST /v1/completions  (JSON or SSE streams)
//   GET  /v1/models, GET /health (200 only if a step round trip succeeded
//   recently, else 503), GET /metrics (Prometheus text format).
// Errors are OpenAI-style JSON bodies ({"error": {...}}) with the HTTP status
// of the failure. A streaming client that goes away has its engine requests
// cancelled, and the handler waits for the engine's confirmation, so their KV
// blocks are free when the connection is released.
//
//   auto front = HttpFront::Start({.port = 8080}, registry);
//   ... (*front)->port() ...
//   (*front)->Shutdown(std::chrono::seconds(30));
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/health.h"
#include "coordinator/metrics.h"
#include "coordinator/model_registry.h"
#include "coordinator/request_builder.h"

namespace httplib {
class Server;
}

namespace facet {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port (see port())
  RequestDefaults defaults;
  HealthOptions health;
  size_t max_body_bytes = 8 << 20;  // larger bodies: 413
  // Connections served at once; a stream holds one for its whole length.
  int threads = 256;
  // How long a stream waits for tokens before checking for shutdown.
  std::chrono::milliseconds poll_interval{50};
  // A stream without tokens for this long sends an SSE comment, which is how
  // a client that went away is noticed while its request is still queued.
  std::chrono::milliseconds keepalive{1000};
  std::chrono::milliseconds cancel_grace{10000};
};

class HttpFront {
 public:
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(const HttpOptions& options,
                                                          std::shared_ptr<const ModelRegistry> registry);
  ~HttpFront();  // Shutdown(now)
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "host:port"

  // New completions get 503; those in flight finish until `grace` has passed,
  // then the rest are cancelled (engine confirmed); then the listener stops.
  // Blocks until every handler has returned. Safe to call more than once.
  void Shutdown(std::chrono::milliseconds grace);
  int64_t active_requests() const { return active_->load(); }
  const MetricsRegistry& metrics() const { return *metrics_; }

 private:
  struct Impl;
  HttpFront() = default;

  std::unique_ptr<Impl> impl_;
  std::unique_ptr<MetricsRegistry> metrics_;
  std::shared_ptr<std::atomic<int64_t>> active_ = std::make_shared<std::atomic<int64_t>>(0);
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::string host_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
};

}  // namespace facet
