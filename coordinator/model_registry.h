// The models a coordinator serves, keyed by name. For now every model is one
// in-process engine; the cluster view (several engine groups per model,
// their load and KV headroom) grows here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/tokenizer.h"
#include "worker/engine.h"

namespace facet {

// What the front door needs to know about a model to validate and prepare a
// request; it never touches weights.
struct ModelInfo {
  std::string name;
  ModelFamily family = ModelFamily::kGemma3;
  int64_t context_length = 0;  // prompt + output tokens per sequence
  int32_t vocab_size = 0;
  int32_t bos_id = 2;          // prepended on add_bos; the health probe's prompt
  // Always end a generation: the config's EOS ids and the end-of-turn marker
  // (the serve command fills this with cli::DefaultStopTokens).
  std::vector<int32_t> stop_token_ids;
};

// name, family, context (the model's max_position_embeddings unless
// `context_length` > 0 caps it), vocabulary, BOS and the config's EOS ids.
ModelInfo ModelInfoFromConfig(std::string name, const ModelConfig& config,
                              int64_t context_length = 0);

struct ServedModel {
  ModelInfo info;
  std::shared_ptr<Engine> engine;
  std::shared_ptr<const Tokenizer> tokenizer;  // null: token-id requests only
};

class ModelRegistry {
 public:
  // INVALID_ARGUMENT for an empty name, a duplicate, a missing engine or an
  // info without a context length or vocabulary.
  absl::Status Add(ServedModel model);
  // NOT_FOUND naming the served models when `name` is unknown; an empty name
  // selects the only model (INVALID_ARGUMENT when there are several).
  absl::StatusOr<const ServedModel*> Find(const std::string& name) const;
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }

 private:
  // Pointers stay valid as models are added (Find hands them out).
  std::vector<std::unique_ptr<ServedModel>> models_;
};

}  // namespace facet
