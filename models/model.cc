#include "models/model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"
#include "models/gguf_model.h"

namespace facet {
namespace {

LayerFn LayerFnFor(ModelFamily f) {
  switch (f) {
    case ModelFamily::kGemma2: return &Gemma2Layer;
    case ModelFamily::kGemma3: return &Gemma3Layer;
    case ModelFamily::kGemma4: return &Gemma4Layer;
  }
  return nullptr;
}

int64_t MatrixBytes(const WeightRef& w) { return w.data ? w.rows * w.row_bytes() : 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, ThreadPool* pool,
                                                   const LoadOptions& options) {
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) {
    ASSIGN_OR_RETURN(GgufFile file, GgufFile::Open(path));
    auto gguf = std::make_shared<const GgufFile>(std::move(file));
    ASSIGN_OR_RETURN(ModelConfig config, ConfigFromGguf(*gguf));
    ASSIGN_OR_RETURN(ModelWeights weights, LoadGgufWeights(config, gguf, options.dequantize));
    return std::make_unique<Model>(std::move(config), std::move(weights), pool);
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(path));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadSafetensorsWeights(config, path));
  return std::make_unique<Model>(std::move(config), std::move(weights), pool);
}

Model::Model(ModelConfig config, ModelWeights weights, ThreadPool* pool)
    : config_(std::move(config)), weights_(std::move(weights)), pool_(pool) {
  layer_fn_ = LayerFnFor(config_.family);
}

absl::Status Model::Forward(std::span<const int32_t> tokens, KvCache* cache, bool all_logits,
                            std::vector<float>* logits) {
  return ForwardWithTrace(tokens, cache, all_logits, logits, nullptr);
}

absl::Status Model::ForwardWithTrace(std::span<const int32_t> tokens, KvCache* cache,
                                     bool all_logits, std::vector<float>* logits,
                                     std::vector<std::vector<float>>* trace) {
  const int64_t T = int64_t(tokens.size());
  const int64_t V = config_.vocab_size;
  if (T == 0) return absl::InvalidArgumentError("forward: no tokens");
  for (int64_t i = 0; i < T; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", tokens[i], " at index ", i, " is outside the vocabulary [0, ", V, ")"));
    }
  }
  const int64_t pos0 = cache->length();
  if (pos0 + T > cache->capacity()) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", pos0 + T,
                                              " tokens exceeds the KV cache capacity of ",
                                              cache->capacity()));
  }
  if (pos0 + T > config_.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", pos0 + T,
                                              " tokens exceeds the model's context of ",
                                              config_.max_position_embeddings));
  }
  std::vector<int32_t> positions(T);
  std::iota(positions.begin(), positions.end(), int32_t(pos0));
  SeqSegment seg{0, 0, T, pos0};
  std::vector<int64_t> rows;
  for (int64_t t = all_logits ? 0 : T - 1; t < T; ++t) rows.push_back(t);
  RETURN_IF_ERROR(Run(tokens, positions, std::span<const SeqSegment>(&seg, 1), cache, rows, logits, trace));
  cache->Advance(T);
  return absl::OkStatus();
}

absl::Status Model::ForwardBatch(std::span<const int32_t> tokens, std::span<const int32_t> positions,
                                 std::span<const SeqSegment> segments, KvStore* kv,
                                 std::span<const int64_t> logit_rows, std::vector<float>* logits) {
  if (tokens.empty() || tokens.size() != positions.size()) {
    return absl::InvalidArgumentError("forward batch: token and position counts differ or are zero");
  }
  return Run(tokens, positions, segments, kv, logit_rows, logits, nullptr);
}

absl::Status Model::Run(std::span<const int32_t> tokens, std::span<const int32_t> positions,
                        std::span<const SeqSegment> segments, KvStore* kv,
                        std::span<const int64_t> logit_rows, std::vector<float>* logits,
                        std::vector<std::vector<float>>* trace) {
  const int64_t T = int64_t(tokens.size());
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  if (T > act_tokens_) {
    act_.Reserve(config_, T);
    act_tokens_ = T;
  }
  x_.resize(T * H);
  float* x = x_.data();
  cpu::Embed(weights_.embed, tokens.data(), T, weights_.embed_scale, x);
  if (trace) trace->assign(1, std::vector<float>(x, x + T * H));
  for (int i = 0; i < config_.num_layers; ++i) {
    LayerContext c{config_, i, config_.layers[i], weights_.layers[i], kv, segments, positions.data(), T,
                   act_, pool_};
    RETURN_IF_ERROR(layer_fn_(c, x));
    if (trace) trace->emplace_back(x, x + T * H);
  }

  // Only the rows that are sampled (or asked for) go through the LM head.
  const int64_t rows = int64_t(logit_rows.size());
  rows_.resize(rows * H);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(rows_.data() + r * H, x + logit_rows[r] * H, sizeof(float) * H);
  }
  cpu::RmsNorm(rows_.data(), weights_.final_norm.data(), rows_.data(), rows, H, config_.rms_norm_eps, false);
  logits->resize(rows * V);
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(cpu::MatMul(rows_.data(), rows, weights_.lm_head, logits->data(), pool_));
  if (config_.final_logit_softcap > 0) {
    cpu::Softcap(logits->data(), rows * V, config_.final_logit_softcap);
  }
  return absl::OkStatus();
}

int64_t Model::DecodeWeightBytes() const {
  int64_t b = MatrixBytes(weights_.lm_head);
  for (int i = 0; i < config_.num_layers; ++i) {
    const LayerWeights& w = weights_.layers[i];
    for (const WeightRef* m : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down, &w.router}) {
      b += MatrixBytes(*m);
    }
    if (config_.layers[i].moe) {
      // Only top_k of num_experts experts are read per token.
      b += (MatrixBytes(w.experts_gate_up) + MatrixBytes(w.experts_down)) * config_.top_k_experts /
           config_.num_experts;
    }
  }
  return b;
}

}  // namespace facet
