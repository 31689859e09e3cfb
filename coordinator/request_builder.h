// Public API requests -> engine requests: every check a client's input must
// pass before it reaches the engine, with messages that name the field.
// Kept free of gRPC so it is unit-tested without a server.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "coordinator/model_registry.h"
#include "facet/v1/facet.pb.h"
#include "worker/engine.h"

namespace facet {

struct RequestDefaults {
  int32_t max_tokens = 512;  // when the request leaves max_tokens unset
};

// INVALID_ARGUMENT: no prompt or both kinds, a token id outside the
// vocabulary, a sampling value out of range, an empty stop string;
// OUT_OF_RANGE: the prompt (plus an explicit max_tokens) does not fit the
// context; FAILED_PRECONDITION: text in or stop strings without a tokenizer.
// Fills in what the client left unset: request id, seed, max_tokens (the
// default, capped by the room left in the context), the model's stop tokens.
absl::StatusOr<EngineRequest> BuildGenerateRequest(const v1::GenerateRequest& request,
                                                   const ServedModel& model,
                                                   const RequestDefaults& defaults);

// As BuildGenerateRequest, with the conversation rendered by the model
// family's chat template (INVALID_ARGUMENT for what the template rejects:
// no messages, unknown roles, roles not alternating).
absl::StatusOr<EngineRequest> BuildChatRequest(const v1::ChatRequest& request,
                                               const ServedModel& model,
                                               const RequestDefaults& defaults);

// A fresh id for requests that came without one: "facet-<counter>-<random>".
std::string NewRequestId();

}  // namespace facet
