// facet chat: an interactive conversation in the terminal, the model's reply
// streamed token by token as it is produced.
//
//   facet chat --model gemma-3-270m-q4_k_m.gguf [--system "Be brief."]
// Type a message and press Enter; /reset starts over, /exit (or EOF) quits.
#include <iostream>
#include <memory>
#include <string>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/load.h"
#include "core/thread_pool.h"
#include "models/model.h"
#include "worker/generator.h"

namespace facet::cli {
namespace {

struct ChatCmdOptions {
  std::string model;
  std::string system;
  int threads = 0;
  bool thinking = false;
  SamplingParams sampling;
};

int RunChat(ChatCmdOptions opt) {
  ThreadPool pool(opt.threads);
  auto model = Model::Load(opt.model, &pool);
  if (!model.ok()) {
    std::cerr << "facet chat: " << model.status().message() << "\n";
    return 2;
  }
  auto tok = LoadTokenizer(opt.model);
  if (!tok.ok()) {
    std::cerr << "facet chat: " << tok.status().message() << "\n";
    return 2;
  }
  const ModelConfig& cfg = (*model)->config();
  const ChatFormat format = ChatFormatFor(cfg.family);
  for (int32_t id : DefaultStopTokens(cfg, tok->get())) opt.sampling.stop_token_ids.push_back(id);
  ChatOptions chat_opts;
  chat_opts.enable_thinking = opt.thinking;

  const bool interactive = isatty(STDIN_FILENO);
  std::vector<ChatMessage> history;
  if (!opt.system.empty()) history.push_back(ChatMessage::Text("system", opt.system));
  std::string line;
  for (;;) {
    if (interactive) std::cout << "\n> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    if (line == "/reset") {
      history.resize(opt.system.empty() ? 0 : 1);
      std::cout << "(conversation reset)\n";
      continue;
    }
    history.push_back(ChatMessage::Text("user", line));
    auto rendered = RenderChat(format, history, /*add_generation_prompt=*/true, chat_opts);
    if (!rendered.ok()) {
      std::cerr << "facet chat: " << rendered.status().message() << "\n";
      history.pop_back();
      continue;
    }
    // The whole conversation is prefilled each turn; the template already
    // starts with <bos>.
    std::vector<int32_t> prompt = (*tok)->Encode(*rendered, /*add_bos=*/false);
    IncrementalDetokenizer detok(**tok);
    std::string reply;
    GenerateOptions gen;
    gen.on_token = [&](int32_t id) {
      std::string piece = detok.Push(id);
      reply += piece;
      std::cout << piece << std::flush;
      return true;
    };
    opt.sampling.seed += 1;  // a new draw each turn, still reproducible from --seed
    auto result = Generate(**model, prompt, opt.sampling, gen);
    if (!result.ok()) {
      std::cerr << "\nfacet chat: " << result.status().message() << "\n";
      history.pop_back();
      continue;
    }
    std::string rest = detok.Flush();
    reply += rest;
    std::cout << rest << "\n";
    history.push_back(ChatMessage::Text("assistant", reply));
  }
  return 0;
}

}  // namespace

void RegisterChat(CLI::App& app) {
  auto opt = std::make_shared<ChatCmdOptions>();
  opt->sampling.max_tokens = 512;
  CLI::App* cmd = app.add_subcommand("chat", "Interactive chat with streaming replies");
  cmd->add_option("--model", opt->model, "model directory or .gguf file")->required();
  cmd->add_option("--system", opt->system, "system prompt");
  cmd->add_option("--max-tokens", opt->sampling.max_tokens, "tokens per reply")->capture_default_str();
  cmd->add_option("--temperature", opt->sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", opt->sampling.top_k, "0 = off");
  cmd->add_option("--top-p", opt->sampling.top_p, "1 = off");
  cmd->add_option("--min-p", opt->sampling.min_p, "0 = off");
  cmd->add_option("--repetition-penalty", opt->sampling.repetition_penalty, "1 = off");
  cmd->add_option("--seed", opt->sampling.seed, "sampling seed");
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all cores)");
  cmd->add_flag("--thinking", opt->thinking, "Gemma 4: enable the thinking channel");
  cmd->callback([opt] { SetExitCode(RunChat(*opt)); });
}

}  // namespace facet::cli
