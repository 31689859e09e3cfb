#include "coordinator/model_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace facet {

ModelInfo ModelInfoFromConfig(std::string name, const ModelConfig& config,
                              int64_t context_length) {
  ModelInfo info;
  info.name = std::move(name);
  info.family = config.family;
  info.context_length = config.max_position_embeddings;
  if (context_length > 0 && (info.context_length == 0 || context_length < info.context_length)) {
    info.context_length = context_length;
  }
  info.vocab_size = config.vocab_size;
  info.bos_id = config.bos_token_id;
  info.stop_token_ids.assign(config.eos_token_ids.begin(), config.eos_token_ids.end());
  return info;
}

absl::Status ModelRegistry::Add(ServedModel model) {
  const ModelInfo& info = model.info;
  if (info.name.empty()) return absl::InvalidArgumentError("a served model needs a name");
  if (!model.engine) {
    return absl::InvalidArgumentError(absl::StrCat("model \"", info.name, "\" has no engine"));
  }
  if (info.context_length < 1 || info.vocab_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model \"", info.name, "\": context length (",
                                                   info.context_length, ") and vocabulary size (",
                                                   info.vocab_size, ") must be positive"));
  }
  for (const auto& m : models_) {
    if (m->info.name == info.name) {
      return absl::InvalidArgumentError(absl::StrCat("model \"", info.name, "\" is already served"));
    }
  }
  models_.push_back(std::make_unique<ServedModel>(std::move(model)));
  return absl::OkStatus();
}

absl::StatusOr<const ServedModel*> ModelRegistry::Find(const std::string& name) const {
  if (name.empty()) {
    if (models_.size() == 1) return models_[0].get();
    return absl::InvalidArgumentError(absl::StrCat(
        "model is empty and this server serves ", models_.size(), " models: name one"));
  }
  for (const auto& m : models_) {
    if (m->info.name == name) return m.get();
  }
  std::vector<std::string> names;
  for (const auto& m : models_) names.push_back("\"" + m->info.name + "\"");
  return absl::NotFoundError(absl::StrCat("no model named \"", name, "\" (served: ",
                                          absl::StrJoin(names, ", "), ")"));
}

}  // namespace facet
