// facet plan: a dry run of the coordinator's shard planner (DESIGN.md §4).
//
//   facet plan --config tests/data/configs/gemma-4-31B-it/config.json --ranks 2 --memory-gb 80
//   facet plan --config DIR --ranks 8 --memory-gb 80 --ep 8 --context 262144 --json
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "coordinator/shard_planner.h"
#include "models/config.h"

namespace facet::cli {
namespace {

struct PlanCmdOptions {
  std::string config;
  int ranks = 1;
  double memory_gb = 80;
  int64_t context = 0;
  int tp = 0;
  int ep = 0;
  int weight_bytes = 2;
  int kv_bytes = 2;
  double memory_fraction = 0.9;
  bool json = false;
};

nlohmann::json ToJson(const ShardPlan& p) {
  nlohmann::json j = {{"tp", p.tp}, {"ep", p.ep}, {"max_context", p.max_context},
                      {"total_params", p.total_params}, {"kv_bytes_per_sequence", p.kv_bytes_per_sequence},
                      {"unused_ranks", p.unused_ranks}, {"note", p.note}};
  for (const KvKind& k : p.kv_kinds) {
    j["kv_kinds"].push_back({{"name", k.name}, {"layers", k.layers}, {"kv_heads_per_rank", k.kv_heads_per_rank},
                             {"head_dim", k.head_dim}, {"window", k.window},
                             {"bytes_per_token_layer", k.bytes_per_token_layer}});
  }
  for (const GroupPlan& g : p.groups) j["groups"].push_back({{"id", g.id}, {"ranks", g.ranks}});
  for (const RankPlan& r : p.ranks) {
    j["ranks"].push_back({{"rank", r.rank}, {"group", r.group}, {"tp_rank", r.tp_rank}, {"ep_rank", r.ep_rank},
                          {"weight_bytes", r.weight_bytes}, {"kv_budget_bytes", r.kv_budget_bytes},
                          {"kv_tokens", r.kv_tokens}, {"max_sequences", r.max_sequences}, {"slices", r.slices}});
  }
  return j;
}

int RunPlan(const PlanCmdOptions& opt) {
  auto cfg = LoadModelConfig(opt.config);
  if (!cfg.ok()) {
    std::cerr << "facet plan: " << cfg.status().message() << "\n";
    return 2;
  }
  if (opt.ranks < 1 || !(opt.memory_gb > 0)) {
    std::cerr << "facet plan: --ranks and --memory-gb must be positive\n";
    return 2;
  }
  std::vector<RankResources> ranks(opt.ranks);
  for (int i = 0; i < opt.ranks; ++i) {
    ranks[i].rank = i;
    ranks[i].memory_bytes = int64_t(opt.memory_gb * 1e9);
  }
  PlanOptions po;
  po.weight_bytes = opt.weight_bytes;
  po.kv_bytes = opt.kv_bytes;
  po.max_context = opt.context;
  po.tp = opt.tp;
  po.ep = opt.ep;
  po.memory_fraction = opt.memory_fraction;
  auto plan = PlanShards(*cfg, ranks, po);
  if (!plan.ok()) {
    std::cerr << "facet plan: " << plan.status().message() << "\n";
    return 1;
  }
  if (opt.json) {
    std::cout << ToJson(*plan).dump(2) << "\n";
  } else {
    std::cout << DescribeConfig(*cfg) << "\n" << DescribePlan(*plan);
  }
  return 0;
}

}  // namespace

void RegisterPlan(CLI::App& app) {
  auto opt = std::make_shared<PlanCmdOptions>();
  CLI::App* cmd = app.add_subcommand("plan", "dry run of the shard planner: groups, bytes per rank, KV tokens");
  cmd->add_option("--config", opt->config, "config.json or a model directory")->required();
  cmd->add_option("--ranks", opt->ranks, "ranks (GPUs or CPU processes)")->capture_default_str();
  cmd->add_option("--memory-gb", opt->memory_gb, "memory per rank, GB (10^9 bytes)")->capture_default_str();
  cmd->add_option("--context", opt->context, "max tokens per sequence (default: the model's)");
  cmd->add_option("--tp", opt->tp, "tensor-parallel size (default: the smallest that fits)");
  cmd->add_option("--ep", opt->ep, "expert-parallel size (MoE only)");
  cmd->add_option("--weight-bytes", opt->weight_bytes, "bytes per weight (2 = bf16, 1 = fp8)")->capture_default_str();
  cmd->add_option("--kv-bytes", opt->kv_bytes, "bytes per cached K/V element")->capture_default_str();
  cmd->add_option("--memory-fraction", opt->memory_fraction, "usable share of each rank's memory")
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "print the plan as JSON");
  cmd->callback([opt] { SetExitCode(RunPlan(*opt)); });
}

}  // namespace facet::cli
