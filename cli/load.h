// Shared loading helpers for the subcommands: a path may be a file or a
// model directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "models/tokenizer.h"

namespace facet::cli {

// tokenizer.json, a directory containing one, or a .gguf file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

}  // namespace facet::cli
