#include "models/model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"
#include "models/gguf_model.h"
#include "parallel/linear.h"

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
  const bool is_gguf = path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
  std::shared_ptr<const GgufFile> gguf;
  ModelConfig config;
  if (is_gguf) {
    ASSIGN_OR_RETURN(GgufFile file, GgufFile::Open(path));
    gguf = std::make_shared<const GgufFile>(std::move(file));
    ASSIGN_OR_RETURN(config, ConfigFromGguf(*gguf));
  } else {
    ASSIGN_OR_RETURN(config, LoadModelConfig(path));
  }
  ShardSpec shard;
  if (options.tp != nullptr) shard.tp = options.tp->size(), shard.tp_rank = options.tp->rank();
  if (options.ep != nullptr) shard.ep = options.ep->size(), shard.ep_rank = options.ep->rank();
  if (!config.HasMoe()) shard.ep = 1, shard.ep_rank = 0;  // nothing to split
  ModelWeights weights;
  if (is_gguf) {
    ASSIGN_OR_RETURN(weights, LoadGgufWeights(config, gguf, options.dequantize, shard));
  } else {
    ASSIGN_OR_RETURN(weights, LoadSafetensorsWeights(config, path, shard));
  }
  ASSIGN_OR_RETURN(ModelConfig local, ShardConfig(config, shard));
  auto model = std::make_unique<Model>(std::move(local), std::move(weights), pool);
  model->SetParallel(std::move(config), shard.tp > 1 ? options.tp : nullptr,
                     shard.ep > 1 ? options.ep : nullptr);
  return model;
}

Model::Model(ModelConfig config, ModelWeights weights, ThreadPool* pool)
    : config_(std::move(config)), weights_(std::move(weights)), pool_(pool) {
  layer_fn_ = LayerFnFor(config_.family);
  full_config_ = config_;
  // Loaders that know nothing of sharding (GGUF, random weights) leave the
  // ranges empty: they hold everything.
  if (weights_.vocab.size == 0) weights_.vocab = parallel::Range{0, config_.vocab_size};
  for (size_t i = 0; i < weights_.layers.size() && i < config_.layers.size(); ++i) {
    LayerWeights& w = weights_.layers[i];
    if (w.heads.q_heads.size == 0) {
      w.heads.q_heads = parallel::Range{0, config_.layers[i].num_heads};
      w.heads.kv_heads = parallel::Range{0, config_.layers[i].num_kv_heads};
    }
    if (w.experts.size == 0) w.experts = parallel::Range{0, config_.num_experts};
  }
}

void Model::SetParallel(ModelConfig full_config, parallel::Communicator* tp,
                        parallel::Communicator* ep) {
  full_config_ = std::move(full_config);
  tp_ = tp;
  ep_ = ep;
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
  RETURN_IF_ERROR(parallel::VocabParallelEmbed(tp_, {weights_.embed, weights_.vocab}, tokens.data(),
                                               T, weights_.embed_scale, x));
  if (trace) trace->assign(1, std::vector<float>(x, x + T * H));
  for (int i = 0; i < config_.num_layers; ++i) {
    LayerContext c{config_, i, config_.layers[i], weights_.layers[i], kv, segments, positions.data(), T,
                   act_, pool_, tp_, ep_};
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
  // Vocabulary-parallel LM head: [rows, V/tp] here, soft-capped per slice
  // (element-wise, so the same as capping the gathered row).
  const int64_t Vl = weights_.vocab.size;
  const bool gather = tp_ != nullptr && gather_logits_;
  if (gather) {
    local_logits_.resize(rows * Vl);
    logits->resize(rows * V);
  } else {
    logits->resize(rows * Vl);
  }
  if (rows == 0) return absl::OkStatus();
  float* out = gather ? local_logits_.data() : logits->data();
  RETURN_IF_ERROR(cpu::MatMul(rows_.data(), rows, weights_.lm_head, out, pool_));
  if (config_.final_logit_softcap > 0) {
    cpu::Softcap(out, rows * Vl, config_.final_logit_softcap);
  }
  if (gather) {
    RETURN_IF_ERROR(parallel::GatherLogits(tp_, out, rows, Vl, logits->data()));
    gathered_logit_bytes_ += rows * V * int64_t(sizeof(float));
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
