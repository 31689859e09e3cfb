// facet tokenize: text -> token ids with a model's tokenizer.
//
//   facet tokenize --tokenizer tokenizer.json --jsonl in.jsonl   # {"text": ...} per line -> {"ids": [...]}
//   facet tokenize --tokenizer DIR --text "Hello" --decode       # ids, then the ids decoded again
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/load.h"
#include "models/tokenizer.h"

namespace facet::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer;
  std::string jsonl;
  std::string text;
  bool no_bos = false;
  bool decode = false;
};

int RunTokenize(const TokenizeOptions& opt) {
  auto tok = LoadTokenizer(opt.tokenizer);
  if (!tok.ok()) {
    std::cerr << "facet tokenize: " << tok.status().message() << "\n";
    return 2;
  }
  const bool add_bos = !opt.no_bos;
  if (!opt.text.empty() || opt.jsonl.empty()) {
    std::vector<int32_t> ids = (*tok)->Encode(opt.text, add_bos);
    nlohmann::json out = {{"ids", ids}};
    if (opt.decode) out["text"] = (*tok)->Decode(ids, /*skip_special=*/true);
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (opt.jsonl != "-") {
    file.open(opt.jsonl);
    if (!file) {
      std::cerr << "facet tokenize: cannot open " << opt.jsonl << "\n";
      return 2;
    }
    in = &file;
  }
  // One output line per input line, in order; a bad line yields an error
  // object in its place so the outputs stay aligned with the inputs.
  int rc = 0;
  std::string line;
  for (int64_t lineno = 1; std::getline(*in, line); ++lineno) {
    if (line.empty()) continue;
    nlohmann::json out;
    auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("text") ||
        !parsed["text"].is_string()) {
      out = {{"error", opt.jsonl + ":" + std::to_string(lineno) +
                           ": expected a JSON object with a string field \"text\""}};
      rc = 1;
    } else {
      std::vector<int32_t> ids = (*tok)->Encode(parsed["text"].get<std::string>(), add_bos);
      out = {{"ids", ids}};
      if (opt.decode) out["text"] = (*tok)->Decode(ids, /*skip_special=*/true);
    }
    std::cout << out.dump() << "\n";
  }
  return rc;
}

}  // namespace

void RegisterTokenize(CLI::App& app) {
  auto opt = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Encode text with a model's tokenizer");
  cmd->add_option("--tokenizer", opt->tokenizer,
                  "tokenizer.json, a model directory holding one, or a .gguf file")
      ->required();
  cmd->add_option("--jsonl", opt->jsonl, "input file of {\"text\": ...} lines ('-' for stdin)");
  cmd->add_option("--text", opt->text, "a single text to encode");
  cmd->add_flag("--no-bos", opt->no_bos, "do not prepend <bos>");
  cmd->add_flag("--decode", opt->decode, "also decode the ids back to text");
  cmd->callback([opt] { SetExitCode(RunTokenize(*opt)); });
}

}  // namespace facet::cli
