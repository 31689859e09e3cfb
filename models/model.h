// A loaded Gemma text decoder: config + weights + the family's layer function.
// Forward() runs a chunk of tokens for one sequence through every layer,
// appending to its KV cache, and returns logits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "models/config.h"
#include "models/kv_cache.h"
#include "models/kv_store.h"
#include "models/layer.h"
#include "models/weights.h"

namespace facet {

// Not thread-safe: Forward calls share the activation buffers, so one thread
// (an engine's loop, or a CLI) drives a Model at a time.
class Model {
 public:
  // Loads an HF model directory (config.json + safetensors) or a .gguf file.
  // `pool` must
  // outlive the model; null runs single-threaded.
  struct LoadOptions {
    // GGUF only: fp32 copies of quantized weights (reference-exact math).
    bool dequantize = false;
  };
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, ThreadPool* pool,
                                                     const LoadOptions& options);
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, ThreadPool* pool) {
    return Load(path, pool, LoadOptions{});
  }

  Model(ModelConfig config, ModelWeights weights, ThreadPool* pool);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ThreadPool* pool() const { return pool_; }

  // Runs `tokens` at positions cache->length() ... and advances the cache.
  // logits: [V] for the last token, or [n, V] for every token if all_logits.
  // Errors (INVALID_ARGUMENT/OUT_OF_RANGE): empty input, a token id outside
  // the vocabulary, more tokens than the cache or the model's context holds.
  absl::Status Forward(std::span<const int32_t> tokens, KvCache* cache, bool all_logits,
                       std::vector<float>* logits);

  // A batch of several sequences in one forward (continuous batching): every
  // matmul runs over all tokens, attention per segment over its own keys.
  //   tokens, positions  [T] — the segments' tokens, concatenated
  //   segments           consecutive runs of one sequence each, in order
  //   logit_rows         batch rows whose logits are wanted (e.g. each
  //                      sampling segment's last token); logits [rows, V]
  // The caller validated the ids and made room in `kv` for every position.
  absl::Status ForwardBatch(std::span<const int32_t> tokens, std::span<const int32_t> positions,
                            std::span<const SeqSegment> segments, KvStore* kv,
                            std::span<const int64_t> logit_rows, std::vector<float>* logits);

  // Same, also returning the residual stream after the embedding and after
  // each layer ([n, H] each) so a mismatch against a reference names a layer.
  absl::Status ForwardWithTrace(std::span<const int32_t> tokens, KvCache* cache, bool all_logits,
                                std::vector<float>* logits,
                                std::vector<std::vector<float>>* trace);

  // Weight bytes one decode step reads (every matrix once; the embedding row
  // is negligible, the LM head is counted). Used by `facet bench`.
  int64_t DecodeWeightBytes() const;

 private:
  ModelConfig config_;
  ModelWeights weights_;
  ThreadPool* pool_;
  LayerFn layer_fn_;
  Activations act_;
  int64_t act_tokens_ = 0;
  std::vector<float> x_;  // [T, H] residual stream
  std::vector<float> rows_;  // [rows, H] final-norm input rows that need logits

  absl::Status Run(std::span<const int32_t> tokens, std::span<const int32_t> positions,
                   std::span<const SeqSegment> segments, KvStore* kv,
                   std::span<const int64_t> logit_rows, std::vector<float>* logits,
                   std::vector<std::vector<float>>* trace);
};

}  // namespace facet
