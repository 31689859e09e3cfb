#include "kernels/cpu/ops_check.h"

#include <algorithm>
#include <string>

namespace facet::cpu::internal {
namespace {

std::string Shape(const WeightRef& w) {
  return absl::StrCat(std::string(WeightFormatName(w.format)), "[", w.rows, ", ", w.cols, "]");
}

}  // namespace

bool IsFloatFormat(WeightFormat f) {
  return f == WeightFormat::kF32 || f == WeightFormat::kF16 || f == WeightFormat::kBF16;
}

absl::Status CheckMatMul(const float* x, int64_t m, const WeightRef& w, const float* y) {
  if (m < 0 || w.rows < 0 || w.cols < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: negative size, m=", m, " weight ", Shape(w)));
  }
  if (m == 0 || w.rows == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr || (w.data == nullptr && w.cols > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul: null pointer, weight ", Shape(w)));
  }
  if (w.cols % BlockSize(w.format) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: weight ", Shape(w), " has cols not a multiple of the ",
                     std::string(WeightFormatName(w.format)), " block size ",
                     BlockSize(w.format)));
  }
  return absl::OkStatus();
}

absl::Status CheckAttention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                            const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                            const float* out) {
  if (p.num_q_tokens < 0 || p.num_heads <= 0 || p.num_kv_heads <= 0 || p.head_dim <= 0 ||
      num_kv < 0 || p.window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Attention: bad sizes: tokens=", p.num_q_tokens, " heads=", p.num_heads,
        " kv_heads=", p.num_kv_heads, " head_dim=", p.head_dim, " num_kv=", num_kv,
        " window=", p.window));
  }
  if (p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Attention: ", p.num_heads,
                                                   " query heads are not a multiple of ",
                                                   p.num_kv_heads, " kv heads"));
  }
  if (!(p.softcap >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("Attention: softcap ", p.softcap, " < 0"));
  }
  if (p.num_q_tokens == 0) return absl::OkStatus();
  if (q == nullptr || q_pos == nullptr || out == nullptr ||
      (num_kv > 0 && (k == nullptr || v == nullptr))) {
    return absl::InvalidArgumentError("Attention: null pointer");
  }
  for (int64_t t = 0; t < p.num_q_tokens; ++t) {
    // The newest visible key is min(qpos, last cached); the oldest allowed is
    // max(kv_pos0, qpos - window + 1). An empty range means nothing to attend.
    const int64_t qpos = q_pos[t];
    const int64_t newest = std::min<int64_t>(qpos, kv_pos0 + num_kv - 1);
    int64_t oldest = kv_pos0;
    if (p.window > 0) oldest = std::max<int64_t>(oldest, qpos - p.window + 1);
    if (newest < oldest) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Attention: query ", t, " at position ", qpos, " sees no key (cached positions ",
          kv_pos0, "..", kv_pos0 + num_kv - 1, ", window ", p.window, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                           const WeightRef& router_proj, const float* per_expert_scale,
                           int64_t top_k, const int32_t* expert_ids, const float* expert_weights) {
  if (T < 0 || H <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: bad sizes T=", T, " H=", H));
  }
  if (router_proj.cols != H || router_proj.rows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: router proj ", Shape(router_proj),
                                                   " does not match hidden size ", H));
  }
  if (top_k <= 0 || top_k > router_proj.rows) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: top_k ", top_k, " not in [1, ",
                                                   router_proj.rows, "]"));
  }
  if (T == 0) return absl::OkStatus();
  if (x1 == nullptr || router_scale == nullptr || per_expert_scale == nullptr ||
      expert_ids == nullptr || expert_weights == nullptr || router_proj.data == nullptr) {
    return absl::InvalidArgumentError("MoeRoute: null pointer");
  }
  return absl::OkStatus();
}

absl::Status CheckMoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                             const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                             const WeightRef& down, int64_t num_experts, const float* out,
                             int64_t* F) {
  if (T < 0 || top_k <= 0 || num_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("MoeExperts: bad sizes T=", T,
                                                   " top_k=", top_k, " experts=", num_experts));
  }
  const int64_t H = gate_up.cols;
  if (H <= 0 || gate_up.rows <= 0 || gate_up.rows % (2 * num_experts) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoeExperts: gate_up ", Shape(gate_up), " is not [", num_experts, "·2F, H]"));
  }
  *F = gate_up.rows / (2 * num_experts);
  if (down.rows != num_experts * H || down.cols != *F) {
    return absl::InvalidArgumentError(absl::StrCat("MoeExperts: down ", Shape(down),
                                                   " is not [", num_experts, "·", H, ", ", *F,
                                                   "] to match gate_up ", Shape(gate_up)));
  }
  if (T == 0) return absl::OkStatus();
  if (x == nullptr || expert_ids == nullptr || expert_weights == nullptr || out == nullptr ||
      gate_up.data == nullptr || down.data == nullptr) {
    return absl::InvalidArgumentError("MoeExperts: null pointer");
  }
  for (int64_t i = 0; i < T * top_k; ++i) {
    if (expert_ids[i] < 0 || expert_ids[i] >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("MoeExperts: token ", i / top_k,
                                                     " routed to expert ", expert_ids[i],
                                                     " of ", num_experts));
    }
  }
  return absl::OkStatus();
}

}  // namespace facet::cpu::internal
