#include "models/layer.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "parallel/linear.h"

namespace facet {

void Activations::Reserve(const ModelConfig& cfg, int64_t T) {
  int64_t q = 0, kv = 0, inter = 0;
  for (const LayerConfig& l : cfg.layers) {
    q = std::max<int64_t>(q, l.q_dim());
    kv = std::max<int64_t>(kv, l.kv_dim());
    inter = std::max<int64_t>(inter, l.intermediate_size);
  }
  const int64_t H = cfg.hidden_size;
  h.resize(T * H);
  o.resize(T * H);
  d.resize(T * H);
  this->q.resize(T * q);
  k.resize(T * kv);
  v.resize(T * kv);
  attn.resize(T * q);
  gate_up.resize(T * 2 * inter);
  act.resize(T * inter);
  if (cfg.HasMoe()) {
    expert_ids.resize(T * cfg.top_k_experts);
    expert_weights.resize(T * cfg.top_k_experts);
    moe_workspace.resize(
        cpu::MoeExpertsWorkspaceFloats(T, H, cfg.moe_intermediate_size, cfg.top_k_experts));
  }
}

void Norm(LayerContext& c, const float* x, const std::vector<float>& w, float* y) {
  cpu::RmsNorm(x, w.data(), y, c.T, c.config.hidden_size, c.config.rms_norm_eps,
               /*plus_one=*/false);
}

absl::Status SelfAttention(LayerContext& c, const float* h, float* out) {
  const LayerConfig& l = c.layer;
  const ModelConfig& cfg = c.config;
  const int64_t T = c.T, D = l.head_dim;
  float* q = c.a.q.data();
  RETURN_IF_ERROR(cpu::MatMul(h, T, c.w.q, q, c.pool));
  if (!c.w.q_norm.empty()) {
    cpu::RmsNorm(q, c.w.q_norm.data(), q, T * l.num_heads, D, cfg.rms_norm_eps, false);
  }
  cpu::Rope(q, c.positions, T, l.num_heads, D, c.w.rope_inv_freq.data());

  const int64_t kv_row = l.kv_dim();
  const int64_t q_row = l.q_dim();
  float* k = c.a.k.data();
  float* v = c.a.v.data();
  if (l.owns_kv()) {
    RETURN_IF_ERROR(cpu::MatMul(h, T, c.w.k, k, c.pool));
    if (l.k_eq_v) {
      // V is the raw K projection, taken before k_norm and RoPE (spec §4.8).
      std::memcpy(v, k, sizeof(float) * T * kv_row);
    } else {
      RETURN_IF_ERROR(cpu::MatMul(h, T, c.w.v, v, c.pool));
    }
    if (!c.w.k_norm.empty()) {
      cpu::RmsNorm(k, c.w.k_norm.data(), k, T * l.num_kv_heads, D, cfg.rms_norm_eps, false);
    }
    if (cfg.v_norm) cpu::RmsNorm(v, nullptr, v, T * l.num_kv_heads, D, cfg.rms_norm_eps, false);
    cpu::Rope(k, c.positions, T, l.num_kv_heads, D, c.w.rope_inv_freq.data());
  }

  cpu::AttentionParams p;
  p.num_heads = l.num_heads;
  p.num_kv_heads = l.num_kv_heads;
  p.head_dim = D;
  p.scale = cfg.attention_scale;
  p.softcap = cfg.attn_logit_softcap;
  p.window = l.is_sliding() ? l.sliding_window : 0;
  for (const SeqSegment& s : c.segments) {
    if (l.owns_kv()) c.kv->Write(c.index, s, k + s.token_begin * kv_row, v + s.token_begin * kv_row);
    // A sliding layer only needs the last window-1 keys before this segment.
    int64_t kv_begin = 0;
    if (l.is_sliding()) kv_begin = std::max<int64_t>(0, s.pos0 - (l.sliding_window - 1));
    const int64_t kv_end = s.pos0 + s.num_tokens;
    const float* kc;
    const float* vc;
    c.kv->Read(c.index, s, kv_begin, kv_end, &kc, &vc);
    p.num_q_tokens = s.num_tokens;
    RETURN_IF_ERROR(cpu::Attention(p, q + s.token_begin * q_row, c.positions + s.token_begin, kc, vc,
                                   kv_end - kv_begin, kv_begin, c.a.attn.data() + s.token_begin * q_row,
                                   c.pool));
  }
  RETURN_IF_ERROR(cpu::MatMul(c.a.attn.data(), T, c.w.o, out, c.pool));
  // A rank that duplicates another's query head adds nothing to the sum.
  if (!c.w.heads.reduces_output) std::fill(out, out + T * cfg.hidden_size, 0.0f);
  return parallel::RowParallelReduce(c.tp, out, T * cfg.hidden_size);
}

absl::Status GeGluMlp(LayerContext& c, const WeightRef& gate, const WeightRef& up,
                      const WeightRef& down, const float* h, float* out) {
  const int64_t T = c.T, I = gate.rows;
  // gate and up are separate checkpoint tensors; the GeGLU kernel reads each
  // row as [gate | up], so the two projections are interleaved per row.
  float* g = c.a.act.data();
  float* gu = c.a.gate_up.data();
  RETURN_IF_ERROR(cpu::MatMul(h, T, gate, g, c.pool));
  for (int64_t t = 0; t < T; ++t) std::memcpy(gu + t * 2 * I, g + t * I, sizeof(float) * I);
  RETURN_IF_ERROR(cpu::MatMul(h, T, up, g, c.pool));
  for (int64_t t = 0; t < T; ++t) std::memcpy(gu + t * 2 * I + I, g + t * I, sizeof(float) * I);
  cpu::GeGlu(gu, T, I, g);
  RETURN_IF_ERROR(cpu::MatMul(g, T, down, out, c.pool));
  return parallel::RowParallelReduce(c.tp, out, T * c.config.hidden_size);
}

absl::Status AttentionResidual(LayerContext& c, float* x) {
  float* h = c.a.h.data();
  float* o = c.a.o.data();
  Norm(c, x, c.w.attn_norm, h);
  RETURN_IF_ERROR(SelfAttention(c, h, o));
  Norm(c, o, c.w.post_attn_norm, o);
  cpu::AddInPlace(x, o, c.T * c.config.hidden_size);
  return absl::OkStatus();
}

absl::Status DenseFeedForward(LayerContext& c, const float* x, float* out) {
  float* h = c.a.h.data();
  Norm(c, x, c.w.ffn_norm, h);
  RETURN_IF_ERROR(GeGluMlp(c, c.w.gate, c.w.up, c.w.down, h, out));
  Norm(c, out, c.w.post_ffn_norm, out);
  return absl::OkStatus();
}

}  // namespace facet
