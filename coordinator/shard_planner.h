// The shard planner (DESIGN.md §1, §5): from a model config and the ranks'
// inventory, choose tensor/expert parallel sizes and engine groups, say which
// slices each rank loads, and how many KV tokens fit beside the weights.
// A pure function: no I/O, no clocks; `facet plan` prints its result and the
// coordinator hands it to registering workers.
//
// Accounting (bf16 weights and KV unless the options say otherwise):
//  - attention: q/o split by TP over query heads; k/v split by TP over KV
//    heads, or replicated (one KV head per rank) when TP exceeds them;
//  - dense MLP (Gemma 4 MoE: the always-on MLP): split by TP over the
//    intermediate width; experts whole, divided over EP ranks (never TP,
//    spec/distributed.md §0);
//  - embedding and LM head: vocabulary-parallel over TP; norms, the MoE
//    router: replicated;
//  - KV per token per layer kind: K and V rows of the rank's KV heads; a
//    sequence holds at most `window` tokens in a sliding layer.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/config.h"

namespace facet {

struct RankResources {
  int rank = 0;
  std::string hostname;
  std::string device = "cpu";
  int64_t memory_bytes = 0;  // device memory (host memory for CPU ranks)
};

struct PlanOptions {
  int64_t weight_bytes = 2;       // per parameter (bf16)
  int64_t kv_bytes = 2;           // per cached element (bf16)
  int64_t max_context = 0;        // 0: the model's max_position_embeddings
  int tp = 0;                     // 0: the smallest that fits
  int ep = 0;                     // 0: 1, or the smallest that fits (MoE)
  double memory_fraction = 0.90;  // of each rank's memory; the rest is workspace and fragmentation
};

struct KvKind {
  std::string name;               // "sliding" / "global"
  int layers = 0;                 // layers of this kind that own KV
  int kv_heads_per_rank = 0;
  int head_dim = 0;
  int64_t window = 0;             // 0: global
  int64_t bytes_per_token_layer = 0;  // K + V of one token in one layer, per rank
};

struct RankPlan {
  int rank = 0;
  int group = 0;
  int tp_rank = 0;
  int ep_rank = 0;
  std::string slices;        // human-readable: heads, MLP columns, vocabulary rows, experts
  int64_t weight_bytes = 0;
  int64_t memory_bytes = 0;
  int64_t kv_budget_bytes = 0;  // memory_fraction * memory - weights
  int64_t kv_tokens = 0;        // tokens of context that fit at max_context (sliding amortised)
  int64_t max_sequences = 0;    // full max_context sequences that fit
};

struct GroupPlan {
  int id = 0;
  std::vector<int> ranks;  // world ranks; ranks[0] is the leader
};

struct ShardPlan {
  int tp = 1;
  int ep = 1;
  int64_t max_context = 0;
  int64_t total_params = 0;
  std::vector<KvKind> kv_kinds;
  int64_t kv_bytes_per_sequence = 0;  // per rank, one sequence at max_context
  std::vector<GroupPlan> groups;      // replicas
  std::vector<RankPlan> ranks;        // by world rank
  std::vector<int> unused_ranks;      // when the world is not a multiple of the group size
  std::string note;                   // why this TP/EP (auto choice)
};

// INVALID_ARGUMENT: no ranks, a rank without memory, bad options, TP not
// dividing the query heads / KV heads / MLP width, EP not dividing the
// experts (or EP on a dense model), TP and EP both > 1 and different, a group
// larger than the world. RESOURCE_EXHAUSTED, with the numbers, when the
// weights plus one max_context sequence fit no allowed layout.
absl::StatusOr<ShardPlan> PlanShards(const ModelConfig& config, std::span<const RankResources> ranks,
                                     const PlanOptions& options);

// Parameters of the whole model (for the plan header and tests).
int64_t CountParameters(const ModelConfig& config);

// A few lines per group and rank, for `facet plan` and logs.
std::string DescribePlan(const ShardPlan& plan);

std::string FormatBytes(int64_t bytes);  // "61.4 GiB"

}  // namespace facet
