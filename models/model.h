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
#include "parallel/communicator.h"

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
    // Tensor / expert parallel groups (parallel/communicator.h), owned by the
    // caller and outliving the model; null = this rank holds everything.
    // The rank loads only its shard and config() is the shard's config
    // (local head counts and MLP width, for KV caches and activations).
    parallel::Communicator* tp = nullptr;
    parallel::Communicator* ep = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, ThreadPool* pool,
                                                     const LoadOptions& options);
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, ThreadPool* pool) {
    return Load(path, pool, LoadOptions{});
  }

  Model(ModelConfig config, ModelWeights weights, ThreadPool* pool);

  const ModelConfig& config() const { return config_; }
  // The model's own config (full head counts) when config() is a shard's.
  const ModelConfig& full_config() const { return full_config_; }
  parallel::Communicator* tp() const { return tp_; }
  parallel::Communicator* ep() const { return ep_; }
  // Vocabulary rows of this rank's LM head ([0, V) unsharded).
  parallel::Range vocab_shard() const { return weights_.vocab; }
  // Under TP, logits are all-gathered to [rows, V] unless this is off; then
  // they stay [rows, V/tp] for this rank's vocab_shard() (for the
  // distributed sampler, Sampler::SampleSharded in worker/sampler.h).
  void set_gather_logits(bool on) { gather_logits_ = on; }
  bool gather_logits() const { return gather_logits_; }
  // Bytes of gathered logits ([rows, V] fp32 per forward) this rank has
  // received from GatherLogits so far; stays 0 while the gather is off, so a
  // test can prove the engine never gathers.
  int64_t gathered_logit_bytes() const { return gathered_logit_bytes_; }
  // Called by Load: the groups the forward's collectives run on.
  void SetParallel(ModelConfig full_config, parallel::Communicator* tp, parallel::Communicator* ep);
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
  ModelConfig full_config_;
  ModelWeights weights_;
  parallel::Communicator* tp_ = nullptr;
  parallel::Communicator* ep_ = nullptr;
  bool gather_logits_ = true;
  int64_t gathered_logit_bytes_ = 0;
  std::vector<float> local_logits_;  // [rows, V/tp] before the gather
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
