// The embedded front door: facet.v1.Facet served over gRPC in this process,
// in front of in-process engines (`facet serve`).
//
//   auto server = FacetServer::Start({.host = "127.0.0.1", .port = 0}, engine, tokenizer, info);
//   ... (*server)->port() ...
//   (*server)->Shutdown(std::chrono::seconds(30));  // drain, then cancel what is left
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "coordinator/facet_service.h"
#include "coordinator/model_registry.h"

namespace facet {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless asked otherwise
  int port = 0;                    // 0: the system picks a free port (see port())
  ServiceOptions service;
  // Largest request a client may send (long prompts as text or ids).
  int max_receive_bytes = 64 << 20;
};

class FacetServer {
 public:
  // One model. `tokenizer` may be null (token-id requests only).
  static absl::StatusOr<std::unique_ptr<FacetServer>> Start(
      const ServerOptions& options, std::shared_ptr<Engine> engine,
      std::shared_ptr<const Tokenizer> tokenizer, ModelInfo info);
  // Any number of models. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<FacetServer>> Start(const ServerOptions& options,
                                                            ModelRegistry registry);

  ~FacetServer();  // Shutdown(now) unless already shut down
  FacetServer(const FacetServer&) = delete;
  FacetServer& operator=(const FacetServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "host:port" ("[::1]:port" for IPv6)

  // Stops admitting new calls (they fail with UNAVAILABLE), lets the calls in
  // flight finish until `deadline`, then cancels the rest: their engine
  // requests are cancelled and the call returns once the engine confirms.
  // Blocks until every call has returned. The engines are not shut down (the
  // caller owns them). Safe to call more than once and from any thread.
  void Shutdown(std::chrono::system_clock::time_point deadline);
  void Shutdown(std::chrono::milliseconds grace) {
    Shutdown(std::chrono::system_clock::now() + grace);
  }
  // Blocks until Shutdown has completed.
  void Wait();

  int64_t active_streams() const { return service_->active_streams(); }

 private:
  FacetServer() = default;

  std::shared_ptr<const ModelRegistry> registry_;
  std::unique_ptr<FacetService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string host_;
  int port_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace facet
