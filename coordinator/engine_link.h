// The coordinator's side of EngineLink (proto/facet/internal/engine.proto):
// Plan answers a launching job's world rank 0 with the shard plan for the
// model it asks for; Connect holds one group leader's stream as a
// RemoteEngine inside that model's ReplicaSet until the stream breaks, which
// marks the group down. One service serves every model of the coordinator;
// a job names its model (PlanRequest.model, Register.models), or leaves it
// empty when there is only one.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "coordinator/replica_set.h"
#include "coordinator/shard_planner.h"
#include "facet/internal/engine.grpc.pb.h"
#include "models/config.h"

namespace facet {

struct EngineLinkOptions {
  std::string model_name;
  std::string model_path;  // as the workers will read it
  std::string tokenizer_path;  // tokenizer.json the leaders load (empty: token ids only)
  ModelConfig config;      // for the planner
  PlanOptions plan;        // requested tp / ep / context
  internal::EngineConfig engine;
  int32_t step_timeout_ms = 60000;
  int32_t stats_interval_ms = 200;
  // A leader silent this long (no stats, no events) is hung or stopped: its
  // stream is cancelled and the group marked down. 0 = never.
  int32_t link_timeout_ms = 10000;
};

// One served model: how its jobs are planned and the groups that serve it.
struct ModelLink {
  EngineLinkOptions options;
  std::shared_ptr<ReplicaSet> replicas;
};

class EngineLinkService final : public internal::EngineLink::Service {
 public:
  EngineLinkService(EngineLinkOptions options, std::shared_ptr<ReplicaSet> replicas);
  // Several models; names must be distinct and non-empty (checked: aborts otherwise).
  explicit EngineLinkService(std::vector<ModelLink> models);

  grpc::Status Plan(grpc::ServerContext* context, const internal::PlanRequest* request,
                    internal::PlanReply* reply) override;
  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<internal::CoordinatorMessage, internal::LeaderMessage>* stream) override;

 private:
  // The model a job or a leader names; "" = the only one. NOT_FOUND naming the served models otherwise.
  absl::StatusOr<const ModelLink*> Find(const std::string& name) const;

  std::vector<ModelLink> models_;
};

// The plan for `ranks` as the reply a job receives (tests use it directly).
absl::StatusOr<internal::PlanReply> MakePlanReply(const EngineLinkOptions& options,
                                                  const internal::PlanRequest& request);

}  // namespace facet
