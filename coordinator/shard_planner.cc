#include "coordinator/shard_planner.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace facet {
namespace {

constexpr int64_t kGiB = int64_t(1) << 30;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// KV heads a rank holds for a layer with `kv_heads` at TP `tp`.
int KvHeadsPerRank(int kv_heads, int tp) { return kv_heads >= tp ? kv_heads / tp : 1; }

// Parameters one rank holds at (tp, ep). tp = ep = 1 gives the whole model.
int64_t RankParams(const ModelConfig& c, int tp, int ep) {
  const int64_t H = c.hidden_size;
  int64_t n = 0;
  const int64_t embed = CeilDiv(int64_t(c.vocab_size), tp) * H;
  n += embed * (c.tie_word_embeddings ? 1 : 2);
  n += H;  // final norm
  if (c.HasPerLayerEmbeddings()) {
    const int64_t per_layer = int64_t(c.num_layers) * c.hidden_size_per_layer_input;
    n += CeilDiv(int64_t(c.vocab_size_per_layer_input), tp) * per_layer;  // embedding table
    n += H * per_layer;                                                  // model projection (replicated)
  }
  for (const LayerConfig& l : c.layers) {
    const int64_t q = int64_t(l.num_heads / tp) * l.head_dim;
    const int64_t kv = int64_t(KvHeadsPerRank(l.num_kv_heads, tp)) * l.head_dim;
    if (l.owns_kv()) n += H * kv * (l.k_eq_v ? 1 : 2);
    n += 2 * H * q;                                   // q_proj, o_proj
    n += 3 * H * (l.intermediate_size / tp);          // gate, up, down
    n += 4 * H + 2 * int64_t(l.head_dim);             // norms, q/k norms
    if (l.moe) {
      n += H * c.num_experts + c.num_experts;          // router (replicated) + per-expert scales
      n += int64_t(c.num_experts / ep) * 3 * H * c.moe_intermediate_size;
      n += 3 * H;                                      // the MoE block's extra norms
    }
    if (c.HasPerLayerEmbeddings()) n += 2 * H * c.hidden_size_per_layer_input + H;
  }
  return n;
}

std::vector<KvKind> KvKinds(const ModelConfig& c, int tp, int64_t kv_bytes) {
  std::vector<KvKind> kinds;
  for (const LayerConfig& l : c.layers) {
    if (!l.owns_kv()) continue;
    const std::string name(AttentionKindName(l.attention));
    const int heads = KvHeadsPerRank(l.num_kv_heads, tp);
    auto it = std::find_if(kinds.begin(), kinds.end(), [&](const KvKind& k) {
      return k.name == name && k.kv_heads_per_rank == heads && k.head_dim == l.head_dim &&
             k.window == l.sliding_window;
    });
    if (it == kinds.end()) {
      KvKind k;
      k.name = name;
      k.kv_heads_per_rank = heads;
      k.head_dim = l.head_dim;
      k.window = l.sliding_window;
      k.bytes_per_token_layer = 2 * int64_t(heads) * l.head_dim * kv_bytes;
      kinds.push_back(k);
      it = kinds.end() - 1;
    }
    it->layers++;
  }
  return kinds;
}

// Bytes of KV one sequence of `context` tokens holds on one rank.
int64_t SequenceKvBytes(const std::vector<KvKind>& kinds, int64_t context) {
  int64_t b = 0;
  for (const KvKind& k : kinds) {
    const int64_t tokens = k.window > 0 ? std::min(context, k.window) : context;
    b += tokens * k.bytes_per_token_layer * k.layers;
  }
  return b;
}

absl::Status CheckLayout(const ModelConfig& c, int tp, int ep) {
  if (tp < 1 || ep < 1) return absl::InvalidArgumentError("tp and ep must be at least 1");
  if (tp > 1 && ep > 1 && tp != ep) {
    return absl::InvalidArgumentError(absl::StrCat("tp ", tp, " and ep ", ep,
                                                   " must be equal when both exceed 1 (one group of ranks serves both)"));
  }
  if (ep > 1 && !c.HasMoe()) {
    return absl::InvalidArgumentError(absl::StrCat("ep ", ep, ": the model has no experts"));
  }
  if (c.HasMoe() && c.num_experts % ep != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ep ", ep, " does not divide the ", c.num_experts, " experts"));
  }
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const LayerConfig& l = c.layers[i];
    if (l.num_heads % tp != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tp ", tp, " does not divide the ", l.num_heads,
                                                     " query heads (layer ", i, ")"));
    }
    if (l.num_kv_heads % tp != 0 && tp % l.num_kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tp ", tp, " neither divides nor is a multiple of the ",
                                                     l.num_kv_heads, " KV heads (layer ", i, ")"));
    }
    if (l.intermediate_size % tp != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tp ", tp, " does not divide the MLP width ",
                                                     l.intermediate_size, " (layer ", i, ")"));
    }
  }
  return absl::OkStatus();
}

