// worker/engine.h types <-> the coordinator<->leader proto
// (proto/facet/internal/engine.proto). Both ends use these, so a field added
// to one side cannot be forgotten on the other.
#pragma once

#include <string>

#include "facet/internal/engine.pb.h"
#include "worker/engine.h"

namespace facet {

// One mapping between the engine's finish reasons and the public enum, for
// every front (gRPC service, engine link).
v1::FinishReason FinishReasonToProto(EngineFinish finish);
EngineFinish FinishReasonFromProto(v1::FinishReason finish);

// deadline becomes a relative deadline_ms (the machines' clocks may differ).
internal::Submit ToSubmitProto(const EngineRequest& request, const std::string& model);
EngineRequest FromSubmitProto(const internal::Submit& submit);

internal::TokenEvent ToEventProto(const std::string& request_id, const TokenEvent& event);
TokenEvent FromEventProto(const internal::TokenEvent& event);

internal::EngineStats ToStatsProto(const EngineStats& stats);
// last_step_end is set by the receiver (health = a step seen recently).
EngineStats FromStatsProto(const internal::EngineStats& stats);

}  // namespace facet
