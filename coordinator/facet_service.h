// facet.v1.Facet over the models of a ModelRegistry, with the synchronous
// gRPC API: each Generate/Chat call holds one gRPC thread, which submits the
// request, then moves the engine's TokenEvents from an EventQueue to the
// client until the request finishes. A call whose client goes away cancels
// its engine request and waits for the engine to confirm, so the request's
// KV blocks are free by the time the call returns.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "coordinator/health.h"
#include "coordinator/model_registry.h"
#include "coordinator/request_builder.h"
#include "facet/v1/facet.grpc.pb.h"

namespace facet {

struct ServiceOptions {
  RequestDefaults defaults;
  // How often a stream without new tokens checks whether its client left.
  std::chrono::milliseconds poll_interval{20};
  // After cancelling, how long a call waits for the engine's final event.
  std::chrono::milliseconds cancel_grace{10000};
  // Health: a step finished within this window means healthy.
  std::chrono::milliseconds health_window{30000};
  // Health of an idle engine: a one-token probe must finish within this...
  std::chrono::milliseconds probe_timeout{10000};
  // ...and its result is reused this long (Health calls do not flood the engine).
  std::chrono::milliseconds probe_reuse{5000};
};

HealthOptions HealthOptionsOf(const ServiceOptions& options);

// Maps one to one (absl and gRPC share the canonical codes).
grpc::Status ToGrpcStatus(const absl::Status& status);

class FacetService final : public v1::Facet::Service {
 public:
  FacetService(std::shared_ptr<const ModelRegistry> registry, ServiceOptions options);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                    grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;

  // New Generate/Chat calls fail with UNAVAILABLE; running ones go on.
  void StopAdmitting() { admitting_ = false; }
  int64_t active_streams() const { return active_streams_.load(); }

 private:
  grpc::Status Stream(grpc::ServerContext* context, const ServedModel& model,
                      absl::StatusOr<EngineRequest> request,
                      grpc::ServerWriter<v1::GenerateResponse>* writer);

  std::shared_ptr<const ModelRegistry> registry_;
  ServiceOptions options_;
  std::atomic<bool> admitting_{true};
  std::atomic<int64_t> active_streams_{0};
  HealthChecker health_;
};

}  // namespace facet
