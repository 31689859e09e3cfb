// Gemma 4 decoder layer (spec §3.2): q/k/v norms and K=V in SelfAttention,
// the optional mixture of experts beside the dense MLP, and the per-layer
// scalar on the whole residual stream.
#include "models/layer.h"

#include "kernels/cpu/ops.h"
#include "parallel/moe.h"

namespace facet {
namespace {

// f [T, H] = post_ffn_norm(post_ffn_norm_1(mlp(ffn_norm(x1))) +
//                          post_ffn_norm_2(experts(ffn_norm_2(x1), route(x1))))
absl::Status MoeFeedForward(LayerContext& c, const float* x1, float* f) {
  const ModelConfig& cfg = c.config;
  const int64_t T = c.T, H = cfg.hidden_size, K = cfg.top_k_experts;
  float* h = c.a.h.data();
  float* d = c.a.d.data();
  Norm(c, x1, c.w.ffn_norm, h);
  RETURN_IF_ERROR(GeGluMlp(c, c.w.gate, c.w.up, c.w.down, h, d));
  Norm(c, d, c.w.post_ffn_norm_1, d);  // the dense branch's own post-norm

  // The router reads the un-normed residual x1 (spec §5.1).
  RETURN_IF_ERROR(cpu::MoeRoute(x1, T, H, c.w.router_scale.data(), c.w.router,
                                c.w.per_expert_scale.data(), K, cfg.rms_norm_eps,
                                c.a.expert_ids.data(), c.a.expert_weights.data(), c.pool));
  Norm(c, x1, c.w.ffn_norm_2, h);
  if (c.ep != nullptr && c.ep->size() > 1) {
    // Experts split over the EP group: dispatch, run, combine (parallel/moe.h).
    const int64_t F = cfg.moe_intermediate_size;
    RETURN_IF_ERROR(parallel::ExpertParallelMoe(
        *c.ep, h, T, H, c.a.expert_ids.data(), c.a.expert_weights.data(), K, cfg.num_experts,
        {c.w.experts_gate_up, c.w.experts}, {c.w.experts_down, c.w.experts}, F, f, c.a.ep,
        c.pool));
  } else {
    RETURN_IF_ERROR(cpu::MoeExperts(h, T, c.a.expert_ids.data(), c.a.expert_weights.data(), K,
                                    c.w.experts_gate_up, c.w.experts_down, cfg.num_experts, f,
                                    c.a.moe_workspace.data(), c.pool));
  }
  Norm(c, f, c.w.post_ffn_norm_2, f);
  cpu::AddInPlace(f, d, T * H);
  Norm(c, f, c.w.post_ffn_norm, f);
  return absl::OkStatus();
}

}  // namespace

absl::Status Gemma4Layer(LayerContext& c, float* x) {
  RETURN_IF_ERROR(AttentionResidual(c, x));  // x is now x1, the residual the FFN adds to
  float* f = c.a.o.data();
  if (c.layer.moe) {
    RETURN_IF_ERROR(MoeFeedForward(c, x, f));
  } else {
    RETURN_IF_ERROR(DenseFeedForward(c, x, f));
  }
  const int64_t n = c.T * c.config.hidden_size;
  cpu::AddInPlace(x, f, n);
  if (c.config.layer_scalar) cpu::Scale(x, n, c.w.layer_scalar);
  return absl::OkStatus();
}

}  // namespace facet
