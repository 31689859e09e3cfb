#include "coordinator/facet_service.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/engine_call.h"
#include "core/logging.h"
#include "worker/engine_wire.h"

namespace facet {
namespace {

using Clock = std::chrono::steady_clock;

// gRPC deadlines are wall-clock; the engine's are steady. A deadline beyond a
// year is gRPC's "none" (gpr_inf_future).
Clock::time_point SteadyDeadline(std::chrono::system_clock::time_point deadline) {
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

class CountGuard {
 public:
  explicit CountGuard(std::atomic<int64_t>& n) : n_(n) { ++n_; }
  ~CountGuard() { --n_; }

 private:
  std::atomic<int64_t>& n_;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

HealthOptions HealthOptionsOf(const ServiceOptions& options) {
  return HealthOptions{options.health_window, options.probe_timeout, options.probe_reuse};
}

FacetService::FacetService(std::shared_ptr<const ModelRegistry> registry, ServiceOptions options)
    : registry_(std::move(registry)), options_(options),
      health_(*registry_, HealthOptionsOf(options)) {}

grpc::Status FacetService::Generate(grpc::ServerContext* context,
                                    const v1::GenerateRequest* request,
                                    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto model = registry_->Find(request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  return Stream(context, **model, BuildGenerateRequest(*request, **model, options_.defaults),
                writer);
}

grpc::Status FacetService::Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                                grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto model = registry_->Find(request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  return Stream(context, **model, BuildChatRequest(*request, **model, options_.defaults), writer);
}

grpc::Status FacetService::Stream(grpc::ServerContext* context, const ServedModel& model,
                                  absl::StatusOr<EngineRequest> built,
                                  grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (!built.ok()) return ToGrpcStatus(built.status());
  if (!admitting_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
  }
  CountGuard active(active_streams_);
  EngineRequest request = *std::move(built);
  request.deadline = SteadyDeadline(context->deadline());
  auto submitted = EngineCall::Submit(*model.engine, std::move(request));
  if (!submitted.ok()) return ToGrpcStatus(submitted.status());
  EngineCall& call = **submitted;
  const grpc::Status client_gone(grpc::StatusCode::CANCELLED, "cancelled by the client");

  bool first = true;
  for (;;) {
    if (context->IsCancelled()) {
      call.CancelAndWait(options_.cancel_grace);
      return client_gone;
    }
    std::optional<TokenEvent> event = call.Next(options_.poll_interval);
    if (!event) continue;

    v1::GenerateResponse chunk;
    chunk.set_request_id(call.id());
    chunk.mutable_token_ids()->Add(event->ids.begin(), event->ids.end());
    chunk.set_text(event->text);
    if (first) chunk.set_seed(call.seed());
    first = false;
    if (!event->finished) {
      if (!writer->Write(chunk)) {
        call.CancelAndWait(options_.cancel_grace);
        return client_gone;
      }
      continue;
    }
    const absl::Status status = FinishStatus(*event, call.id());
    if (status.ok() || status.code() == absl::StatusCode::kDeadlineExceeded) {
      chunk.set_finish_reason(FinishReasonToProto(event->finish));
      chunk.mutable_usage()->set_prompt_tokens(event->prompt_tokens);
      chunk.mutable_usage()->set_completion_tokens(event->completion_tokens);
      // The request is over in the engine; a failed last write changes nothing.
      writer->Write(chunk);
    }
    return ToGrpcStatus(status);
  }
}

grpc::Status FacetService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                    v1::TokenizeResponse* response) {
  auto model = registry_->Find(request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  const Tokenizer* tok = (*model)->tokenizer.get();
  if (!tok) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("model \"", (*model)->info.name,
                                     "\" is served without a tokenizer"));
  }
  const bool add_bos = request->has_add_bos() ? request->add_bos() : tok->adds_bos();
  std::vector<int32_t> ids = tok->Encode(request->text(), add_bos);
  if (add_bos && !tok->adds_bos()) ids.insert(ids.begin(), (*model)->info.bos_id);
  for (int32_t id : ids) {
    response->add_token_ids(id);
    response->add_pieces(std::string(tok->TokenText(id)));
  }
  return grpc::Status::OK;
}

grpc::Status FacetService::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* response) {
  for (const auto& m : registry_->models()) {
    v1::ModelInfo* out = response->add_models();
    out->set_name(m->info.name);
    out->set_family(std::string(ModelFamilyName(m->info.family)));
    out->set_context_length(m->info.context_length);
    out->set_vocab_size(m->info.vocab_size);
    out->set_has_tokenizer(m->tokenizer != nullptr);
  }
  return grpc::Status::OK;
}

grpc::Status FacetService::Health(grpc::ServerContext*, const v1::HealthRequest* request,
                                  v1::HealthResponse* response) {
  std::vector<const ServedModel*> models;
  if (request->model().empty()) {
    for (const auto& m : registry_->models()) models.push_back(m.get());
  } else {
    auto model = registry_->Find(request->model());
    if (!model.ok()) return ToGrpcStatus(model.status());
    models.push_back(*model);
  }
  if (!admitting_) {
    response->set_status(v1::HealthResponse::NOT_SERVING);
    response->set_message("shutting down");
    return grpc::Status::OK;
  }
  const HealthVerdict v = health_.CheckAll(models);
  response->set_status(v.serving ? v1::HealthResponse::SERVING : v1::HealthResponse::NOT_SERVING);
  response->set_message(v.message);
  response->set_seconds_since_last_step(v.seconds_since_last_step);
  return grpc::Status::OK;
}

grpc::Status FacetService::Stats(grpc::ServerContext*, const v1::StatsRequest* request,
                                 v1::StatsResponse* response) {
  auto model = registry_->Find(request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  const EngineStats s = (*model)->engine->Stats();
  response->set_model((*model)->info.name);
  response->set_running(s.running);
  response->set_waiting(s.waiting);
  response->set_steps(s.steps);
  response->set_prompt_tokens(s.prompt_tokens);
  response->set_generated_tokens(s.generated_tokens);
  response->set_preemptions(s.preemptions);
  for (const KvPoolStats& p : s.pools) {
    v1::KvPool* out = response->add_kv_pools();
    out->set_name(p.name);
    out->set_total_blocks(p.total_blocks);
    out->set_free_blocks(p.free_blocks);
    out->set_block_size(p.block_size);
    out->set_bytes_per_block(p.bytes_per_block);
    out->set_total_bytes(p.total_blocks * p.bytes_per_block);
    out->set_free_bytes(p.free_blocks * p.bytes_per_block);
  }
  response->set_active_streams(active_streams_.load());
  return grpc::Status::OK;
}

}  // namespace facet