std::string Range(const char* what, int64_t begin, int64_t end) {
  return absl::StrCat(what, " [", begin, ",", end, ")");
}

std::string Slices(const ModelConfig& c, int tp, int tp_rank, int ep, int ep_rank) {
  std::vector<std::string> parts;
  const LayerConfig& l0 = c.layers.front();
  const int qh = l0.num_heads / tp;
  parts.push_back(Range("q heads", int64_t(tp_rank) * qh, int64_t(tp_rank + 1) * qh));
  std::vector<int> kv_counts;
  for (const LayerConfig& l : c.layers) {
    if (std::find(kv_counts.begin(), kv_counts.end(), l.num_kv_heads) == kv_counts.end()) {
      kv_counts.push_back(l.num_kv_heads);
    }
  }
  for (int kvh : kv_counts) {
    const int per = KvHeadsPerRank(kvh, tp);
    // Replicated when tp > kvh: rank r reads KV head r * kvh / tp.
    const int64_t b = kvh >= tp ? int64_t(tp_rank) * per : int64_t(tp_rank) * kvh / tp;
    parts.push_back(absl::StrCat(Range("kv heads", b, b + per), " of ", kvh, kvh < tp ? " (replicated)" : ""));
  }
  const int64_t w = l0.intermediate_size / tp;
  parts.push_back(Range("mlp cols", tp_rank * w, (tp_rank + 1) * w));
  const int64_t v = CeilDiv(c.vocab_size, tp);
  parts.push_back(Range("vocab rows", tp_rank * v, std::min<int64_t>(c.vocab_size, (tp_rank + 1) * v)));
  if (c.HasMoe()) {
    const int64_t e = c.num_experts / ep;
    parts.push_back(Range("experts", ep_rank * e, (ep_rank + 1) * e));
  }
  return absl::StrJoin(parts, ", ");
}

}  // namespace

std::string FormatBytes(int64_t bytes) {
  char buf[64];
  const double b = double(bytes);
  if (bytes >= kGiB) {
    snprintf(buf, sizeof(buf), "%.1f GiB", b / double(kGiB));
  } else if (bytes >= (1 << 20)) {
    snprintf(buf, sizeof(buf), "%.1f MiB", b / double(1 << 20));
  } else if (bytes >= 1024) {
    snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  } else {
    snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  }
  return buf;
}

int64_t CountParameters(const ModelConfig& config) { return RankParams(config, 1, 1); }

