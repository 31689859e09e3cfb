#include "models/weights.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"
#include "models/safetensors.h"

namespace facet {
namespace {

absl::StatusOr<WeightFormat> FormatFor(DType t) {
  switch (t) {
    case DType::kF32: return WeightFormat::kF32;
    case DType::kF16: return WeightFormat::kF16;
    case DType::kBF16: return WeightFormat::kBF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", std::string(DTypeName(t)), " is not a supported weight dtype"));
  }
}

float ToF32(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kF16: return Fp16ToF32(static_cast<const fp16*>(p)[i]);
    case DType::kBF16: return Bf16ToF32(static_cast<const bf16*>(p)[i]);
    default: return 0.0f;
  }
}

// Reads tensors of one checkpoint under the text decoder's name prefix.
class Reader {
 public:
  Reader(const WeightCheckpoint& ckpt, std::string path) : ckpt_(ckpt), path_(std::move(path)) {}

  // Finds where the text decoder lives: Gemma 2 and Gemma 3 1B use "model.",
  // Gemma 3 VLMs "language_model.model." (hub) or "model.language_model."
  // (re-saved), Gemma 4 "model.language_model." (spec §7.1).
  absl::Status DetectPrefix() {
    for (const char* p : {"model.", "model.language_model.", "language_model.model.", ""}) {
      if (ckpt_.Find(absl::StrCat(p, "embed_tokens.weight")) != nullptr) {
        prefix_ = p;
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": no embed_tokens.weight under any known Gemma prefix"));
  }

  bool Has(const std::string& name) const { return ckpt_.Find(prefix_ + name) != nullptr; }

  absl::StatusOr<WeightRef> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    ASSIGN_OR_RETURN(TensorView t, Tensor(name));
    int64_t r = 1;
    for (int i = 0; i + 1 < t.shape.rank(); ++i) r *= t.shape[i];
    const int64_t c = t.shape.rank() > 0 ? t.shape[t.shape.rank() - 1] : 1;
    if (t.shape.rank() < 2 || r != rows || c != cols) {
      return Error(name, absl::StrCat("shape ", t.shape.ToString(), " but the config needs [", rows,
                                      ", ", cols, "]"));
    }
    auto fmt = FormatFor(t.dtype);
    if (!fmt.ok()) return Error(name, std::string(fmt.status().message()));
    return WeightRef{t.data, *fmt, rows, cols};
  }

  // A small vector as fp32, `plus` added to every element (Gemma 2/3 norms).
  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n, float plus = 0.0f) {
    ASSIGN_OR_RETURN(TensorView t, Tensor(name));
    if (t.numel() != n) {
      return Error(name, absl::StrCat("shape ", t.shape.ToString(), " but the config needs [", n, "]"));
    }
    if (!FormatFor(t.dtype).ok()) {
      return Error(name, absl::StrCat("dtype ", std::string(DTypeName(t.dtype)), " is not a float type"));
    }
    std::vector<float> out(n);
    for (int64_t i = 0; i < n; ++i) out[i] = ToF32(t.dtype, t.data, i) + plus;
    return out;
  }

  absl::Status Error(const std::string& name, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor ", prefix_, name, ": ", what));
  }

 private:
  absl::StatusOr<TensorView> Tensor(const std::string& name) {
    if (!Has(name)) return absl::NotFoundError(absl::StrCat(path_, ": missing tensor ", prefix_, name));
    return ckpt_.Get(prefix_ + name);
  }

  const WeightCheckpoint& ckpt_;
  std::string path_;
  std::string prefix_;
};

