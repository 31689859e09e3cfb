#include "worker/engine_wire.h"

#include <chrono>

namespace facet {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

v1::FinishReason FinishReasonToProto(EngineFinish f) {
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

EngineFinish FinishReasonFromProto(v1::FinishReason f) {
  switch (f) {
    case v1::FINISH_REASON_STOP: return EngineFinish::kStop;
    case v1::FINISH_REASON_LENGTH: return EngineFinish::kLength;
    case v1::FINISH_REASON_CANCELLED: return EngineFinish::kCancelled;
    case v1::FINISH_REASON_DEADLINE: return EngineFinish::kDeadline;
    case v1::FINISH_REASON_ERROR: return EngineFinish::kError;
    default: return EngineFinish::kNone;
  }
}

internal::Submit ToSubmitProto(const EngineRequest& r, const std::string& model) {
  internal::Submit s;
  s.set_request_id(r.request_id);
  s.set_model(model);
  s.mutable_prompt()->Add(r.prompt.begin(), r.prompt.end());
  v1::SamplingParams* p = s.mutable_sampling();
  p->set_temperature(r.sampling.temperature);
  p->set_top_k(r.sampling.top_k);
  p->set_top_p(r.sampling.top_p);
  p->set_min_p(r.sampling.min_p);
  p->set_repetition_penalty(r.sampling.repetition_penalty);
  p->set_seed(r.sampling.seed);
  p->set_max_tokens(r.sampling.max_tokens);
  s.mutable_stop_token_ids()->Add(r.sampling.stop_token_ids.begin(), r.sampling.stop_token_ids.end());
  for (const std::string& t : r.stop_strings) s.add_stop_strings(t);
  if (r.deadline != Clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(r.deadline - Clock::now()).count();
    s.set_deadline_ms(std::max<int64_t>(1, left));
  }
  s.mutable_resume_tokens()->Add(r.resume_tokens.begin(), r.resume_tokens.end());
  return s;
}

EngineRequest FromSubmitProto(const internal::Submit& s) {
  EngineRequest r;
  r.request_id = s.request_id();
  r.prompt.assign(s.prompt().begin(), s.prompt().end());
  const v1::SamplingParams& p = s.sampling();
  r.sampling.temperature = p.temperature();
  r.sampling.top_k = p.top_k();
  r.sampling.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  r.sampling.min_p = p.min_p();
  r.sampling.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  r.sampling.seed = p.seed();
  if (p.has_max_tokens()) r.sampling.max_tokens = p.max_tokens();
  r.sampling.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  r.stop_strings.assign(s.stop_strings().begin(), s.stop_strings().end());
  if (s.deadline_ms() > 0) r.deadline = Clock::now() + std::chrono::milliseconds(s.deadline_ms());
  r.resume_tokens.assign(s.resume_tokens().begin(), s.resume_tokens().end());
  return r;
}

internal::TokenEvent ToEventProto(const std::string& id, const TokenEvent& e) {
  internal::TokenEvent p;
  p.set_request_id(id);
  p.mutable_token_ids()->Add(e.ids.begin(), e.ids.end());
  p.set_text(e.text);
  p.set_finished(e.finished);
  p.set_finish_reason(FinishReasonToProto(e.finish));
  if (!e.error.ok()) {
    p.set_error_code(int32_t(e.error.code()));
    p.set_error_message(std::string(e.error.message()));
  }
  p.set_prompt_tokens(e.prompt_tokens);
  p.set_completion_tokens(e.completion_tokens);
  return p;
}

TokenEvent FromEventProto(const internal::TokenEvent& p) {
  TokenEvent e;
  e.ids.assign(p.token_ids().begin(), p.token_ids().end());
  e.text = p.text();
  e.finished = p.finished();
  e.finish = FinishReasonFromProto(p.finish_reason());
  if (p.error_code() != 0) e.error = absl::Status(absl::StatusCode(p.error_code()), p.error_message());
  if (e.finish == EngineFinish::kError && e.error.ok()) e.error = absl::InternalError("the engine failed the request");
  e.prompt_tokens = p.prompt_tokens();
  e.completion_tokens = p.completion_tokens();
  return e;
}

internal::EngineStats ToStatsProto(const EngineStats& s) {
  internal::EngineStats p;
  p.set_running(s.running);
  p.set_waiting(s.waiting);
  p.set_steps(s.steps);
  p.set_prompt_tokens(s.prompt_tokens);
  p.set_generated_tokens(s.generated_tokens);
  p.set_preemptions(s.preemptions);
  for (const KvPoolStats& k : s.pools) {
    v1::KvPool* o = p.add_kv_pools();
    o->set_name(k.name);
    o->set_total_blocks(k.total_blocks);
    o->set_free_blocks(k.free_blocks);
    o->set_block_size(k.block_size);
    o->set_bytes_per_block(k.bytes_per_block);
    o->set_total_bytes(k.total_blocks * k.bytes_per_block);
    o->set_free_bytes(k.free_blocks * k.bytes_per_block);
  }
  if (s.last_step_end != Clock::time_point{}) {
    const auto age = Clock::now() - s.last_step_end;
    const auto wall = std::chrono::system_clock::now() - age;
    p.set_last_step_end_unix_ns(
        std::chrono::duration_cast<std::chrono::nanoseconds>(wall.time_since_epoch()).count());
  }
  return p;
}

EngineStats FromStatsProto(const internal::EngineStats& p) {
  EngineStats s;
  s.running = p.running();
  s.waiting = p.waiting();
  s.steps = p.steps();
  s.prompt_tokens = p.prompt_tokens();
  s.generated_tokens = p.generated_tokens();
  s.preemptions = p.preemptions();
  for (const v1::KvPool& k : p.kv_pools()) {
    s.pools.push_back(KvPoolStats{k.name(), k.total_blocks(), k.free_blocks(), k.block_size(), k.bytes_per_block()});
  }
  return s;
}

}  // namespace facet
