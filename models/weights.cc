#include "models/weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"
#include "models/safetensors.h"
#include "parallel/linear.h"

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

// The checkpoint plus the column slices a rank copied out of it.
struct ShardStorage {
  std::shared_ptr<WeightCheckpoint> ckpt;
  std::vector<std::vector<uint8_t>> owned;
};

// Reads tensors of one checkpoint under the text decoder's name prefix; the
// parallel loaders (parallel/linear.h) read their slices through it.
class Reader : public parallel::ShardReader {
 public:
  Reader(const WeightCheckpoint& ckpt, std::string path, ShardStorage* storage = nullptr)
      : ckpt_(ckpt), path_(std::move(path)), storage_(storage) {}

  absl::StatusOr<WeightRef> ReadRows(const std::string& name, int64_t rows, int64_t cols,
                                     parallel::Range r) override {
    ASSIGN_OR_RETURN(WeightRef w, Matrix(name, rows, cols));
    if (r.begin < 0 || r.end() > rows) return Error(name, absl::StrCat("rows [", r.begin, ", ", r.end(), ") out of range"));
    return w.Rows(r.begin, r.size);
  }

  absl::StatusOr<WeightRef> ReadCols(const std::string& name, int64_t rows, int64_t cols,
                                     parallel::Range c) override {
    ASSIGN_OR_RETURN(WeightRef w, Matrix(name, rows, cols));
    if (storage_ == nullptr) return Error(name, "column slices need owned storage");
    std::vector<uint8_t>& buf = storage_->owned.emplace_back(size_t(RowBytes(w.format, c.size) * rows));
    RETURN_IF_ERROR(Annotate(ckpt_.ReadSlice(prefix_ + name, 1, c.begin, c.size, buf.data(), buf.size()), path_));
    // The copy read every page of the tensor; give back the ones wholly
    // inside it so this rank keeps only its slice resident.
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t b = (reinterpret_cast<uintptr_t>(w.data) + page - 1) & ~(page - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(w.data) + uintptr_t(w.rows * w.row_bytes())) & ~(page - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
    return WeightRef{buf.data(), w.format, rows, c.size};
  }

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
  ShardStorage* storage_;
  std::string prefix_;
};

absl::Status LoadLayer(const ModelConfig& cfg, int i, const ShardSpec& sh, Reader& rd,
                       LayerWeights* lw) {
  const LayerConfig& lc = cfg.layers[i];
  const int64_t H = cfg.hidden_size;
  const float plus = cfg.norm_weight_plus_one ? 1.0f : 0.0f;
  const std::string p = absl::StrCat("layers.", i, ".");
  ASSIGN_OR_RETURN(lw->attn_norm, rd.Vector(p + "input_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->post_attn_norm, rd.Vector(p + "post_attention_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->ffn_norm, rd.Vector(p + "pre_feedforward_layernorm.weight", H, plus));
  ASSIGN_OR_RETURN(lw->post_ffn_norm, rd.Vector(p + "post_feedforward_layernorm.weight", H, plus));

  // Heads split (or KV heads replicated) over the TP group (parallel/shard.h).
  ASSIGN_OR_RETURN(parallel::AttentionWeights aw,
                   parallel::LoadAttentionParallel(rd,
                                                   {p + "self_attn.q_proj.weight",
                                                    p + "self_attn.k_proj.weight",
                                                    p + "self_attn.v_proj.weight",
                                                    p + "self_attn.o_proj.weight"},
                                                   lc.num_heads,
                                                   lc.num_kv_heads, lc.head_dim, H, lc.owns_kv(),
                                                   lc.k_eq_v, sh.tp, sh.tp_rank));
  lw->q = aw.q;
  lw->k = aw.k;
  lw->v = aw.v;
  lw->o = aw.o;
  lw->heads = aw.heads;
  if (cfg.qk_norm) {
    ASSIGN_OR_RETURN(lw->q_norm, rd.Vector(p + "self_attn.q_norm.weight", lc.head_dim, plus));
    if (lc.owns_kv()) {
      ASSIGN_OR_RETURN(lw->k_norm, rd.Vector(p + "self_attn.k_norm.weight", lc.head_dim, plus));
    }
  }

  const int64_t I = lc.intermediate_size;
  ASSIGN_OR_RETURN(lw->gate, parallel::LoadColumnParallel(rd, p + "mlp.gate_proj.weight", I, H, sh.tp, sh.tp_rank));
  ASSIGN_OR_RETURN(lw->up, parallel::LoadColumnParallel(rd, p + "mlp.up_proj.weight", I, H, sh.tp, sh.tp_rank));
  ASSIGN_OR_RETURN(lw->down, parallel::LoadRowParallel(rd, p + "mlp.down_proj.weight", H, I, sh.tp, sh.tp_rank));

  if (lc.moe) {
    const int64_t E = cfg.num_experts, F = cfg.moe_intermediate_size;
    ASSIGN_OR_RETURN(lw->ffn_norm_2, rd.Vector(p + "pre_feedforward_layernorm_2.weight", H, plus));
    ASSIGN_OR_RETURN(lw->post_ffn_norm_1, rd.Vector(p + "post_feedforward_layernorm_1.weight", H, plus));
    ASSIGN_OR_RETURN(lw->post_ffn_norm_2, rd.Vector(p + "post_feedforward_layernorm_2.weight", H, plus));
    ASSIGN_OR_RETURN(lw->router_scale, rd.Vector(p + "router.scale", H));
    ASSIGN_OR_RETURN(lw->per_expert_scale, rd.Vector(p + "router.per_expert_scale", E));
    ASSIGN_OR_RETURN(lw->router, rd.Matrix(p + "router.proj.weight", E, H));
    // Whole experts per EP rank; the router stays replicated.
    ASSIGN_OR_RETURN(parallel::ExpertShard gu, parallel::LoadExpertParallel(
                                                   rd, p + "experts.gate_up_proj", E, 2 * F, H,
                                                   sh.ep, sh.ep_rank));
    ASSIGN_OR_RETURN(parallel::ExpertShard dn, parallel::LoadExpertParallel(
                                                   rd, p + "experts.down_proj", E, H, F, sh.ep,
                                                   sh.ep_rank));
    lw->experts_gate_up = gu.w;
    lw->experts_down = dn.w;
    lw->experts = gu.experts;
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

absl::StatusOr<ModelConfig> ShardConfig(const ModelConfig& config, const ShardSpec& sh) {
  ModelConfig local = config;
  if (sh.tp < 1 || sh.ep < 1 || sh.tp_rank < 0 || sh.tp_rank >= sh.tp || sh.ep_rank < 0 ||
      sh.ep_rank >= sh.ep) {
    return absl::InvalidArgumentError(absl::StrCat("shard: tp rank ", sh.tp_rank, " of ", sh.tp,
                                                   ", ep rank ", sh.ep_rank, " of ", sh.ep));
  }
  if (sh.ep > 1 && !config.HasMoe()) {
    return absl::InvalidArgumentError(absl::StrCat("ep=", sh.ep, " but the model has no experts"));
  }
  for (size_t i = 0; i < local.layers.size(); ++i) {
    LayerConfig& l = local.layers[i];
    auto heads = parallel::ShardHeads(l.num_heads, l.num_kv_heads, sh.tp, sh.tp_rank);
    if (!heads.ok()) return Annotate(heads.status(), absl::StrCat("layer ", i));
    l.num_heads = int(heads->q_heads.size);
    l.num_kv_heads = int(heads->kv_heads.size);
    auto mlp = parallel::EvenShard(l.intermediate_size, sh.tp, sh.tp_rank, absl::StrCat("layer ", i, " MLP width"));
    RETURN_IF_ERROR(mlp.status());
    l.intermediate_size = int(mlp->size);
  }
  RETURN_IF_ERROR(parallel::EvenShard(config.vocab_size, sh.tp, sh.tp_rank, "vocabulary").status());
  if (config.HasMoe()) {
    RETURN_IF_ERROR(parallel::EvenShard(config.num_experts, sh.ep, sh.ep_rank, "experts").status());
  }
  return local;
}

absl::StatusOr<ModelWeights> LoadSafetensorsWeights(const ModelConfig& cfg, const std::string& path,
                                                    const ShardSpec& sh) {
  if (cfg.HasPerLayerEmbeddings()) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": per-layer embeddings (Gemma 4 E2B/E4B) are not supported yet"));
  }
  RETURN_IF_ERROR(ShardConfig(cfg, sh).status());
  auto storage = std::make_shared<ShardStorage>();
  storage->ckpt = std::make_shared<WeightCheckpoint>();
  WeightCheckpoint* ckpt = storage->ckpt.get();
  ASSIGN_OR_RETURN(*ckpt, WeightCheckpoint::Open(path));
  Reader rd(*ckpt, path, storage.get());
  RETURN_IF_ERROR(rd.DetectPrefix());

  ModelWeights w;
  w.storage = storage;
  const int64_t H = cfg.hidden_size;
  // Vocabulary-parallel embedding; the tied LM head is the same slice.
  ASSIGN_OR_RETURN(parallel::VocabShard vs, parallel::LoadVocabParallel(
                                                rd, "embed_tokens.weight", cfg.vocab_size, H,
                                                sh.tp, sh.tp_rank));
  w.embed = vs.table;
  w.vocab = vs.vocab;
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
    w.lm_head = WeightRef{t->data, *fmt, cfg.vocab_size, H}.Rows(w.vocab.begin, w.vocab.size);
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
    RETURN_IF_ERROR(LoadLayer(cfg, i, sh, rd, &w.layers[i]));
  }
  ComputeRopeTables(cfg, &w);
  return w;
}

}  // namespace facet
