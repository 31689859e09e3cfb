// ModelConfig: everything the forward pass, the KV cache planner and the
// shard planner need to know about a Gemma 2 / 3 / 4 text decoder, with one
// LayerConfig per layer so layer-kind differences (head dim, KV heads, window,
// RoPE, K=V, KV sharing, MLP width) are data, not `if (gemma4)` at call sites.
//
// Built from a Hugging Face config.json (ParseModelConfig / LoadModelConfig);
// the GGUF reader fills the same struct. Source of truth for every default and
// rule here: spec/gemma-architecture.md (§0, §4, §5, §6, §9).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace facet {

enum class ModelFamily { kGemma2, kGemma3, kGemma4 };
enum class AttentionKind { kSliding, kGlobal };
enum class RopeType {
  kDefault,       // inv_freq[i] = theta^(-2i/D) over the whole head
  kLinear,        // kDefault with inv_freq /= factor (Gemma 3 4B+ global layers)
  kProportional,  // Gemma 4 global layers: the first partial_rotary_factor·D/2
                  // pairs use theta^(-2i/D) (denominator = FULL head dim), the
                  // rest have inv_freq 0 (identity); then inv_freq /= factor
};

std::string_view ModelFamilyName(ModelFamily f);      // "gemma2", ...
std::string_view AttentionKindName(AttentionKind k);  // "sliding" / "global"
std::string_view RopeTypeName(RopeType t);            // "default" / "linear" / "proportional"

struct RopeConfig {
  float theta = 10000.0f;
  RopeType type = RopeType::kDefault;
  float factor = 1.0f;                 // divides inv_freq (linear, proportional)
  float partial_rotary_factor = 1.0f;  // < 1 only with kProportional

  // Rotated (cos, sin) pairs for a head of `head_dim`: head_dim/2 except for
  // proportional RoPE, where it is int(partial_rotary_factor·head_dim/2)
  // (Gemma 4 global: 0.25·512/2 = 64). HF `_compute_proportional_rope_parameters`.
  int RotatedPairs(int head_dim) const;
};

struct LayerConfig {
  AttentionKind attention = AttentionKind::kGlobal;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int sliding_window = 0;  // keys with t - s in [0, window-1]; 0 on global layers
  RopeConfig rope;
  bool k_eq_v = false;        // no v_proj: V is the raw (pre-k_norm) K projection
  int kv_source_layer = -1;   // -1: owns its KV; else the layer whose K/V it reads
  int intermediate_size = 0;  // dense MLP width (Gemma 4 MoE: the always-on MLP)
  bool moe = false;           // adds the routed experts (ModelConfig::num_experts...)

  bool is_sliding() const { return attention == AttentionKind::kSliding; }
  bool owns_kv() const { return kv_source_layer < 0; }
  int q_dim() const { return num_heads * head_dim; }      // q_proj rows
  int kv_dim() const { return num_kv_heads * head_dim; }  // k_proj / v_proj rows
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kGemma3;
  std::string model_type;           // top-level config.json model_type ("gemma3", ...)
  bool nested_text_config = false;  // decoder read from "text_config" (VLM wrapper)

  int hidden_size = 0;
  int num_layers = 0;
  int vocab_size = 0;  // embedding rows (262208 for Gemma 3 VLM checkpoints)
  int max_position_embeddings = 0;

  float rms_norm_eps = 1e-6f;
  bool norm_weight_plus_one = false;   // HF Gemma 2/3 norms compute x̂·(1+w)
  bool qk_norm = false;                // per-head q_norm / k_norm (Gemma 3, 4)
  bool v_norm = false;                 // weightless RMSNorm on V (Gemma 4)
  bool layer_scalar = false;           // per-layer learned output scale (Gemma 4)
  float query_pre_attn_scalar = 0.0f;  // 0 where unused (Gemma 4)
  float attention_scale = 1.0f;        // qpas^-1/2 (Gemma 2/3) or 1.0 (Gemma 4)
  float attn_logit_softcap = 0.0f;     // 0 = none
  float final_logit_softcap = 0.0f;    // 0 = none

  // Gemma 4 26B-A4B mixture of experts (0 when absent).
  int num_experts = 0;
  int top_k_experts = 0;
  int moe_intermediate_size = 0;

  // Gemma 4 E2B/E4B per-layer embeddings (0 when absent).
  int hidden_size_per_layer_input = 0;
  int vocab_size_per_layer_input = 0;
  int num_kv_shared_layers = 0;

  int pad_token_id = 0;
  int bos_token_id = 2;
  std::vector<int> eos_token_ids;
  bool tie_word_embeddings = true;

  std::vector<LayerConfig> layers;

  int NumGlobalLayers() const;
  int NumSlidingLayers() const;
  // Layers that own a KV cache (all but Gemma 4 E2B/E4B's KV-shared tail).
  int NumKvLayers() const;
  // First layer that reuses another layer's KV; num_layers when none does.
  int FirstKvSharedLayer() const;
  bool HasMoe() const { return num_experts > 0; }
  bool HasPerLayerEmbeddings() const { return hidden_size_per_layer_input > 0; }
  // sqrt(hidden_size) in fp32. HF/JAX round it to the weight dtype before the
  // multiply (bf16: 5376 -> 73.5), so bf16 models use RoundBf16() of this.
  float EmbeddingScale() const;
  bool IsEos(int token) const;
};

// Parses config.json text. `source_name` (usually the path) prefixes every
// error, which also names the offending key (e.g. "text_config.head_dim").
// Malformed input, missing/ill-typed keys, unknown model_type, unsupported
// features and inconsistent values are INVALID_ARGUMENT. The result has passed
// ValidateModelConfig.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source_name);

// Reads `path`: a config.json file, or a directory containing one.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// Internal consistency: layer count, heads divisible by KV heads, windows set
// exactly on sliding layers, RoPE parameters, KV sources, MoE fields, token ids.
absl::Status ValidateModelConfig(const ModelConfig& config);

// A few lines for CLIs: the model line, then one line per distinct layer kind.
std::string DescribeConfig(const ModelConfig& config);

}  // namespace facet
