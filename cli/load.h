// Shared loading helpers for the subcommands: a path may be a file or a
// model directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/tokenizer.h"

namespace facet::cli {

// tokenizer.json, a directory containing one, or a .gguf file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

// The chat template of a model family.
ChatFormat ChatFormatFor(ModelFamily family);

// Tokens that end a reply: the config's EOS ids and, when the tokenizer has
// them, the end-of-turn markers (<end_of_turn> for Gemma 2/3, <turn|> for 4).
std::vector<int32_t> DefaultStopTokens(const ModelConfig& config, const Tokenizer* tok);

}  // namespace facet::cli
