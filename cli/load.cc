#include "cli/load.h"

#include <filesystem>

#include "core/status.h"

namespace facet::cli {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(path)) file = path + "/tokenizer.json";
  ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::FromJsonFile(file));
  return std::make_unique<Tokenizer>(std::move(tok));
}

}  // namespace facet::cli
