// The whole Gemma forward pass on one GPU (issue 8): the loaded CPU weights
// uploaded as bf16, the paged bf16 KV cache pools, the activations, and one
// layer routine for Gemma 2, 3 and 4 (dense and MoE) whose per-family
// differences are the config's (LayerConfig, ModelConfig flags), as in
// models/layer.cc. Kernels come from kernels/cuda/ and
// kernels/cuda/attention/; shapes those do not take (small test head dims,
// narrow experts) run on the plain kernels of reference_kernels.h.
//
// A step arrives as host arrays (CudaStep) that the worker resolved from its
// KvBlockManager: per-pool block tables and per-token cache slots. Decode
// steps (one token per sequence) replay a CUDA graph captured per padded
// batch size; other steps launch the kernels directly.
//
// Not thread-safe: one thread (the engine loop) drives a CudaModel.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/attention/attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "models/config.h"
#include "models/cuda/cuda_step.h"
#include "models/weights.h"

namespace facet {

struct CudaLayer;  // one layer's device weights (cuda_layer.h)

struct CudaModelOptions {
  int64_t block_size = 16;
  // Physical blocks of each pool (0 when the model has no layer of that kind).
  std::array<int64_t, kNumCudaPools> num_blocks = {0, 0};
  int64_t max_tokens = 512;      // tokens per forward (prefill chunk + decodes)
  int64_t max_seqs = 64;         // sequences per forward
  int64_t max_logit_rows = 0;    // rows of logits per forward; 0: max_seqs
  int64_t max_context = 0;       // positions per sequence; 0: the model's context
  bool cuda_graphs = true;       // replay decode steps from captured graphs
  // Gemma 4 K = V global layers cache only the normalised source u and the
  // attention kernel rebuilds K (DESIGN.md §4): half the global KV bytes.
  bool kv_source = true;
};

class CudaModel {
 public:
  // Uploads `weights` (any WeightFormat; converted to bf16) and allocates the
  // caches and activations. UNAVAILABLE without a GPU; RESOURCE_EXHAUSTED
  // when it does not fit; UNIMPLEMENTED for features the GPU path lacks
  // (KV-sharing layers, per-layer embeddings, sharded weights).
  static absl::StatusOr<std::unique_ptr<CudaModel>> Create(const ModelConfig& config,
                                                           const ModelWeights& weights,
                                                           const CudaModelOptions& options);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const CudaModelOptions& options() const { return opt_; }
  // Block-table width: blocks one sequence can reference.
  int64_t max_blocks_per_seq() const { return max_blocks_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t kv_bytes() const { return kv_bytes_; }
  // Decode steps run so far from a graph, and graphs captured.
  int64_t graph_launches() const { return graph_launches_; }
  int64_t graphs_captured() const { return int64_t(graphs_.size()); }

  // Runs `step`; logits [R, V] fp32 of step.logit_rows. INVALID_ARGUMENT for
  // inconsistent or oversized input; INTERNAL when the device reported bad
  // token ids or cache slots.
  absl::Status Forward(const CudaStep& step, std::vector<float>* logits);

 private:
  struct Graph;
  // Step dimensions the launches depend on (the device arrays hold the rest).
  struct Dims {
    int64_t T = 0, S = 0, R = 0;
    int max_q_len = 0, max_kv_len = 0;
    bool gather = false;  // logit rows are not simply 0..T-1
  };

  CudaModel() = default;
  absl::Status Init(const ModelWeights& weights);
  absl::Status Validate(const CudaStep& step) const;
  // Copies the step into the pinned staging buffer (padded to `dims`).
  void Pack(const CudaStep& step, const Dims& dims);
  absl::Status Upload(const Dims& d);  // the used part of the staging buffer
  absl::Status Enqueue(const Dims& d);  // every kernel of one forward, on stream_
  absl::Status EnqueueLayer(int i, const Dims& d, const cuda::AttentionPlan& plan);
  absl::Status EnsureAttentionWorkspace(size_t bytes);
  absl::StatusOr<cuda::AttentionPlan> Plan(int i, const Dims& d) const;
  absl::Status RunGraph(const Dims& d);

  ModelConfig config_;
  CudaModelOptions opt_;
  int64_t max_blocks_ = 0;
  int64_t weight_bytes_ = 0, kv_bytes_ = 0;
  int num_sms_ = 0;

  cuda::Stream stream_;
  std::unique_ptr<cuda::Gemm> gemm_;

  // --- weights ---
  cuda::DeviceBuffer embed_;    // [V, H] bf16
  cuda::DeviceBuffer lm_head_;  // [V, H] bf16; empty when tied to embed_
  cuda::DeviceBuffer final_norm_;  // [H] f32
  float embed_scale_ = 1.0f;
  std::vector<std::unique_ptr<CudaLayer>> layers_;

  // --- KV cache: per layer [num_blocks + 1, block_size, Nkv·D] bf16 K and V
  // (a K = V source layer: u in k_cache_, no v_cache_); the extra last block
  // of each pool is scratch for padded graph rows. ---
  std::vector<cuda::DeviceBuffer> k_cache_, v_cache_;
  std::vector<bool> kv_source_;  // [layer] caches the K = V source
  cuda::DeviceBuffer kr_;          // [T, max Nkv·D] bf16 raw k of a source layer
  cuda::DeviceBuffer skip_slots_;  // [T] int64 all -1: q-only QkNormRopeKv

  // --- step inputs: one pinned staging buffer mirrored on the device ---
  struct InputLayout {
    size_t tokens, positions, q_start, kv_len, rows, bytes;
    std::array<size_t, kNumCudaPools> slots, tables;
  } in_{};
  cuda::PinnedBuffer in_host_;
  cuda::DeviceBuffer in_dev_;

  // --- activations, capacity opt_.max_tokens rows ---
  cuda::DeviceBuffer x_;      // [T, H] f32 residual stream
  cuda::DeviceBuffer h_;      // [T, H] bf16 normed sub-block input
  cuda::DeviceBuffer qkv_;    // [T, max (Nq + 2·Nkv)·D] bf16
  cuda::DeviceBuffer q_;      // [T, max Nq·D] bf16 after norm + RoPE
  cuda::DeviceBuffer attn_;   // [T, max Nq·D] bf16
  cuda::DeviceBuffer o_;      // [T, H] bf16 attention / dense MLP output
  cuda::DeviceBuffer gu_;     // [T, 2·max I] bf16
  cuda::DeviceBuffer act_;    // [T, max I] bf16
  cuda::DeviceBuffer moe_f_;  // [T, H] bf16 MoE: combined FFN output
  cuda::DeviceBuffer moe_e_;  // [T, H] f32 MoE: experts' output
  cuda::DeviceBuffer moe_s_;  // [T, H] f32 MoE: sum of the two branches
  cuda::DeviceBuffer moe_en_; // [T, H] bf16 MoE: normed experts' output
  cuda::DeviceBuffer moe_ids_;  // [T, k] int32
  cuda::DeviceBuffer moe_w_;    // [T, k] f32
  cuda::DeviceBuffer moe_ws_;   // experts workspace (tuned or reference)
  cuda::DeviceBuffer rows_;     // [R, H] bf16 final-normed rows for the LM head
  cuda::DeviceBuffer logits_;   // [R, V] f32
  cuda::DeviceBuffer attn_ws_;  // attention split-KV workspace (grows)
  cuda::DeviceBuffer bad_;      // [2] int32: bad token ids, bad cache slots
  cuda::PinnedBuffer logits_host_;  // [R, V] f32
  cuda::PinnedBuffer bad_host_;     // [2] int32

  std::map<int64_t, std::unique_ptr<Graph>> graphs_;  // padded batch size -> graph
  int64_t graph_launches_ = 0;
};

// Padded batch sizes decode graphs are captured for: 1, 2, 4, 8, then
// multiples of 8 up to 64, then of 32, capped at `max_seqs`.
int64_t DecodeGraphBucket(int64_t batch, int64_t max_seqs);

}  // namespace facet
