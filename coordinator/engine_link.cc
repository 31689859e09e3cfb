#include "coordinator/engine_link.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "coordinator/facet_service.h"
#include "coordinator/remote_engine.h"
#include "core/logging.h"
#include "core/status.h"

namespace facet {

absl::StatusOr<internal::PlanReply> MakePlanReply(const EngineLinkOptions& opt, const internal::PlanRequest& req) {
  if (req.protocol_version() != 1) {
    return absl::FailedPreconditionError(absl::StrCat("protocol version ", req.protocol_version(),
                                                      " is not supported (this coordinator speaks 1)"));
  }
  std::vector<RankResources> ranks;
  for (int i = 0; i < req.ranks_size(); ++i) {
    const internal::RankInventory& r = req.ranks(i);
    if (r.rank() != i) return absl::InvalidArgumentError(absl::StrCat("inventory entry ", i, " is rank ", r.rank()));
    ranks.push_back(RankResources{r.rank(), r.hostname(), r.device(), r.memory_bytes()});
  }
  ASSIGN_OR_RETURN(ShardPlan plan, PlanShards(opt.config, ranks, opt.plan));
  internal::PlanReply reply;
  reply.set_model(opt.model_name);
  reply.set_model_path(opt.model_path);
  reply.set_tp(plan.tp);
  reply.set_ep(plan.ep);
  for (const GroupPlan& g : plan.groups) {
    internal::GroupAssignment* a = reply.add_groups();
    a->set_id(g.id);
    a->mutable_ranks()->Add(g.ranks.begin(), g.ranks.end());
  }
  *reply.mutable_engine() = opt.engine;
  reply.set_step_timeout_ms(opt.step_timeout_ms);
  reply.set_plan_text(DescribePlan(plan));
  reply.set_tokenizer_path(opt.tokenizer_path);
  reply.set_job_id(req.job_id());
  return reply;
}

EngineLinkService::EngineLinkService(EngineLinkOptions options, std::shared_ptr<ReplicaSet> replicas)
    : EngineLinkService(std::vector<ModelLink>{ModelLink{std::move(options), std::move(replicas)}}) {}

EngineLinkService::EngineLinkService(std::vector<ModelLink> models) : models_(std::move(models)) {
  FACET_CHECK(!models_.empty()) << "EngineLinkService needs a model";
  for (size_t i = 0; i < models_.size(); ++i) {
    FACET_CHECK(models_[i].replicas != nullptr) << "model " << models_[i].options.model_name << " has no ReplicaSet";
    FACET_CHECK(!models_[i].options.model_name.empty() || models_.size() == 1) << "a served model needs a name";
    for (size_t j = 0; j < i; ++j) {
      FACET_CHECK(models_[i].options.model_name != models_[j].options.model_name)
          << "model " << models_[i].options.model_name << " is served twice";
    }
  }
}

absl::StatusOr<const ModelLink*> EngineLinkService::Find(const std::string& name) const {
  if (name.empty() && models_.size() == 1) return &models_[0];
  std::string names;
  for (const ModelLink& m : models_) {
    if (m.options.model_name == name) return &m;
    absl::StrAppend(&names, names.empty() ? "" : ", ", "\"", m.options.model_name, "\"");
  }
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("this coordinator serves several models (", names,
                                                   "): start the workers with --model NAME"));
  }
  return absl::NotFoundError(absl::StrCat("this coordinator does not serve model \"", name, "\"; it serves ", names));
}

