#include "coordinator/server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"

namespace facet {
namespace {

std::string HostPort(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FacetServer>> FacetServer::Start(
    const ServerOptions& options, std::shared_ptr<Engine> engine,
    std::shared_ptr<const Tokenizer> tokenizer, ModelInfo info) {
  ModelRegistry registry;
  absl::Status added = registry.Add(ServedModel{std::move(info), std::move(engine), std::move(tokenizer)});
  if (!added.ok()) return added;
  return Start(options, std::move(registry));
}

absl::StatusOr<std::unique_ptr<FacetServer>> FacetServer::Start(const ServerOptions& options,
                                                                ModelRegistry registry) {
  if (registry.models().empty()) return absl::InvalidArgumentError("no model to serve");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", options.port, " is outside [0, 65535]"));
  }
  std::unique_ptr<FacetServer> server(new FacetServer());
  server->registry_ = std::make_shared<const ModelRegistry>(std::move(registry));
  server->service_ = std::make_unique<FacetService>(server->registry_, options.service);
  server->host_ = options.host;

  grpc::ServerBuilder builder;
  const std::string requested = HostPort(options.host, options.port);
  builder.AddListeningPort(requested, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    if (server->server_) server->server_->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", requested,
                                               " (address in use or not local?)"));
  }
  return server;
}

FacetServer::~FacetServer() {
  if (!server_) return;
  Shutdown(std::chrono::system_clock::now());
  Wait();
}

std::string FacetServer::address() const { return HostPort(host_, port_); }

void FacetServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  std::call_once(shutdown_once_, [&] {
    service_->StopAdmitting();
    server_->Shutdown(deadline);
  });
}

void FacetServer::Wait() { server_->Wait(); }

}  // namespace facet
