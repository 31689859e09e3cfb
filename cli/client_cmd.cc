// facet client: talks to a `facet serve` (or any facet.v1.Facet server).
//
//   facet client --addr 127.0.0.1:50051 --prompt "Why is the sky blue?" --chat
//   facet client --addr 127.0.0.1:50051 --prompt-ids 2,17,99 --max-tokens 8 --json
//   facet client --addr 127.0.0.1:50051 --health | --stats | --list-models
//
// Text is printed as the chunks arrive. On a gRPC error: the status code and
// message on stderr, exit 1 (2 for INVALID_ARGUMENT / OUT_OF_RANGE / NOT_FOUND).
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "facet/v1/facet.grpc.pb.h"

namespace facet::cli {
namespace {

struct ClientCmdOptions {
  std::string addr = "127.0.0.1:50051";
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  std::string system;
  bool chat = false;
  bool json = false;
  bool health = false;
  bool stats = false;
  bool list_models = false;
  bool tokenize = false;
  int32_t max_tokens = 0;  // 0: the server's default
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 1;
  int64_t seed = -1;       // -1: the server picks
  std::vector<std::string> stop;
  double timeout_s = 0;    // 0: no deadline
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

int Fail(const grpc::Status& s) {
  std::cerr << "facet client: " << CodeName(s.error_code()) << ": " << s.error_message() << "\n";
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND: return 2;
    default: return 1;
  }
}

int Usage(const std::string& message) {
  std::cerr << "facet client: " << message << "\n";
  return 2;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  std::cout << out;
}

void SetDeadline(grpc::ClientContext* ctx, double timeout_s) {
  if (timeout_s > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
}

v1::SamplingParams Sampling(const ClientCmdOptions& opt) {
  v1::SamplingParams s;
  s.set_temperature(opt.temperature);
  s.set_top_k(opt.top_k);
  s.set_top_p(opt.top_p);
  if (opt.seed >= 0) s.set_seed(static_cast<uint64_t>(opt.seed));
  if (opt.max_tokens != 0) s.set_max_tokens(opt.max_tokens);
  for (const std::string& stop : opt.stop) s.add_stop(stop);
  return s;
}

int Stream(v1::Facet::Stub& stub, const ClientCmdOptions& opt) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, opt.timeout_s);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  if (opt.chat) {
    v1::ChatRequest request;
    request.set_model(opt.model);
    if (!opt.system.empty()) {
      auto* m = request.add_messages();
      m->set_role("system");
      m->set_content(opt.system);
    }
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content(opt.prompt);
    *request.mutable_sampling() = Sampling(opt);
    reader = stub.Chat(&ctx, request);
  } else {
    v1::GenerateRequest request;
    request.set_model(opt.model);
    request.set_prompt(opt.prompt);
    for (absl::string_view part : absl::StrSplit(opt.prompt_ids, ',', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id)) {
        return Usage("--prompt-ids: \"" + std::string(part) + "\" is not an integer");
      }
      request.add_prompt_token_ids(id);
    }
    *request.mutable_sampling() = Sampling(opt);
    reader = stub.Generate(&ctx, request);
  }

  v1::GenerateResponse chunk;
  std::vector<int32_t> ids;
  std::string text;
  v1::GenerateResponse last;
  std::optional<uint64_t> seed;
  while (reader->Read(&chunk)) {
    ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    text += chunk.text();
    if (chunk.has_seed()) seed = chunk.seed();
    if (!opt.json && !chunk.text().empty()) std::cout << chunk.text() << std::flush;
    last = chunk;
  }
  grpc::Status status = reader->Finish();
  if (!opt.json && (!text.empty() || !ids.empty())) {
    // A model served without a tokenizer streams ids only.
    if (text.empty()) {
      for (int32_t id : ids) std::cout << id << " ";
    }
    std::cout << "\n";
  }
  if (!status.ok()) return Fail(status);
  const std::string finish = v1::FinishReason_Name(last.finish_reason());
  if (opt.json) {
    nlohmann::json j = {{"request_id", last.request_id()},
                        {"ids", ids},
                        {"text", text},
                        {"finish_reason", finish},
                        {"prompt_tokens", last.usage().prompt_tokens()},
                        {"completion_tokens", last.usage().completion_tokens()}};
    if (seed) j["seed"] = *seed;
    std::cout << j.dump() << "\n";
  } else {
    std::cerr << "[" << last.usage().prompt_tokens() << " prompt tokens, "
              << last.usage().completion_tokens() << " generated, " << finish << "]\n";
  }
  return 0;
}

