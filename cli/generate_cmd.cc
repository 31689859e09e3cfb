// facet generate: one completion from a model directory.
//
//   facet generate --model DIR --prompt "Why is the sky blue?" --chat --max-tokens 64
//   facet generate --model DIR --prompt-ids 2,17,99 --json
//   mpirun -np 4 facet generate --tp 4 --model DIR --prompt "..."   (rank 0 prints)
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/load.h"
#include "core/thread_pool.h"
#include "models/chat_template.h"
#include "models/model.h"
#include "parallel/communicator.h"
#include "worker/device_registry.h"
#include "worker/generator.h"

namespace facet::cli {
namespace {

struct GenerateCmdOptions {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  bool chat = false;
  bool json = false;
  int threads = 0;
  int tp = 1;  // tensor-parallel ranks (the mpirun world)
  int ep = 0;  // expert-parallel ranks; 0 = same as tp for MoE models
  SamplingParams sampling;
  std::string device = "cpu";  // --device: cpu or cuda (worker/device_registry.h)
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError("--prompt-ids: \"" + std::string(part) + "\" is not an integer");
    }
    ids.push_back(id);
  }
  return ids;
}

int RunGenerate(GenerateCmdOptions opt) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "facet generate: " << s.message() << "\n";
    return s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kOutOfRange ? 2 : 1;
  };
  // One model replica over the launcher's world: every rank runs the same
  // loop and draws the same token from its own vocabulary slice
  // (Sampler::SampleSharded, no logits gather); only rank 0 prints.
  if (absl::Status st = CheckDevice(opt.device); !st.ok()) return fail(st);
  auto world = parallel::CreateWorldCommunicator();
  if (!world.ok()) return fail(world.status());
  const int ep = opt.ep > 0 ? opt.ep : opt.tp;
  if (opt.tp < 1 || std::max(opt.tp, ep) != (*world)->size()) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "--tp ", opt.tp, opt.ep > 0 ? absl::StrCat(" --ep ", opt.ep) : std::string(),
        " needs a world of ", std::max(opt.tp, ep),
        " ranks (run under mpirun -np N); this world has ", (*world)->size())));
  }
  const bool leader = (*world)->rank() == 0;
  auto groups = parallel::MakeProcessGroups(**world, opt.tp, ep);
  if (!groups.ok()) return fail(groups.status());
  ThreadPool pool(opt.threads);
  Model::LoadOptions load;
  load.tp = groups->tp.get();
  load.ep = groups->ep.get();
  auto model = Model::Load(opt.model, &pool, load);
  if (!model.ok()) return fail(model.status());
  const ModelConfig& cfg = (*model)->config();

  std::unique_ptr<Tokenizer> tok;
  if (auto t = LoadTokenizer(opt.model); t.ok()) tok = std::move(*t);

  std::vector<int32_t> prompt;
  if (!opt.prompt_ids.empty()) {
    auto ids = ParseIds(opt.prompt_ids);
    if (!ids.ok()) return fail(ids.status());
    prompt = *ids;
  } else {
    if (!tok) return fail(absl::InvalidArgumentError(opt.model + " has no tokenizer.json; pass --prompt-ids"));
    if (opt.prompt.empty()) return fail(absl::InvalidArgumentError("the prompt is empty"));
    std::string text = opt.prompt;
    if (opt.chat) {
      std::vector<ChatMessage> msgs = {ChatMessage::Text("user", opt.prompt)};
      auto rendered = RenderChat(ChatFormatFor(cfg.family), msgs, /*add_generation_prompt=*/true);
      if (!rendered.ok()) return fail(rendered.status());
      text = *rendered;  // the template starts with <bos>
    }
    prompt = tok->Encode(text, /*add_bos=*/!opt.chat);
  }

  for (int32_t id : DefaultStopTokens(cfg, tok.get())) opt.sampling.stop_token_ids.push_back(id);

  std::unique_ptr<IncrementalDetokenizer> detok;
  if (tok) detok = std::make_unique<IncrementalDetokenizer>(*tok);
  GenerateOptions gen;
  if (!opt.json && detok && leader) {
    gen.on_token = [&](int32_t id) {
      std::cout << detok->Push(id) << std::flush;
      return true;
    };
  }
  auto result = GenerateOn(opt.device, **model, prompt, opt.sampling, gen);
  if (!result.ok()) return fail(result.status());
  if (!leader) return 0;

  if (opt.json) {
    std::vector<int32_t> out_ids = result->ids;
    if (!out_ids.empty() && result->finish == FinishReason::kStop) out_ids.pop_back();
    nlohmann::json j = {{"ids", result->ids},
                        {"prompt_tokens", result->prompt_tokens},
                        {"finish_reason", std::string(FinishReasonName(result->finish))},
                        {"prefill_tok_s", result->prefill_tok_s()},
                        {"decode_tok_s", result->decode_tok_s()}};
    j["text"] = tok ? tok->Decode(out_ids, /*skip_special=*/true) : "";
    std::cout << j.dump() << "\n";
  } else {
    if (detok) std::cout << detok->Flush();
    else for (int32_t id : result->ids) std::cout << id << " ";
    std::cout << "\n";
    std::cerr << "[" << result->prompt_tokens << " prompt tokens, " << result->ids.size()
              << " generated (" << FinishReasonName(result->finish) << "); prefill "
              << result->prefill_tok_s() << " tok/s, decode " << result->decode_tok_s()
              << " tok/s]\n";
  }
  return 0;
}

}  // namespace

void RegisterGenerate(CLI::App& app) {
  auto opt = std::make_shared<GenerateCmdOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate one completion");
  cmd->add_option("--model", opt->model, "model directory (config.json + safetensors)")->required();
  cmd->add_option("--prompt", opt->prompt, "prompt text");
  cmd->add_option("--prompt-ids", opt->prompt_ids, "prompt as comma-separated token ids");
  cmd->add_flag("--chat", opt->chat, "wrap the prompt in the model's chat template");
  cmd->add_option("--max-tokens", opt->sampling.max_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", opt->sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", opt->sampling.top_k, "0 = off");
  cmd->add_option("--top-p", opt->sampling.top_p, "1 = off");
  cmd->add_option("--min-p", opt->sampling.min_p, "0 = off");
  cmd->add_option("--repetition-penalty", opt->sampling.repetition_penalty, "1 = off");
  cmd->add_option("--seed", opt->sampling.seed, "sampling seed (same seed, same output)");
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all cores)");
  cmd->add_option("--tp", opt->tp, "tensor-parallel ranks: run under mpirun -np N with --tp N")
      ->capture_default_str();
  cmd->add_option("--ep", opt->ep, "expert-parallel ranks for MoE models (default: --tp)");
  cmd->add_flag("--json", opt->json, "print one JSON object: ids, text, prefill_tok_s, decode_tok_s");
  cmd->add_option("--device", opt->device, "where the forward runs: cpu or cuda (one GPU, --tp 1)")
      ->capture_default_str();
  cmd->callback([opt] { SetExitCode(RunGenerate(*opt)); });
}

}  // namespace facet::cli