absl::Status LoadLayer(const ModelConfig& cfg, int i, Reader& rd, LayerWeights* lw) {
  const LayerConfig& lc = cfg.layers[i];
  const int64_t H = cfg.hidden_size;
  const float plus = cfg.norm_weight_plus_one ? 1.0f : 0.0f;
  const std::string p = absl::StrCat("layers.", i, ".");
  ASSIGN_OR_RETURN(lw->attn_norm, rd.Vector(p + "input_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->post_attn_norm, rd.Vector(p + "post_attention_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->ffn_norm, rd.Vector(p + "pre_feedforward_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->post_ffn_norm, rd.Vector(p + "post_feedforward_layernorm.weight", H, plus));

  ASSIGN_OR_RETURN(lw->q, rd.Matrix(p + "self_attn.q_proj.weight", lc.q_dim(), H));
  ASSIGN_OR_RETURN(lw->o, rd.Matrix(p + "self_attn.o_proj.weight", H, lc.q_dim()));
  if (cfg.qk_norm) {
    ASSIGN_OR_RETURN(lw->q_norm, rd.Vector(p + "self_attn.q_norm.weight", lc.head_dim, plus));
  }
  // Layers that read another layer's KV (Gemma 4 E2B/E4B) need no K/V weights.
  if (lc.owns_kv()) {
    ASSIGN_OR_RETURN(lw->k, rd.Matrix(p + "self_attn.k_proj.weight", lc.kv_dim(), H));
    if (!lc.k_eq_v) {
      ASSIGN_OR_RETURN(lw->v, rd.Matrix(p + "self_attn.v_proj.weight", lc.kv_dim(), H));
    }
    if (cfg.qk_norm) {
      ASSIGN_OR_RETURN(lw->k_norm, rd.Vector(p + "self_attn.k_norm.weight", lc.head_dim, plus));
    }
  }

  const int64_t I = lc.intermediate_size;
  ASSIGN_OR_RETURN(lw->gate, rd.Matrix(p + "mlp.gate_proj.weight", I, H));
  ASSIGN_OR_RETURN(lw->up, rd.Matrix(p + "mlp.up_proj.weight", I, H));
  ASSIGN_OR_RETURN(lw->down, rd.Matrix(p + "mlp.down_proj.weight", H, I));

  if (lc.moe) {
    const int64_t E = cfg.num_experts, F = cfg.moe_intermediate_size;
    ASSIGN_OR_RETURN(lw->ffn_norm_2, rd.Vector(p + "pre_feedforward_layernorm_2.weight", H, plus));
    ASSIGN_OR_RETURN(lw->post_ffn_norm_1, rd.Vector(p + "post_feedforward_layernorm_1.weight", H, plus));
    ASSIGN_OR_RETURN(lw->post_ffn_norm_2, rd.Vector(p + "post_feedforward_layernorm_2.weight", H, plus));
    ASSIGN_OR_RETURN(lw->router_scale, rd.Vector(p + "router.scale", H));
    ASSIGN_OR_RETURN(lw->per_expert_scale, rd.Vector(p + "router.per_expert_scale", E));
    ASSIGN_OR_RETURN(lw->router, rd.Matrix(p + "router.proj.weight", E, H));
    ASSIGN_OR_RETURN(lw->experts_gate_up, rd.Matrix(p + "experts.gate_up_proj", E * 2 * F, H));
    ASSIGN_OR_RETURN(lw->experts_down, rd.Matrix(p + "experts.down_proj", E * H, F));
  }
  if (cfg.layer_scalar) {
    ASSIGN_OR_RETURN(std::vector<float> s, rd.Vector(p + "layer_scalar", 1));
    lw->layer_scalar = s[0];
  }
  return absl::OkStatus();
}

}  // namespace

void ComputeRopeTables(const ModelConfig& config, ModelWeights* weights) {
  for (int i = 0; i < config.num_layers; ++i) {
    const LayerConfig& lc = config.layers[i];
    const RopeConfig& r = lc.rope;
    weights->layers[i].rope_inv_freq = cpu::RopeInvFreq(
        lc.head_dim, r.theta, r.factor, r.partial_rotary_factor, r.type == RopeType::kProportional);
  }
}

absl::StatusOr<ModelWeights> LoadSafetensorsWeights(const ModelConfig& cfg, const std::string& path) {
  if (cfg.HasPerLayerEmbeddings()) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": per-layer embeddings (Gemma 4 E2B/E4B) are not supported yet"));
  }
  auto ckpt = std::make_shared<WeightCheckpoint>();
  ASSIGN_OR_RETURN(*ckpt, WeightCheckpoint::Open(path));
  Reader rd(*ckpt, path);
  RETURN_IF_ERROR(rd.DetectPrefix());

  ModelWeights w;
  w.storage = ckpt;
  const int64_t H = cfg.hidden_size;
  ASSIGN_OR_RETURN(w.embed, rd.Matrix("embed_tokens.weight", cfg.vocab_size, H));
  w.lm_head = w.embed;
  if (!cfg.tie_word_embeddings && ckpt->Find("lm_head.weight") != nullptr) {
    auto t = ckpt->Get("lm_head.weight");
    RETURN_IF_ERROR(t.status());
    auto fmt = FormatFor(t->dtype);
    RETURN_IF_ERROR(fmt.status());
    if (t->shape != Shape{cfg.vocab_size, H}) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": lm_head.weight has shape ",
                                                     t->shape.ToString(), ", expected [",
                                                     cfg.vocab_size, ", ", H, "]"));
    }
    w.lm_head = WeightRef{t->data, *fmt, cfg.vocab_size, H};
  }
  ASSIGN_OR_RETURN(w.final_norm, rd.Vector("norm.weight", H, cfg.norm_weight_plus_one ? 1.0f : 0.0f));

  // HF casts sqrt(H) to the embedding dtype before multiplying (spec §1.1).
  const float scale = cfg.EmbeddingScale();
  switch (w.embed.format) {
    case WeightFormat::kBF16: w.embed_scale = RoundBf16(scale); break;
    case WeightFormat::kF16: w.embed_scale = Fp16ToF32(F32ToFp16(scale)); break;
    default: w.embed_scale = scale; break;
  }

  w.layers.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    RETURN_IF_ERROR(LoadLayer(cfg, i, rd, &w.layers[i]));
  }
  ComputeRopeTables(cfg, &w);
  return w;
}

}  // namespace facet