int RunClient(const ClientCmdOptions& opt) {
  auto channel = grpc::CreateChannel(opt.addr, grpc::InsecureChannelCredentials());
  auto stub = v1::Facet::NewStub(channel);
  const int modes = opt.health + opt.stats + opt.list_models + opt.tokenize;
  if (modes > 1) return Usage("pass at most one of --health, --stats, --list-models, --tokenize");

  if (opt.health) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt.timeout_s > 0 ? opt.timeout_s : 30);
    v1::HealthRequest request;
    request.set_model(opt.model);
    v1::HealthResponse response;
    grpc::Status s = stub->Health(&ctx, request, &response);
    if (!s.ok()) return Fail(s);
    if (opt.json) {
      PrintJson(response);
    } else {
      std::cout << v1::HealthResponse::ServingStatus_Name(response.status()) << ": "
                << response.message() << "\n";
    }
    return response.status() == v1::HealthResponse::SERVING ? 0 : 1;
  }
  if (opt.stats) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt.timeout_s);
    v1::StatsRequest request;
    request.set_model(opt.model);
    v1::StatsResponse response;
    grpc::Status s = stub->Stats(&ctx, request, &response);
    if (!s.ok()) return Fail(s);
    PrintJson(response);
    return 0;
  }
  if (opt.list_models) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt.timeout_s);
    v1::ListModelsResponse response;
    grpc::Status s = stub->ListModels(&ctx, v1::ListModelsRequest{}, &response);
    if (!s.ok()) return Fail(s);
    PrintJson(response);
    return 0;
  }
  if (opt.tokenize) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt.timeout_s);
    v1::TokenizeRequest request;
    request.set_model(opt.model);
    request.set_text(opt.prompt);
    v1::TokenizeResponse response;
    grpc::Status s = stub->Tokenize(&ctx, request, &response);
    if (!s.ok()) return Fail(s);
    PrintJson(response);
    return 0;
  }
  if (opt.prompt.empty() && opt.prompt_ids.empty()) {
    return Usage("pass --prompt or --prompt-ids (or --health, --stats, --list-models)");
  }
  if (opt.chat && !opt.prompt_ids.empty()) return Usage("--chat takes --prompt text, not ids");
  if (!opt.prompt.empty() && !opt.prompt_ids.empty()) {
    return Usage("pass --prompt or --prompt-ids, not both");
  }
  return Stream(*stub, opt);
}

}  // namespace

void RegisterClient(CLI::App& app) {
  auto opt = std::make_shared<ClientCmdOptions>();
  CLI::App* cmd = app.add_subcommand("client", "Call a facet server (Generate, Chat, Health, ...)");
  cmd->add_option("--addr", opt->addr, "server address HOST:PORT")->capture_default_str();
  cmd->add_option("--model", opt->model, "model name (default: the server's only model)");
  cmd->add_option("--prompt", opt->prompt, "prompt text (the user message with --chat)");
  cmd->add_option("--prompt-ids", opt->prompt_ids, "prompt as comma-separated token ids");
  cmd->add_flag("--chat", opt->chat, "send the prompt as a user message (Chat RPC)");
  cmd->add_option("--system", opt->system, "system message for --chat");
  cmd->add_option("--max-tokens", opt->max_tokens, "tokens to generate (default: the server's)");
  cmd->add_option("--temperature", opt->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", opt->top_k, "0 = off");
  cmd->add_option("--top-p", opt->top_p, "1 = off");
  cmd->add_option("--seed", opt->seed, "sampling seed (default: the server picks one)");
  cmd->add_option("--stop", opt->stop, "stop string (repeatable)");
  cmd->add_option("--timeout", opt->timeout_s, "deadline in seconds (0 = none)");
  cmd->add_flag("--json", opt->json, "print one JSON object at the end instead of streaming text");
  cmd->add_flag("--health", opt->health, "print the server's health; exit 0 only when serving");
  cmd->add_flag("--stats", opt->stats, "print engine statistics as JSON");
  cmd->add_flag("--list-models", opt->list_models, "print the served models as JSON");
  cmd->add_flag("--tokenize", opt->tokenize, "print the token ids of --prompt as JSON");
  cmd->callback([opt] { SetExitCode(RunClient(*opt)); });
}

}  // namespace facet::cli
