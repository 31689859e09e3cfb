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

}  // namespace facet::cli
