// What one decoder layer's forward sees, and the building blocks the family
// files (gemma2.cc, gemma3.cc, gemma4.cc) compose. Each family file is the
// layer's order of operations (spec §3) and nothing else.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "models/config.h"
#include "models/kv_store.h"
#include "models/weights.h"
#include "parallel/communicator.h"
#include "parallel/moe.h"

namespace facet {

// Activation buffers for a forward over T tokens; sized once, reused by every
// layer. Shapes are per call ([T, ...]); capacities are for the largest T.
struct Activations {
  std::vector<float> h;     // [T, H] normed input of a sub-block
  std::vector<float> o;     // [T, H] sub-block output
  std::vector<float> d;     // [T, H] MoE dense branch / scratch
  std::vector<float> q;     // [T, Nq·D]
  std::vector<float> k;     // [T, Nkv·D]
  std::vector<float> v;     // [T, Nkv·D]
  std::vector<float> attn;  // [T, Nq·D]
  std::vector<float> gate_up;  // [T, 2·I]
  std::vector<float> act;      // [T, I]
  std::vector<int32_t> expert_ids;      // [T, top_k]
  std::vector<float> expert_weights;    // [T, top_k]
  std::vector<float> moe_workspace;
  parallel::ExpertParallelBuffers ep;  // dispatch/combine buffers (ep > 1 only)

  void Reserve(const ModelConfig& config, int64_t tokens);
};

struct LayerContext {
  const ModelConfig& config;
  int index;
  const LayerConfig& layer;
  const LayerWeights& w;
  KvStore* kv;
  std::span<const SeqSegment> segments;  // the sequences in this batch
  const int32_t* positions;  // [T] absolute positions
  int64_t T;                 // tokens in the batch, all segments
  Activations& a;
  ThreadPool* pool;
  // Tensor / expert parallel groups; null (or a world of one) on one rank.
  parallel::Communicator* tp = nullptr;
  parallel::Communicator* ep = nullptr;
};

// out [T, H] = o_proj(attention(h)); under TP this rank's heads only, the
// o_proj partial sums all-reduced over the TP group. Projects Q/K/V for the whole batch,
// applies the optional per-head norms (q/k with weights, v weightless) and
// RoPE, stores each segment's K/V (unless the layer reads another layer's
// KV), and attends per segment over its sequence's keys.
absl::Status SelfAttention(LayerContext& c, const float* h, float* out);

// out [T, H] = down(gelu_tanh(gate(h)) ⊙ up(h)). Under TP gate/up hold
// this rank's I/tp rows and down its columns; the partial sums are
// all-reduced here, so `out` is complete on every rank.
absl::Status GeGluMlp(LayerContext& c, const WeightRef& gate, const WeightRef& up,
                      const WeightRef& down, const float* h, float* out);

// x += post_attn_norm(SelfAttention(attn_norm(x))): the attention half of
// every Gemma block (spec §3).
absl::Status AttentionResidual(LayerContext& c, float* x);

// out = post_ffn_norm(GeGluMlp(ffn_norm(x))): the dense feed-forward branch.
absl::Status DenseFeedForward(LayerContext& c, const float* x, float* out);

// y = RMSNorm(x) · w over rows of hidden_size (w already includes any "+1").
void Norm(LayerContext& c, const float* x, const std::vector<float>& w, float* y);

// One decoder layer, in place on the residual stream x [T, H].
using LayerFn = absl::Status (*)(LayerContext& c, float* x);
absl::Status Gemma2Layer(LayerContext& c, float* x);
absl::Status Gemma3Layer(LayerContext& c, float* x);
absl::Status Gemma4Layer(LayerContext& c, float* x);

}  // namespace facet
