#include "models/gguf_model.h"

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/status.h"
#include "kernels/cpu/quant.h"
#include "parallel/linear.h"

namespace facet {
namespace {

absl::Status Missing(const GgufFile& g, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(g.path(), ": ", what));
}

// A per-layer integer that GGUF stores either as one number or as an array.
absl::StatusOr<std::vector<int64_t>> PerLayer(const GgufFile& g, const std::string& key, int layers) {
  if (g.ArrayInfo(key).ok()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> v, g.GetI64Array(key));
    if (int(v.size()) != layers) {
      return Missing(g, absl::StrCat(key, " has ", v.size(), " entries for ", layers, " layers"));
    }
    return v;
  }
  ASSIGN_OR_RETURN(int64_t one, g.GetI64(key));
  return std::vector<int64_t>(layers, one);
}

absl::StatusOr<nlohmann::json> Gemma4Json(const GgufFile& g, const std::string& a, nlohmann::json j) {
  const int L = j["num_hidden_layers"];
  ASSIGN_OR_RETURN(std::vector<int64_t> kv, PerLayer(g, a + ".attention.head_count_kv", L));
  ASSIGN_OR_RETURN(std::vector<int64_t> ff, PerLayer(g, a + ".feed_forward_length", L));
  std::vector<std::string> types(L, "full_attention");
  if (g.HasKey(a + ".attention.sliding_window_pattern")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> swa, g.GetI64Array(a + ".attention.sliding_window_pattern"));
    if (int(swa.size()) != L) return Missing(g, "sliding_window_pattern length differs from block_count");
    for (int i = 0; i < L; ++i) types[i] = swa[i] ? "sliding_attention" : "full_attention";
  }
  int sliding_kv = 0, global_kv = 0;
  for (int i = 0; i < L; ++i) (types[i] == "sliding_attention" ? sliding_kv : global_kv) = int(kv[i]);
  j["layer_types"] = types;
  j["num_key_value_heads"] = sliding_kv ? sliding_kv : global_kv;
  ASSIGN_OR_RETURN(int64_t global_dim, g.GetI64(a + ".attention.key_length"));
  j["global_head_dim"] = global_dim;
  j["head_dim"] = g.HasKey(a + ".attention.key_length_swa") ? *g.GetI64(a + ".attention.key_length_swa")
                                                           : global_dim;
  // K=V global layers have no attn_v tensor (spec §4.8).
  bool k_eq_v = false;
  for (int i = 0; i < L; ++i) {
    if (types[i] == "full_attention" && !g.FindTensor(absl::StrCat("blk.", i, ".attn_v.weight"))) k_eq_v = true;
  }
  j["attention_k_eq_v"] = k_eq_v;
  if (k_eq_v) j["num_global_key_value_heads"] = global_kv;
  j["intermediate_size"] = ff[0];
  const float local_theta = g.HasKey(a + ".rope.freq_base_swa") ? *g.GetF32(a + ".rope.freq_base_swa") : 10000.0f;
  j["rope_parameters"] = {
      {"full_attention", {{"rope_type", "proportional"}, {"partial_rotary_factor", 0.25}, {"rope_theta", j["rope_theta"]}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", local_theta}}}};
  j.erase("rope_theta");
  if (g.HasKey(a + ".expert_count")) {
    ASSIGN_OR_RETURN(int64_t e, g.GetI64(a + ".expert_count"));
    ASSIGN_OR_RETURN(int64_t k, g.GetI64(a + ".expert_used_count"));
    ASSIGN_OR_RETURN(int64_t f, g.GetI64(a + ".expert_feed_forward_length"));
    j["enable_moe_block"] = e > 0;
    j["num_experts"] = e;
    j["top_k_experts"] = k;
    j["moe_intermediate_size"] = f;
  }
  if (g.HasKey(a + ".embedding_length_per_layer_input")) {
    j["hidden_size_per_layer_input"] = *g.GetI64(a + ".embedding_length_per_layer_input");
  }
  if (g.HasKey(a + ".attention.shared_kv_layers")) {
    j["num_kv_shared_layers"] = *g.GetI64(a + ".attention.shared_kv_layers");
  }
  j["final_logit_softcapping"] = g.HasKey(a + ".final_logit_softcapping")
                                     ? *g.GetF32(a + ".final_logit_softcapping") : 30.0f;
  return j;
}

}  // namespace

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& g) {
  ASSIGN_OR_RETURN(std::string arch, g.GetString("general.architecture"));
  if (arch != "gemma2" && arch != "gemma3" && arch != "gemma4") {
    return Missing(g, absl::StrCat("general.architecture \"", arch,
                                   "\" is not a Gemma text model (gemma2, gemma3, gemma4)"));
  }
  const GgufFile::TensorInfo* embd = g.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->ne.size() != 2) return Missing(g, "missing 2-D tensor token_embd.weight");

  nlohmann::json j;
  auto i64 = [&](const std::string& key) { return g.GetI64(arch + "." + key); };
  ASSIGN_OR_RETURN(int64_t H, i64("embedding_length"));
  ASSIGN_OR_RETURN(int64_t L, i64("block_count"));
  ASSIGN_OR_RETURN(int64_t ctx, i64("context_length"));
  ASSIGN_OR_RETURN(float eps, g.GetF32(arch + ".attention.layer_norm_rms_epsilon"));
  ASSIGN_OR_RETURN(int64_t heads, i64("attention.head_count"));
  j["hidden_size"] = H;
  j["num_hidden_layers"] = L;
  j["max_position_embeddings"] = ctx;
  j["rms_norm_eps"] = eps;
  j["num_attention_heads"] = heads;
  j["vocab_size"] = embd->ne[1];
  j["tie_word_embeddings"] = g.FindTensor("output.weight") == nullptr;
  if (g.HasKey(arch + ".attention.sliding_window")) {
    ASSIGN_OR_RETURN(int64_t w, i64("attention.sliding_window"));
    j["sliding_window"] = w;
  }
  const float theta = g.HasKey(arch + ".rope.freq_base") ? *g.GetF32(arch + ".rope.freq_base") : 10000.0f;
  j["rope_theta"] = theta;
  if (g.HasKey("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *g.GetI64("tokenizer.ggml.bos_token_id");
  if (g.HasKey("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = *g.GetI64("tokenizer.ggml.eos_token_id");
  if (g.HasKey("tokenizer.ggml.padding_token_id")) j["pad_token_id"] = *g.GetI64("tokenizer.ggml.padding_token_id");

  if (arch == "gemma4") {
    j["model_type"] = "gemma4_text";
    ASSIGN_OR_RETURN(j, Gemma4Json(g, arch, std::move(j)));
  } else {
    ASSIGN_OR_RETURN(int64_t kv, i64("attention.head_count_kv"));
    ASSIGN_OR_RETURN(int64_t ff, i64("feed_forward_length"));
    const int64_t head_dim = g.HasKey(arch + ".attention.key_length") ? *i64("attention.key_length") : H / heads;
    j["num_key_value_heads"] = kv;
    j["intermediate_size"] = ff;
    j["head_dim"] = head_dim;
    // Not stored in GGUF; llama.cpp derives it from the model size
    // (llama-model.cpp): 27B scales by 1/sqrt(H/Nq), the rest by 1/sqrt(head_dim).
    const bool is_27b = (arch == "gemma3" && L == 62) || (arch == "gemma2" && L == 46);
    j["query_pre_attn_scalar"] = is_27b ? double(H) / double(heads) : double(head_dim);
    if (arch == "gemma2") {
      j["model_type"] = "gemma2";
      j["attn_logit_softcapping"] = g.HasKey("gemma2.attn_logit_softcapping")
                                        ? *g.GetF32("gemma2.attn_logit_softcapping") : 50.0f;
      j["final_logit_softcapping"] = g.HasKey("gemma2.final_logit_softcapping")
                                         ? *g.GetF32("gemma2.final_logit_softcapping") : 30.0f;
    } else {
      j["model_type"] = "gemma3_text";
      j["rope_local_base_freq"] = 10000.0;
      j["sliding_window_pattern"] = 6;
      if (g.HasKey("gemma3.final_logit_softcapping")) {
        j["final_logit_softcapping"] = *g.GetF32("gemma3.final_logit_softcapping");
      }
      if (g.HasKey("gemma3.rope.scaling.type")) {
        ASSIGN_OR_RETURN(std::string type, g.GetString("gemma3.rope.scaling.type"));
        if (type == "linear") {
          ASSIGN_OR_RETURN(float factor, g.GetF32("gemma3.rope.scaling.factor"));
          j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", factor}};
        } else if (type != "none") {
          return Missing(g, absl::StrCat("unsupported gemma3.rope.scaling.type \"", type, "\""));
        }
      }
    }
  }
  ASSIGN_OR_RETURN(ModelConfig cfg, ParseModelConfig(j.dump(), g.path() + " (metadata)"));
  cfg.norm_weight_plus_one = false;  // folded in by llama.cpp's converter
  return cfg;
}

namespace {

class GgufReader : public parallel::ShardReader {
 public:
  GgufReader(const GgufFile& g, bool dequantize) : g_(g), dequantize_(dequantize) {}

  // fp32 copies made when dequantizing; they join the weights' storage.
  std::shared_ptr<std::vector<std::vector<float>>> owned = std::make_shared<std::vector<std::vector<float>>>();
  // Column slices copied for tensor parallelism.
  std::shared_ptr<std::vector<std::vector<uint8_t>>> owned_bytes =
      std::make_shared<std::vector<std::vector<uint8_t>>>();

  absl::StatusOr<WeightRef> ReadRows(const std::string& name, int64_t rows, int64_t cols,
                                     parallel::Range r) override {
    ASSIGN_OR_RETURN(WeightRef w, Matrix(name, rows, cols));
    return w.Rows(r.begin, r.size);
  }

  absl::StatusOr<WeightRef> ReadCols(const std::string& name, int64_t rows, int64_t cols,
                                     parallel::Range c) override {
    ASSIGN_OR_RETURN(WeightRef w, Matrix(name, rows, cols));
    const int64_t bs = BlockSize(w.format);
    if (c.begin % bs == 0 && c.size % bs == 0) {
      // Whole quant blocks: copy each row's run of blocks.
      const int64_t off = RowBytes(w.format, c.begin), len = RowBytes(w.format, c.size);
      std::vector<uint8_t>& buf = owned_bytes->emplace_back(size_t(len * rows));
      for (int64_t r = 0; r < rows; ++r) std::memcpy(buf.data() + r * len, w.row(r) + off, size_t(len));
      return WeightRef{buf.data(), w.format, rows, c.size};
    }
    // The split cuts a block: dequantize the rows, keep the slice in fp32.
    std::vector<float>& f = owned->emplace_back(size_t(rows * c.size));
    std::vector<float> row(static_cast<size_t>(cols));  // [cols]
    for (int64_t r = 0; r < rows; ++r) {
      RETURN_IF_ERROR(Annotate(DequantizeRow(w.format, w.row(r), row.data(), cols), name));
      std::memcpy(f.data() + r * c.size, row.data() + c.begin, sizeof(float) * c.size);
    }
    return WeightRef{f.data(), WeightFormat::kF32, rows, c.size};
  }

  absl::StatusOr<WeightRef> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    if (!g_.FindTensor(name)) return absl::NotFoundError(absl::StrCat(g_.path(), ": missing tensor ", name));
    ASSIGN_OR_RETURN(WeightRef w, g_.Weight(name));
    if (w.rows != rows || w.cols != cols) {
      return absl::InvalidArgumentError(absl::StrCat(g_.path(), ": tensor ", name, " is [", w.rows, ", ",
                                                     w.cols, "] (rows, cols) but the config needs [",
                                                     rows, ", ", cols, "]"));
    }
    if (dequantize_ && w.format != WeightFormat::kF32) {
      std::vector<float>& f = owned->emplace_back(size_t(rows * cols));
      for (int64_t r = 0; r < rows; ++r) {
        RETURN_IF_ERROR(Annotate(DequantizeRow(w.format, w.row(r), f.data() + r * cols, cols), name));
      }
      w = WeightRef{f.data(), WeightFormat::kF32, rows, cols};
    }
    return w;
  }

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) {
    if (!g_.FindTensor(name)) return absl::NotFoundError(absl::StrCat(g_.path(), ": missing tensor ", name));
    std::vector<float> v;
    RETURN_IF_ERROR(g_.DequantizeToF32(name, &v));
    if (int64_t(v.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat(g_.path(), ": tensor ", name, " has ", v.size(),
                                                     " values but the config needs ", n));
    }
    return v;
  }

  bool Has(const std::string& name) const { return g_.FindTensor(name) != nullptr; }

 private:
  const GgufFile& g_;
  bool dequantize_;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadGgufWeights(const ModelConfig& cfg, std::shared_ptr<const GgufFile> gguf,
                                             bool dequantize, const ShardSpec& sh) {
  if (cfg.HasPerLayerEmbeddings()) {
    return absl::UnimplementedError(absl::StrCat(gguf->path(),
                                                 ": per-layer embeddings (Gemma 4 E2B/E4B) are not supported yet"));
  }
  RETURN_IF_ERROR(ShardConfig(cfg, sh).status());
  GgufReader rd(*gguf, dequantize);
  ModelWeights w;
  const int64_t H = cfg.hidden_size;
  ASSIGN_OR_RETURN(parallel::VocabShard vs, parallel::LoadVocabParallel(
                                                rd, "token_embd.weight", cfg.vocab_size, H, sh.tp,
                                                sh.tp_rank));
  w.embed = vs.table;
  w.vocab = vs.vocab;
  w.lm_head = w.embed;
  if (rd.Has("output.weight")) {
    ASSIGN_OR_RETURN(w.lm_head, rd.ReadRows("output.weight", cfg.vocab_size, H, w.vocab));
  }
  ASSIGN_OR_RETURN(w.final_norm, rd.Vector("output_norm.weight", H));
  // llama.cpp multiplies by fp32 sqrt(H) (spec §1.1); for bf16 tables follow HF.
  w.embed_scale = w.embed.format == WeightFormat::kBF16 ? RoundBf16(cfg.EmbeddingScale()) : cfg.EmbeddingScale();

  w.layers.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    const LayerConfig& l = cfg.layers[i];
    LayerWeights& lw = w.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    ASSIGN_OR_RETURN(lw.attn_norm, rd.Vector(p + "attn_norm.weight", H));
    ASSIGN_OR_RETURN(lw.post_attn_norm, rd.Vector(p + "post_attention_norm.weight", H));
    ASSIGN_OR_RETURN(lw.ffn_norm, rd.Vector(p + "ffn_norm.weight", H));
    ASSIGN_OR_RETURN(lw.post_ffn_norm, rd.Vector(p + "post_ffw_norm.weight", H));
    ASSIGN_OR_RETURN(parallel::AttentionWeights aw,
                     parallel::LoadAttentionParallel(
                         rd, {p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight",
                              p + "attn_output.weight"},
                         l.num_heads, l.num_kv_heads, l.head_dim, H, l.owns_kv(), l.k_eq_v, sh.tp,
                         sh.tp_rank));
    lw.q = aw.q;
    lw.k = aw.k;
    lw.v = aw.v;
    lw.o = aw.o;
    lw.heads = aw.heads;
    if (cfg.qk_norm) {
      ASSIGN_OR_RETURN(lw.q_norm, rd.Vector(p + "attn_q_norm.weight", l.head_dim));
      if (l.owns_kv()) {
        ASSIGN_OR_RETURN(lw.k_norm, rd.Vector(p + "attn_k_norm.weight", l.head_dim));
      }
    }
    const int64_t I = l.intermediate_size;
    ASSIGN_OR_RETURN(lw.gate, parallel::LoadColumnParallel(rd, p + "ffn_gate.weight", I, H, sh.tp, sh.tp_rank));
    ASSIGN_OR_RETURN(lw.up, parallel::LoadColumnParallel(rd, p + "ffn_up.weight", I, H, sh.tp, sh.tp_rank));
    ASSIGN_OR_RETURN(lw.down, parallel::LoadRowParallel(rd, p + "ffn_down.weight", H, I, sh.tp, sh.tp_rank));
    if (l.moe) {
      const int64_t E = cfg.num_experts, F = cfg.moe_intermediate_size;
      ASSIGN_OR_RETURN(lw.ffn_norm_2, rd.Vector(p + "pre_ffw_norm_2.weight", H));
      ASSIGN_OR_RETURN(lw.post_ffn_norm_1, rd.Vector(p + "post_ffw_norm_1.weight", H));
      ASSIGN_OR_RETURN(lw.post_ffn_norm_2, rd.Vector(p + "post_ffw_norm_2.weight", H));
      ASSIGN_OR_RETURN(lw.router, rd.Matrix(p + "ffn_gate_inp.weight", E, H));
      ASSIGN_OR_RETURN(lw.router_scale, rd.Vector(p + "ffn_gate_inp.scale", H));
      ASSIGN_OR_RETURN(lw.per_expert_scale, rd.Vector(p + "ffn_down_exps.scale", E));
      ASSIGN_OR_RETURN(parallel::ExpertShard gu,
                       parallel::LoadExpertParallel(rd, p + "ffn_gate_up_exps.weight", E, 2 * F, H,
                                                    sh.ep, sh.ep_rank));
      ASSIGN_OR_RETURN(parallel::ExpertShard dn,
                       parallel::LoadExpertParallel(rd, p + "ffn_down_exps.weight", E, H, F, sh.ep,
                                                    sh.ep_rank));
      lw.experts_gate_up = gu.w;
      lw.experts_down = dn.w;
      lw.experts = gu.experts;
    }
    if (cfg.layer_scalar) {
      ASSIGN_OR_RETURN(std::vector<float> s, rd.Vector(p + "layer_output_scale.weight", 1));
      lw.layer_scalar = s[0];
    }
  }
  ComputeRopeTables(cfg, &w);
  struct Storage {
    std::shared_ptr<const GgufFile> gguf;
    std::shared_ptr<std::vector<std::vector<float>>> owned;
    std::shared_ptr<std::vector<std::vector<uint8_t>>> owned_bytes;
  };
  w.storage = std::make_shared<Storage>(Storage{std::move(gguf), rd.owned, rd.owned_bytes});
  return w;
}

absl::StatusOr<Tokenizer> TokenizerFromGguf(const GgufFile& g) {
  VocabSpec spec;
  spec.source_name = g.path();
  ASSIGN_OR_RETURN(std::string model, g.GetString("tokenizer.ggml.model"));
  ASSIGN_OR_RETURN(spec.tokens, g.GetStringArray("tokenizer.ggml.tokens"));
  if (g.HasKey("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(spec.scores, g.GetF32Array("tokenizer.ggml.scores"));
  }
  if (g.HasKey("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(spec.merges, g.GetStringArray("tokenizer.ggml.merges"));
  }
  if (g.HasKey("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int32_t> types, g.GetI32Array("tokenizer.ggml.token_type"));
    for (int32_t t : types) {
      if (t < 1 || t > 6) {
        return absl::InvalidArgumentError(absl::StrCat(g.path(), ": tokenizer.ggml.token_type value ", t,
                                                       " is not a GGUF token type (1..6)"));
      }
      spec.token_types.push_back(TokenType(t));
    }
  }
  auto id = [&](const char* key, int32_t* out) {
    if (g.HasKey(key)) *out = int32_t(*g.GetI64(key));
  };
  id("tokenizer.ggml.bos_token_id", &spec.bos_id);
  id("tokenizer.ggml.eos_token_id", &spec.eos_id);
  id("tokenizer.ggml.padding_token_id", &spec.pad_id);
  id("tokenizer.ggml.unknown_token_id", &spec.unk_id);
  spec.add_bos = g.HasKey("tokenizer.ggml.add_bos_token") ? *g.GetBool("tokenizer.ggml.add_bos_token") : true;
  spec.add_eos = g.HasKey("tokenizer.ggml.add_eos_token") && *g.GetBool("tokenizer.ggml.add_eos_token");
  // Gemma's SentencePiece model has no dummy prefix (add_dummy_prefix=false).
  spec.add_space_prefix = g.HasKey("tokenizer.ggml.add_space_prefix") && *g.GetBool("tokenizer.ggml.add_space_prefix");
  spec.escape_whitespace = true;
  if (model != "llama" && model != "gemma4" && model != "gpt2") {
    return absl::InvalidArgumentError(absl::StrCat(g.path(), ": unsupported tokenizer.ggml.model \"", model, "\""));
  }
  return Tokenizer::FromVocab(spec);
}

}  // namespace facet