grpc::Status EngineLinkService::Plan(grpc::ServerContext*, const internal::PlanRequest* request,
                                     internal::PlanReply* reply) {
  auto model = Find(request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  auto r = MakePlanReply((*model)->options, *request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *reply = *std::move(r);
  FACET_LOG(INFO) << "job " << request->job_id() << ": " << request->ranks_size() << " ranks for model \""
                  << reply->model() << "\"\n" << reply->plan_text();
  return grpc::Status::OK;
}

namespace {
// The stream outlives no handler: sends after the handler returned are refused.
struct StreamSlot {
  std::mutex mu;
  grpc::ServerReaderWriter<internal::CoordinatorMessage, internal::LeaderMessage>* stream = nullptr;
};
}  // namespace

grpc::Status EngineLinkService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<internal::CoordinatorMessage, internal::LeaderMessage>* stream) {
  internal::LeaderMessage first;
  if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "the leader left before registering");
  if (!first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be Register");
  }
  const internal::Register& reg = first.register_();
  internal::CoordinatorMessage ack;
  if (reg.protocol_version() != 1 || reg.group_id().empty()) {
    ack.mutable_register_ack()->set_accepted(false);
    ack.mutable_register_ack()->set_message("protocol version 1 and a group id are required");
    stream->Write(ack);
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, ack.register_ack().message());
  }
  // The model the group loaded (the plan named it); none: the only model.
  auto model = Find(reg.models_size() > 0 ? reg.models(0).name() : std::string());
  if (!model.ok()) {
    ack.mutable_register_ack()->set_accepted(false);
    ack.mutable_register_ack()->set_message(std::string(model.status().message()));
    stream->Write(ack);
    return ToGrpcStatus(model.status());
  }
  const EngineLinkOptions& opt = (*model)->options;
  const std::shared_ptr<ReplicaSet>& replicas = (*model)->replicas;
  ack.mutable_register_ack()->set_accepted(true);
  ack.mutable_register_ack()->set_stats_interval_ms(opt.stats_interval_ms);
  if (!stream->Write(ack)) return grpc::Status(grpc::StatusCode::CANCELLED, "the leader left");

  auto slot = std::make_shared<StreamSlot>();
  slot->stream = stream;
  auto engine = std::make_shared<RemoteEngine>(reg.group_id(), opt.model_name,
                                               [slot](const internal::CoordinatorMessage& m) {
                                                 std::lock_guard<std::mutex> l(slot->mu);
                                                 return slot->stream != nullptr && slot->stream->Write(m);
                                               });
  FACET_LOG(INFO) << "engine group " << reg.group_id() << " registered (" << reg.world_size() << " ranks, model \""
                  << opt.model_name << "\")";
  if (absl::Status st = replicas->AddReplica(reg.group_id(), engine); !st.ok()) return ToGrpcStatus(st);

  // Health watch: the leader sends stats every stats_interval_ms even when
  // idle, so silence means a hung or stopped process (or a partition).
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool reading = true;
  std::thread watch([&] {
    if (opt.link_timeout_ms <= 0) return;
    const auto limit = std::chrono::milliseconds(opt.link_timeout_ms);
    std::unique_lock<std::mutex> l(watch_mu);
    while (reading) {
      watch_cv.wait_for(l, std::min<std::chrono::milliseconds>(limit / 4, std::chrono::milliseconds(500)));
      if (reading && engine->silence() > limit) {
        FACET_LOG(WARNING) << "engine group " << reg.group_id() << ": silent for more than " << limit.count()
                           << " ms; dropping its link";
        context->TryCancel();
        return;
      }
    }
  });
  internal::LeaderMessage m;
  while (stream->Read(&m)) engine->OnMessage(m);
  {
    std::lock_guard<std::mutex> l(watch_mu);
    reading = false;
    watch_cv.notify_all();
  }
  watch.join();
  {
    std::lock_guard<std::mutex> l(slot->mu);
    slot->stream = nullptr;
  }
  FACET_LOG(WARNING) << "engine group " << reg.group_id() << ": link closed"
                     << (context->IsCancelled() ? " (cancelled)" : "");
  replicas->RemoveReplica(reg.group_id());
  engine->OnLinkDown(absl::UnavailableError("link closed"));
  return grpc::Status::OK;
}

}  // namespace facet
