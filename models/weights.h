// The weights of one Gemma text decoder as the forward pass reads them.
// Matrices are zero-copy WeightRefs into the mapped checkpoint; the small
// vectors (norms, scales) are converted to fp32 at load, with Gemma 2/3's
// "1 + w" folded in so every RMSNorm multiplies by its weight directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/weight.h"
#include "models/config.h"
#include "parallel/shard.h"

namespace facet {

struct LayerWeights {
  std::vector<float> attn_norm;       // [H] input_layernorm
  std::vector<float> post_attn_norm;  // [H]
  std::vector<float> ffn_norm;        // [H] pre_feedforward_layernorm
  std::vector<float> post_ffn_norm;   // [H]
  std::vector<float> q_norm, k_norm;  // [head_dim] (Gemma 3/4; empty otherwise)

  WeightRef q;  // [Nq·D, H]
  WeightRef k;  // [Nkv·D, H]
  WeightRef v;  // [Nkv·D, H]; data == nullptr on K=V layers
  WeightRef o;  // [H, Nq·D]

  WeightRef gate;  // [I, H]
  WeightRef up;    // [I, H]
  WeightRef down;  // [H, I]

  // Gemma 4 mixture of experts (empty when the layer has none).
  std::vector<float> ffn_norm_2;        // [H] pre_feedforward_layernorm_2
  std::vector<float> post_ffn_norm_1;   // [H] after the dense branch
  std::vector<float> post_ffn_norm_2;   // [H] after the experts
  std::vector<float> router_scale;      // [H]
  std::vector<float> per_expert_scale;  // [E]
  WeightRef router;                     // [E, H]
  WeightRef experts_gate_up;            // [E·2F, H]
  WeightRef experts_down;               // [E·H, F]

  float layer_scalar = 1.0f;  // Gemma 4: multiplies the layer's whole output

  // Tensor/expert parallelism (whole ranges on a single rank): the query and
  // KV heads q/k/v/o hold, whether this rank's o_proj partial counts in the
  // all-reduce (false on ranks that duplicate a query head), and the experts
  // experts_gate_up/experts_down hold.
  parallel::HeadShard heads;
  parallel::Range experts;
  std::vector<float> rope_inv_freq;  // [head_dim / 2], derived from LayerConfig
};

struct ModelWeights {
  WeightRef embed;    // [V/tp, H] (rows `vocab` of the checkpoint's [V, H])
  WeightRef lm_head;  // [V/tp, H]; the embedding when tied
  parallel::Range vocab;  // the embedding/LM-head rows this rank holds ([0, V) unsharded)
  std::vector<float> final_norm;  // [H]
  float embed_scale = 1.0f;       // sqrt(H), rounded to the embedding dtype
  std::vector<LayerWeights> layers;
  // Keeps the mapped files (or any owned buffers) alive.
  std::shared_ptr<const void> storage;
};

// Which slice of the checkpoint a rank loads (tp = ep = 1: everything).
// tp splits attention heads, MLP width and vocabulary; ep splits experts.
struct ShardSpec {
  int tp = 1, tp_rank = 0;
  int ep = 1, ep_rank = 0;
  bool sharded() const { return tp > 1 || ep > 1; }
};

// The config one rank runs: per-layer head counts and MLP width of its
// shard, so activations and KV caches sized from it hold only the shard.
absl::StatusOr<ModelConfig> ShardConfig(const ModelConfig& config, const ShardSpec& shard);

// Loads an HF safetensors checkpoint (file, directory or sharded index) for
// `config`. Every tensor's presence, dtype and shape is checked against the
// config; errors name the file, the tensor and the mismatch.
// With a ShardSpec, only this rank's slices are read: rows zero-copy from
// the mapping, o_proj/down_proj columns copied (the only owned matrices).
absl::StatusOr<ModelWeights> LoadSafetensorsWeights(const ModelConfig& config,
                                                    const std::string& path,
                                                    const ShardSpec& shard = {});

// Fills the per-layer RoPE tables from the config (shared by every loader).
void ComputeRopeTables(const ModelConfig& config, ModelWeights* weights);

}  // namespace facet
