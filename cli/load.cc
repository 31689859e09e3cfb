#include "cli/load.h"

#include <filesystem>

#include "core/status.h"
#include "models/gguf_model.h"

namespace facet::cli {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) {
    ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::Open(path));
    ASSIGN_OR_RETURN(Tokenizer tok, TokenizerFromGguf(gguf));
    return std::make_unique<Tokenizer>(std::move(tok));
  }
  std::string file = path;
  if (std::filesystem::is_directory(path)) file = path + "/tokenizer.json";
  ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::FromJsonFile(file));
  return std::make_unique<Tokenizer>(std::move(tok));
}

ChatFormat ChatFormatFor(ModelFamily family) {
  switch (family) {
    case ModelFamily::kGemma2: return ChatFormat::kGemma2;
    case ModelFamily::kGemma3: return ChatFormat::kGemma3;
    case ModelFamily::kGemma4: return ChatFormat::kGemma4;
  }
  return ChatFormat::kGemma3;
}

std::vector<int32_t> DefaultStopTokens(const ModelConfig& config, const Tokenizer* tok) {
  std::vector<int32_t> stop(config.eos_token_ids.begin(), config.eos_token_ids.end());
  if (tok) {
    for (const char* end : {"<end_of_turn>", "<turn|>"}) {
      if (auto id = tok->TokenToId(end)) stop.push_back(*id);
    }
  }
  return stop;
}

}  // namespace facet::cli