absl::StatusOr<ShardPlan> PlanShards(const ModelConfig& c, std::span<const RankResources> ranks,
                                     const PlanOptions& opt) {
  if (ranks.empty()) return absl::InvalidArgumentError("no ranks to plan for");
  if (c.layers.empty()) return absl::InvalidArgumentError("the model has no layers");
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i].memory_bytes <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", i, " (", ranks[i].hostname, ") reports no memory"));
    }
  }
  if (opt.weight_bytes < 1 || opt.kv_bytes < 1 || opt.tp < 0 || opt.ep < 0 || opt.max_context < 0 ||
      !(opt.memory_fraction > 0 && opt.memory_fraction <= 1)) {
    return absl::InvalidArgumentError(
        "plan options: weight_bytes and kv_bytes must be positive, tp/ep/max_context non-negative, "
        "memory_fraction in (0, 1]");
  }
  const int world = int(ranks.size());
  const int64_t context = opt.max_context > 0 ? std::min<int64_t>(opt.max_context, c.max_position_embeddings)
                                              : c.max_position_embeddings;
  int64_t min_mem = ranks[0].memory_bytes;
  for (const RankResources& r : ranks) min_mem = std::min(min_mem, r.memory_bytes);
  const int64_t usable = int64_t(double(min_mem) * opt.memory_fraction);

  // Candidate layouts, smallest group first: replicas scale throughput
  // linearly, so only grow a group when a replica does not fit.
  std::vector<std::pair<int, int>> candidates;
  if (opt.tp > 0 || opt.ep > 0) {
    candidates.push_back({std::max(opt.tp, 1), std::max(opt.ep, 1)});
    RETURN_IF_ERROR(CheckLayout(c, candidates[0].first, candidates[0].second));
    const int g = std::max(candidates[0].first, candidates[0].second);
    if (g > world) {
      return absl::InvalidArgumentError(absl::StrCat("a group of ", g, " ranks (tp ", candidates[0].first, ", ep ",
                                                     candidates[0].second, ") needs more than the ", world,
                                                     " ranks available"));
    }
  } else {
    for (int g = 1; g <= world; g *= 2) {
      if (c.HasMoe()) {
        // Experts stay whole (EP); attention and the dense MLP follow TP = EP.
        if (CheckLayout(c, 1, g).ok()) candidates.push_back({1, g});
      } else if (CheckLayout(c, g, 1).ok()) {
        candidates.push_back({g, 1});
      }
    }
  }

  std::string misses;
  for (auto [tp, ep] : candidates) {
    const int64_t weights = RankParams(c, tp, ep) * opt.weight_bytes;
    std::vector<KvKind> kinds = KvKinds(c, tp, opt.kv_bytes);
    const int64_t seq = SequenceKvBytes(kinds, context);
    if (weights + seq > usable) {
      absl::StrAppend(&misses, "\n  tp ", tp, " ep ", ep, ": weights ", FormatBytes(weights),
                      " + one ", context, "-token sequence ", FormatBytes(seq), " > ", FormatBytes(usable),
                      " usable (", int(opt.memory_fraction * 100), "% of ", FormatBytes(min_mem), ")");
      continue;
    }
    ShardPlan plan;
    plan.tp = tp;
    plan.ep = ep;
    plan.max_context = context;
    plan.total_params = CountParameters(c);
    plan.kv_kinds = kinds;
    plan.kv_bytes_per_sequence = seq;
    const int g = std::max(tp, ep);
    const int groups = world / g;
    for (int gi = 0; gi < groups; ++gi) {
      GroupPlan gp;
      gp.id = gi;
      for (int r = 0; r < g; ++r) gp.ranks.push_back(gi * g + r);
      plan.groups.push_back(gp);
    }
    for (int r = groups * g; r < world; ++r) plan.unused_ranks.push_back(r);
    for (int r = 0; r < groups * g; ++r) {
      RankPlan rp;
      rp.rank = r;
      rp.group = r / g;
      rp.tp_rank = tp > 1 ? r % g : 0;
      rp.ep_rank = ep > 1 ? r % g : 0;
      rp.slices = Slices(c, tp, rp.tp_rank, ep, rp.ep_rank);
      rp.weight_bytes = weights;
      rp.memory_bytes = ranks[r].memory_bytes;
      rp.kv_budget_bytes = int64_t(double(rp.memory_bytes) * opt.memory_fraction) - weights;
      rp.max_sequences = rp.kv_budget_bytes / seq;
      // Tokens at max_context, with each sequence's sliding share amortised.
      rp.kv_tokens = int64_t(double(rp.kv_budget_bytes) / (double(seq) / double(context)));
      plan.ranks.push_back(rp);
    }
    plan.note = opt.tp > 0 || opt.ep > 0
                    ? "tp/ep as requested"
                    : absl::StrCat("smallest group that holds the weights and one ", context, "-token sequence",
                                   misses.empty() ? "" : "; smaller ones do not:", misses);
    return plan;
  }
  if (candidates.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no tp/ep layout of at most ", world,
                                                   " ranks divides the model's heads and experts"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the model (", FormatBytes(CountParameters(c) * opt.weight_bytes), " of weights) does not fit ", world,
      " rank(s) of ", FormatBytes(min_mem), " at a ", context, "-token context:", misses,
      "\n  (more ranks, a larger --tp/--ep, a shorter --context or smaller weights would help)"));
}

std::string DescribePlan(const ShardPlan& p) {
  std::string s = absl::StrCat("plan: tp ", p.tp, ", ep ", p.ep, ", ", p.groups.size(), " group(s), context ",
                               p.max_context, ", ", p.total_params, " parameters\n");
  absl::StrAppend(&s, "  ", p.note, "\n");
  for (const KvKind& k : p.kv_kinds) {
    absl::StrAppend(&s, "  kv ", k.name, ": ", k.layers, " layers x ", k.kv_heads_per_rank, " heads x ", k.head_dim,
                    " dims = ", FormatBytes(k.bytes_per_token_layer), " per token per layer per rank",
                    k.window > 0 ? absl::StrCat(" (window ", k.window, ")") : "", "\n");
  }
  absl::StrAppend(&s, "  kv per sequence at max context: ", FormatBytes(p.kv_bytes_per_sequence), " per rank\n");
  for (const GroupPlan& g : p.groups) {
    absl::StrAppend(&s, "group ", g.id, ": ranks ", absl::StrJoin(g.ranks, ","), " (leader ", g.ranks[0], ")\n");
    for (int r : g.ranks) {
      const RankPlan& rp = p.ranks[r];
      absl::StrAppend(&s, "  rank ", r, ": weights ", FormatBytes(rp.weight_bytes), ", kv budget ",
                      FormatBytes(rp.kv_budget_bytes), ", kv tokens ", rp.kv_tokens, " (", rp.max_sequences,
                      " full-context sequences); ", rp.slices, "\n");
    }
  }
  if (!p.unused_ranks.empty()) absl::StrAppend(&s, "unused ranks: ", absl::StrJoin(p.unused_ranks, ","), "\n");
  return s;
}

}  // namespace facet
