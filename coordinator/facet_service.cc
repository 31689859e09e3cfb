#include "coordinator/facet_service.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/event_queue.h"
#include "core/logging.h"

namespace facet {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Fixed1(double v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

// gRPC deadlines are wall-clock; the engine's are steady. A deadline beyond a
// year is gRPC's "none" (gpr_inf_future).
Clock::time_point SteadyDeadline(std::chrono::system_clock::time_point deadline) {
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

v1::FinishReason ToProto(EngineFinish f) {
  switch (f) {
    case EngineFinish::kNone: return v1::FINISH_REASON_UNSPECIFIED;
    case EngineFinish::kStop: return v1::FINISH_REASON_STOP;
    case EngineFinish::kLength: return v1::FINISH_REASON_LENGTH;
    case EngineFinish::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case EngineFinish::kDeadline: return v1::FINISH_REASON_DEADLINE;
    case EngineFinish::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
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

FacetService::FacetService(std::shared_ptr<const ModelRegistry> registry, ServiceOptions options)
    : registry_(std::move(registry)), options_(options) {
  for (const auto& m : registry_->models()) probes_[m->info.name] = std::make_unique<ProbeState>();
}

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
  const std::string id = request.request_id;
  const uint64_t seed = request.sampling.seed;

  // The sink owns a reference to the queue: if this call gives up waiting
  // (cancel_grace), a late event still lands somewhere valid.
  auto queue = std::make_shared<EventQueue>();
  absl::Status submitted =
      model.engine->Submit(std::move(request), [queue](const TokenEvent& e) { queue->Push(e); });
  if (!submitted.ok()) return ToGrpcStatus(submitted);

  bool first = true;
  bool cancelled = false;  // by this call, because the client went away
  Clock::time_point cancelled_at{};
  auto cancel = [&] {
    if (cancelled) return;
    model.engine->Cancel(id);
    cancelled = true;
    cancelled_at = Clock::now();
  };
  for (;;) {
    if (!cancelled && context->IsCancelled()) cancel();
    std::optional<TokenEvent> event = queue->PopFor(options_.poll_interval);
    if (!event) {
      if (cancelled && Clock::now() - cancelled_at > options_.cancel_grace) {
        FACET_LOG(WARNING) << "request " << id << ": the engine did not confirm the cancellation within "
                           << options_.cancel_grace.count() << " ms";
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      }
      continue;
    }
    if (cancelled) {
      // Drain until the engine confirms; the client is gone.
      if (event->finished) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      continue;
    }

    v1::GenerateResponse chunk;
    chunk.set_request_id(id);
    chunk.mutable_token_ids()->Add(event->ids.begin(), event->ids.end());
    chunk.set_text(event->text);
    if (first) chunk.set_seed(seed);
    first = false;
    if (!event->finished) {
      if (!writer->Write(chunk)) cancel();
      continue;
    }

    switch (event->finish) {
      case EngineFinish::kStop:
      case EngineFinish::kLength:
      case EngineFinish::kDeadline: {
        chunk.set_finish_reason(ToProto(event->finish));
        chunk.mutable_usage()->set_prompt_tokens(event->prompt_tokens);
        chunk.mutable_usage()->set_completion_tokens(event->completion_tokens);
        // The request is over in the engine; a failed last write changes nothing.
        writer->Write(chunk);
        if (event->finish != EngineFinish::kDeadline) return grpc::Status::OK;
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            absl::StrCat("the deadline passed after ", event->completion_tokens,
                                         " generated tokens"));
      }
      case EngineFinish::kCancelled:
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            absl::StrCat("the engine cancelled request ", id,
                                         " (shutting down); retry"));
      case EngineFinish::kError:
        if (!event->error.ok()) return ToGrpcStatus(event->error);
        [[fallthrough]];
      case EngineFinish::kNone:
        return grpc::Status(grpc::StatusCode::INTERNAL,
                            absl::StrCat("the engine failed request ", id, " without a reason"));
    }
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
  bool serving = true;
  std::string message;
  double since = -1;
  for (const ServedModel* m : models) {
    Verdict v = CheckHealth(*m);
    serving = serving && v.serving;
    if (!message.empty()) message += "; ";
    message += models.size() > 1 ? absl::StrCat(m->info.name, ": ", v.message) : v.message;
    since = std::max(since, v.seconds_since_last_step);
  }
  response->set_status(serving ? v1::HealthResponse::SERVING : v1::HealthResponse::NOT_SERVING);
  response->set_message(message);
  response->set_seconds_since_last_step(since);
  return grpc::Status::OK;
}

FacetService::Verdict FacetService::CheckHealth(const ServedModel& model) {
  const EngineStats stats = model.engine->Stats();
  const auto now = Clock::now();
  Verdict v;
  const bool stepped = stats.last_step_end != Clock::time_point{};
  if (stepped) v.seconds_since_last_step = Seconds(now - stats.last_step_end);
  if (stepped && now - stats.last_step_end <= options_.health_window) {
    v.serving = true;
    v.message = absl::StrCat("last step finished ", Fixed1(v.seconds_since_last_step), " s ago");
    return v;
  }
  if (stats.running + stats.waiting > 0) {
    v.message = absl::StrCat(
        stepped ? absl::StrCat("no step finished in ", Fixed1(v.seconds_since_last_step), " s")
                : std::string("no step finished yet"),
        " with ", stats.running, " running and ", stats.waiting, " waiting requests");
    return v;
  }
  Verdict probe = Probe(model);
  const EngineStats after = model.engine->Stats();
  if (after.last_step_end != Clock::time_point{}) {
    probe.seconds_since_last_step = Seconds(Clock::now() - after.last_step_end);
  }
  return probe;
}

FacetService::Verdict FacetService::Probe(const ServedModel& model) {
  ProbeState& state = *probes_.at(model.info.name);
  std::lock_guard<std::mutex> lock(state.mu);
  const auto start = Clock::now();
  if (state.when != Clock::time_point{} && start - state.when <= options_.probe_reuse) {
    return Verdict{state.ok, state.message};
  }
  auto record = [&](bool ok, std::string message) {
    state.when = Clock::now();
    state.ok = ok;
    state.message = std::move(message);
    return Verdict{ok, state.message};
  };

  EngineRequest request;
  request.request_id = absl::StrCat("facet-health-probe-", probe_counter_.fetch_add(1) + 1);
  request.prompt = {model.info.bos_id};
  request.sampling.max_tokens = 1;
  request.deadline = start + options_.probe_timeout;
  auto queue = std::make_shared<EventQueue>();
  absl::Status submitted =
      model.engine->Submit(request, [queue](const TokenEvent& e) { queue->Push(e); });
  if (!submitted.ok()) {
    return record(false, absl::StrCat("idle; the probe request was rejected: ",
                                      std::string(submitted.message())));
  }
  for (;;) {
    std::optional<TokenEvent> event = queue->PopFor(std::chrono::milliseconds(50));
    if (event && event->finished) {
      const double ms = Seconds(Clock::now() - start) * 1e3;
      if (event->finish == EngineFinish::kStop || event->finish == EngineFinish::kLength) {
        return record(true, absl::StrCat("idle; a probe step completed in ", Fixed1(ms), " ms"));
      }
      return record(false, absl::StrCat("idle; the probe request ended with finish reason ",
                                        v1::FinishReason_Name(ToProto(event->finish)), " ",
                                        std::string(event->error.message())));
    }
    if (Clock::now() - start > options_.probe_timeout + std::chrono::seconds(1)) {
      model.engine->Cancel(request.request_id);
      return record(false, absl::StrCat("idle; a probe step did not finish within ",
                                        options_.probe_timeout.count(), " ms"));
    }
  }
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
