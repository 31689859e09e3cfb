// The GPU forward (cuda_model.h). One layer routine for every family: the
// order of operations is models/layer.cc + gemma{2,3,4}.cc with the block
// boundaries fused (kernels/cuda/ops.h AddRmsNorm):
//   h = attn_norm(x)                                   (previous boundary)
//   q, k, v = split(h · Wqkvᵀ); q/k norm, v norm, RoPE; k, v → paged cache
//   o = attention(q, cache) · Woᵀ
//   x = x + post_attn_norm(o);  h = ffn_norm(x)        (AddRmsNorm)
//   f = down(gelu(gate(h)) ⊙ up(h))                     [+ MoE branch, Gemma 4]
//   x = (x + post_ffn_norm(f)) · layer_scalar;  h = next layer's attn_norm(x)
// and after the last layer h = final_norm(x) → LM head → softcap.
#include "models/cuda/cuda_model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "models/cuda/cuda_layer.h"
#include "models/cuda/reference_kernels.h"

namespace facet {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;

// Shapes the tuned kernels take; the rest run on reference_kernels.h.
bool FastAttention(int D) { return D == 128 || D == 256 || D == 512; }
bool FastQkRope(int D) { return D == 64 || D == 128 || D == 256 || D == 512; }
bool FastMoe(int64_t H, int64_t F) {
  return (2 * F) % 64 == 0 && F % 32 == 0 && H % 64 == 0;  // grouped GEMM tiles
}

// Decode graphs allow this many key pieces (split-KV) per sequence; the
// split count is baked into the graph, the piece length follows kv_len.
constexpr int kGraphMaxSplits = 16;
constexpr int kEagerMaxSplits = 32;

size_t Align(size_t n) { return (n + 255) / 256 * 256; }

template <typename T>
T* At(const DeviceBuffer& b, size_t offset) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(b.data()) + offset);
}

absl::StatusOr<DeviceBuffer> Zeros(size_t bytes) {
  ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(std::max<size_t>(bytes, 256)));
  FACET_CUDA_RETURN(cudaMemset(b.data(), 0, b.bytes()));
  return b;
}

}  // namespace

struct CudaModel::Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec != nullptr) FACET_CUDA_CHECK(cudaGraphExecDestroy(exec));
    if (graph != nullptr) FACET_CUDA_CHECK(cudaGraphDestroy(graph));
  }
};

int64_t DecodeGraphBucket(int64_t batch, int64_t max_seqs) {
  int64_t b = 1;
  while (b < batch) b = b < 8 ? b * 2 : b < 64 ? b + 8 : b + 32;
  return std::min(b, std::max<int64_t>(max_seqs, batch));
}

CudaModel::~CudaModel() {
  // Kernels may still read the buffers; finish them before the frees.
  if (stream_.get() != nullptr) (void)stream_.Synchronize();
  graphs_.clear();
}

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Create(const ModelConfig& config,
                                                             const ModelWeights& weights,
                                                             const CudaModelOptions& options) {
  if (cuda::DeviceCount() == 0) {
    return absl::UnavailableError("cuda model: " + cuda::DeviceDescription(0));
  }
  if (config.HasPerLayerEmbeddings()) {
    return absl::UnimplementedError("cuda model: per-layer embeddings (Gemma 4 E2B/E4B)");
  }
  if (int(config.layers.size()) != config.num_layers ||
      int(weights.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("cuda model: ", config.layers.size(),
                                                   " layer configs and ", weights.layers.size(),
                                                   " layer weights for ", config.num_layers,
                                                   " layers"));
  }
  for (int i = 0; i < config.num_layers; ++i) {
    const LayerConfig& l = config.layers[i];
    if (!l.owns_kv()) {
      return absl::UnimplementedError(
          absl::StrCat("cuda model: layer ", i, " shares another layer's KV"));
    }
    const LayerWeights& w = weights.layers[i];
    if ((w.heads.q_heads.size != 0 && w.heads.q_heads.size != l.num_heads) ||
        (w.experts.size != 0 && w.experts.size != config.num_experts)) {
      return absl::UnimplementedError("cuda model: tensor/expert-parallel shards (one GPU holds "
                                      "the whole model)");
    }
  }
  if (weights.vocab.size != 0 && weights.vocab.size != config.vocab_size) {
    return absl::UnimplementedError("cuda model: a vocabulary-parallel shard");
  }
  if (options.block_size < 1 || options.max_tokens < 1 || options.max_seqs < 1 ||
      options.max_logit_rows < 0 || options.max_context < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda model: block_size ", options.block_size, ", max_tokens ", options.max_tokens,
        ", max_seqs ", options.max_seqs, " must be positive"));
  }
  const bool has[kNumCudaPools] = {config.NumGlobalLayers() > 0, config.NumSlidingLayers() > 0};
  for (int p = 0; p < kNumCudaPools; ++p) {
    if (has[p] && options.num_blocks[p] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("cuda model: the ",
                                                     p == kGlobalPool ? "global" : "sliding",
                                                     " pool needs blocks"));
    }
  }
  std::unique_ptr<CudaModel> m(new CudaModel());
  m->config_ = config;
  m->opt_ = options;
  if (m->opt_.max_logit_rows == 0) m->opt_.max_logit_rows = options.max_seqs;
  const int64_t context = options.max_context > 0
                              ? std::min<int64_t>(options.max_context, config.max_position_embeddings)
                              : config.max_position_embeddings;
  m->opt_.max_context = context;
  m->max_blocks_ = (context + options.block_size - 1) / options.block_size + 1;
  RETURN_IF_ERROR(m->Init(weights));
  return m;
}

absl::Status CudaModel::Init(const ModelWeights& weights) {
  const ModelConfig& cfg = config_;
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size;
  ASSIGN_OR_RETURN(stream_, cuda::Stream::Create());
  ASSIGN_OR_RETURN(gemm_, cuda::Gemm::Create());
  FACET_CUDA_RETURN(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, 0));

  ASSIGN_OR_RETURN(embed_, UploadEmbedding(weights.embed, &weight_bytes_));
  if (weights.lm_head.data != nullptr && weights.lm_head.data != weights.embed.data) {
    ASSIGN_OR_RETURN(lm_head_, UploadEmbedding(weights.lm_head, &weight_bytes_));
  }
  ASSIGN_OR_RETURN(final_norm_, UploadNorm(weights.final_norm, size_t(H)));
  embed_scale_ = weights.embed_scale;
  int64_t max_qkv = 0, max_q = 0, max_inter = 0;
  for (int i = 0; i < cfg.num_layers; ++i) {
    auto layer = UploadLayer(cfg, i, weights.layers[i], &weight_bytes_);
    if (!layer.ok()) {
      return absl::Status(layer.status().code(),
                          absl::StrCat("cuda model: layer ", i, ": ", layer.status().message()));
    }
    layers_.push_back(std::move(*layer));
    const LayerConfig& l = cfg.layers[i];
    max_qkv = std::max<int64_t>(max_qkv, int64_t(l.num_heads + 2 * l.num_kv_heads) * l.head_dim);
    max_q = std::max<int64_t>(max_q, l.q_dim());
    max_inter = std::max<int64_t>(max_inter, l.intermediate_size);
    // K and V per pool block, plus the scratch block. The source form needs
    // the weightless v norm (u is V) and the k-norm weight (K = RoPE(u ⊙ w)).
    const bool source = opt_.kv_source && l.k_eq_v && cfg.v_norm && FastAttention(l.head_dim) &&
                        layers_.back()->k_norm.data() != nullptr;
    kv_source_.push_back(source);
    const int pool = l.is_sliding() ? kSlidingPool : kGlobalPool;
    const size_t cache = size_t(opt_.num_blocks[pool] + 1) * opt_.block_size * l.kv_dim() * 2;
    ASSIGN_OR_RETURN(DeviceBuffer k, Zeros(cache));
    k_cache_.push_back(std::move(k));
    kv_bytes_ += int64_t(cache);
    DeviceBuffer v;
    if (!source) {
      ASSIGN_OR_RETURN(v, Zeros(cache));
      kv_bytes_ += int64_t(cache);
    }
    v_cache_.push_back(std::move(v));
  }

  // Step inputs: capacity for a padded decode batch as well as a prefill.
  const int64_t Tc = std::max(opt_.max_tokens, opt_.max_seqs);
  const int64_t Sc = opt_.max_seqs;
  const int64_t Rc = std::max(opt_.max_logit_rows, opt_.max_seqs);
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += Align(bytes);
    return at;
  };
  in_.tokens = take(Tc * 4);
  in_.positions = take(Tc * 4);
  for (int p = 0; p < kNumCudaPools; ++p) in_.slots[p] = take(Tc * 8);
  for (int p = 0; p < kNumCudaPools; ++p) in_.tables[p] = take(Sc * max_blocks_ * 4);
  in_.q_start = take((Sc + 1) * 4);
  in_.kv_len = take(Sc * 4);
  in_.rows = take(Rc * 4);
  in_.bytes = off;
  ASSIGN_OR_RETURN(in_host_, cuda::PinnedBuffer::Allocate(in_.bytes));
  ASSIGN_OR_RETURN(in_dev_, Zeros(in_.bytes));

  int64_t max_kv = 0;
  for (const LayerConfig& l : cfg.layers) max_kv = std::max<int64_t>(max_kv, l.kv_dim());
  ASSIGN_OR_RETURN(kr_, Zeros(Tc * max_kv * 2));
  {
    const std::vector<int64_t> skip(size_t(Tc), -1);
    ASSIGN_OR_RETURN(skip_slots_, DeviceBuffer::Allocate(skip.size() * sizeof(int64_t)));
    FACET_CUDA_RETURN(cudaMemcpy(skip_slots_.data(), skip.data(), skip.size() * sizeof(int64_t),
                                 cudaMemcpyHostToDevice));
  }
  ASSIGN_OR_RETURN(x_, Zeros(Tc * H * 4));
  ASSIGN_OR_RETURN(h_, Zeros(Tc * H * 2));
  ASSIGN_OR_RETURN(qkv_, Zeros(Tc * max_qkv * 2));
  ASSIGN_OR_RETURN(q_, Zeros(Tc * max_q * 2));
  ASSIGN_OR_RETURN(attn_, Zeros(Tc * max_q * 2));
  ASSIGN_OR_RETURN(o_, Zeros(Tc * H * 2));
  ASSIGN_OR_RETURN(gu_, Zeros(Tc * 2 * max_inter * 2));
  ASSIGN_OR_RETURN(act_, Zeros(Tc * max_inter * 2));
  if (cfg.HasMoe()) {
    const int64_t F = cfg.moe_intermediate_size, E = cfg.num_experts, K = cfg.top_k_experts;
    ASSIGN_OR_RETURN(moe_f_, Zeros(Tc * H * 2));
    ASSIGN_OR_RETURN(moe_e_, Zeros(Tc * H * 4));
    ASSIGN_OR_RETURN(moe_s_, Zeros(Tc * H * 4));
    ASSIGN_OR_RETURN(moe_en_, Zeros(Tc * H * 2));
    ASSIGN_OR_RETURN(moe_ids_, Zeros(Tc * K * 4));
    ASSIGN_OR_RETURN(moe_w_, Zeros(Tc * K * 4));
    const size_t ws = FastMoe(H, F) ? cuda::MoeExpertsWorkspaceBytes(Tc, H, F, E, K)
                                    : cuda::RefMoeExpertsWorkspaceBytes(Tc, F, K);
    ASSIGN_OR_RETURN(moe_ws_, Zeros(ws));
  }
  ASSIGN_OR_RETURN(rows_, Zeros(Rc * H * 2));
  ASSIGN_OR_RETURN(logits_, Zeros(Rc * V * 4));
  ASSIGN_OR_RETURN(bad_, Zeros(2 * sizeof(int32_t)));
  ASSIGN_OR_RETURN(logits_host_, cuda::PinnedBuffer::Allocate(size_t(Rc) * V * 4));
  ASSIGN_OR_RETURN(bad_host_, cuda::PinnedBuffer::Allocate(2 * sizeof(int32_t)));
  return absl::OkStatus();
}

absl::Status CudaModel::Validate(const CudaStep& s) const {
  const int64_t T = int64_t(s.tokens.size());
  const int64_t S = int64_t(s.kv_len.size());
  const int64_t R = int64_t(s.logit_rows.size());
  if (T == 0 || S == 0) return absl::InvalidArgumentError("cuda forward: no tokens or no sequences");
  if (T > opt_.max_tokens || S > opt_.max_seqs || R > opt_.max_logit_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda forward: ", T, " tokens, ", S, " sequences, ", R, " logit rows; the model holds ",
        opt_.max_tokens, ", ", opt_.max_seqs, ", ", opt_.max_logit_rows));
  }
  if (int64_t(s.positions.size()) != T || int64_t(s.q_start.size()) != S + 1 ||
      s.q_start[0] != 0 || s.q_start[S] != T) {
    return absl::InvalidArgumentError("cuda forward: positions / q_start do not match the tokens");
  }
  for (int64_t i = 0; i < S; ++i) {
    const int64_t n = s.q_start[i + 1] - s.q_start[i];
    if (n < 1 || s.q_start[i + 1] > T || s.kv_len[i] < n ||
        s.kv_len[i] > max_blocks_ * opt_.block_size) {
      return absl::InvalidArgumentError(absl::StrCat("cuda forward: sequence ", i, " has ", n,
                                                     " tokens and kv_len ", s.kv_len[i]));
    }
    // Attention takes a sequence's queries as its last n cached positions.
    for (int64_t j = 0; j < n; ++j) {
      if (s.positions[s.q_start[i] + j] != s.kv_len[i] - n + j) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cuda forward: sequence ", i, " token ", j, " at position ",
            s.positions[s.q_start[i] + j], "; its queries must be positions ", s.kv_len[i] - n,
            ".. of ", s.kv_len[i]));
      }
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    if (s.tokens[t] < 0 || s.tokens[t] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("cuda forward: token id ", s.tokens[t],
                                                     " at index ", t,
                                                     " is outside the vocabulary"));
    }
  }
  for (int p = 0; p < kNumCudaPools; ++p) {
    if (opt_.num_blocks[p] == 0) continue;
    if (int64_t(s.slots[p].size()) != T || int64_t(s.tables[p].size()) != S * max_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cuda forward: pool ", p, " has ", s.slots[p].size(), " slots and ",
          s.tables[p].size(), " table entries; expected ", T, " and ", S * max_blocks_));
    }
    for (int64_t t = 0; t < T; ++t) {
      if (s.slots[p][t] >= opt_.num_blocks[p] * opt_.block_size) {
        return absl::InvalidArgumentError(absl::StrCat("cuda forward: slot ", s.slots[p][t],
                                                       " beyond pool ", p));
      }
    }
    // The entries attention can read: the blocks below each kv_len.
    for (int64_t i = 0; i < S; ++i) {
      const int64_t used = (s.kv_len[i] + opt_.block_size - 1) / opt_.block_size;
      for (int64_t j = 0; j < used; ++j) {
        const int32_t b = s.tables[p][i * max_blocks_ + j];
        if (b >= opt_.num_blocks[p] || b < -1) {
          return absl::InvalidArgumentError(absl::StrCat("cuda forward: block ", b,
                                                         " outside pool ", p));
        }
      }
    }
  }
  for (int32_t r : s.logit_rows) {
    if (r < 0 || r >= T) {
      return absl::InvalidArgumentError(absl::StrCat("cuda forward: logit row ", r,
                                                     " outside the ", T, " tokens"));
    }
  }
  return absl::OkStatus();
}

void CudaModel::Pack(const CudaStep& s, const Dims& d) {
  uint8_t* base = in_host_.as<uint8_t>();
  auto put = [base](size_t off, const auto& v) {
    std::memcpy(base + off, v.data(), v.size() * sizeof(v[0]));
  };
  const int64_t T0 = int64_t(s.tokens.size()), S0 = int64_t(s.kv_len.size());
  const int64_t M = max_blocks_, bs = opt_.block_size;
  put(in_.tokens, s.tokens);
  put(in_.positions, s.positions);
  put(in_.q_start, s.q_start);
  put(in_.kv_len, s.kv_len);
  put(in_.rows, s.logit_rows);
  for (int p = 0; p < kNumCudaPools; ++p) {
    if (opt_.num_blocks[p] == 0) continue;
    put(in_.slots[p], s.slots[p]);
    put(in_.tables[p], s.tables[p]);
  }
  // Padding rows of a decode graph: one token at position 0 of its own
  // sequence, cached in the pool's scratch block (never handed out).
  auto i32 = [base](size_t off) { return reinterpret_cast<int32_t*>(base + off); };
  auto i64 = [base](size_t off) { return reinterpret_cast<int64_t*>(base + off); };
  for (int64_t i = S0; i < d.S; ++i) {
    const int64_t t = T0 + (i - S0);
    i32(in_.tokens)[t] = 0;
    i32(in_.positions)[t] = 0;
    i32(in_.q_start)[i + 1] = int32_t(t + 1);
    i32(in_.kv_len)[i] = 1;
    i32(in_.rows)[t] = int32_t(t);
    for (int p = 0; p < kNumCudaPools; ++p) {
      if (opt_.num_blocks[p] == 0) continue;
      i64(in_.slots[p])[t] = opt_.num_blocks[p] * bs;
      int32_t* row = i32(in_.tables[p]) + i * M;
      std::fill(row, row + M, -1);
      row[0] = int32_t(opt_.num_blocks[p]);
    }
  }
}

absl::Status CudaModel::Upload(const Dims& d) {
  // Only the used prefix of each region: the block tables are sized for the
  // longest context and would dominate a plain copy of the whole area.
  const int64_t sizes[] = {d.T * 4, d.T * 4, (d.S + 1) * 4, d.S * 4, d.R * 4};
  const size_t offs[] = {in_.tokens, in_.positions, in_.q_start, in_.kv_len, in_.rows};
  auto copy = [this](size_t off, int64_t bytes) -> absl::Status {
    FACET_CUDA_RETURN(cudaMemcpyAsync(static_cast<uint8_t*>(in_dev_.data()) + off,
                                      in_host_.as<uint8_t>() + off, size_t(bytes),
                                      cudaMemcpyHostToDevice, stream_.get()));
    return absl::OkStatus();
  };
  for (int r = 0; r < 5; ++r) RETURN_IF_ERROR(copy(offs[r], sizes[r]));
  for (int p = 0; p < kNumCudaPools; ++p) {
    if (opt_.num_blocks[p] == 0) continue;
    RETURN_IF_ERROR(copy(in_.slots[p], d.T * 8));
    RETURN_IF_ERROR(copy(in_.tables[p], d.S * max_blocks_ * 4));
  }
  return absl::OkStatus();
}

absl::StatusOr<cuda::AttentionPlan> CudaModel::Plan(int i, const Dims& d) const {
  const LayerConfig& l = config_.layers[i];
  if (!FastAttention(l.head_dim)) return cuda::AttentionPlan{};
  cuda::AttentionShape shape{l.num_heads, l.num_kv_heads, l.head_dim, config_.attention_scale,
                             config_.attn_logit_softcap, l.is_sliding() ? l.sliding_window : 0};
  cuda::AttentionBatch batch{int(d.S), nullptr, nullptr, int(d.T), d.max_q_len, d.max_kv_len};
  const bool graph = d.max_kv_len == int(max_blocks_ * opt_.block_size);
  return cuda::PlanAttention(shape, batch, num_sms_, graph ? kGraphMaxSplits : kEagerMaxSplits);
}

absl::Status CudaModel::EnsureAttentionWorkspace(size_t bytes) {
  if (bytes <= attn_ws_.bytes()) return absl::OkStatus();
  // Captured graphs hold the old pointer: they go with it.
  RETURN_IF_ERROR(stream_.Synchronize());
  graphs_.clear();
  attn_ws_.Reset();
  ASSIGN_OR_RETURN(attn_ws_, DeviceBuffer::Allocate(bytes));
  return absl::OkStatus();
}

absl::Status CudaModel::EnqueueLayer(int i, const Dims& d, const cuda::AttentionPlan& plan) {
  const ModelConfig& cfg = config_;
  const LayerConfig& l = cfg.layers[i];
  const CudaLayer& w = *layers_[i];
  const cudaStream_t st = stream_.get();
  const int64_t T = d.T, H = cfg.hidden_size, D = l.head_dim;
  const int64_t Nq = l.num_heads, Nkv = l.num_kv_heads;
  const float eps = cfg.rms_norm_eps;
  const int pool = l.is_sliding() ? kSlidingPool : kGlobalPool;
  const int64_t num_blocks = opt_.num_blocks[pool] + 1;  // with the scratch block
  bf16* h = h_.as<bf16>();
  bf16* o = o_.as<bf16>();
  float* x = x_.as<float>();

  // --- attention ---
  const int64_t qkv_cols = (Nq + (l.k_eq_v ? 1 : 2) * Nkv) * D;
  RETURN_IF_ERROR(gemm_->MatMulBf16(h, T, w.qkv.as<bf16>(), qkv_cols, H, nullptr,
                                    qkv_.as<bf16>(), st));
  cuda::QkvRopeParams p;
  p.tokens = T;
  p.num_heads = Nq;
  p.num_kv_heads = Nkv;
  p.head_dim = D;
  p.qkv = qkv_.as<bf16>();
  p.k_eq_v = l.k_eq_v;
  p.q_norm = w.q_norm.data() ? w.q_norm.as<float>() : nullptr;
  p.k_norm = w.k_norm.data() ? w.k_norm.as<float>() : nullptr;
  p.v_norm = cfg.v_norm;
  p.eps = eps;
  p.positions = At<int32_t>(in_dev_, in_.positions);
  p.inv_freq = w.inv_freq.as<float>();
  p.slot_mapping = At<int64_t>(in_dev_, in_.slots[pool]);
  p.num_slots = num_blocks * opt_.block_size;
  p.q_out = q_.as<bf16>();
  p.k_cache = k_cache_[i].as<bf16>();
  p.v_cache = v_cache_[i].as<bf16>();
  int32_t* bad_slots = bad_.as<int32_t>() + 1;
  const bool source = kv_source_[i];
  if (source) {
    // q only (every k/v slot skipped); the cache takes u = v_norm(raw k).
    p.slot_mapping = skip_slots_.as<int64_t>();
    p.num_slots = 1;
    p.v_cache = p.k_cache;
  }
  if (FastQkRope(int(D))) {
    RETURN_IF_ERROR(cuda::QkNormRopeKv(p, bad_slots, st));
  } else {
    RETURN_IF_ERROR(cuda::RefQkNormRopeKv(p, bad_slots, st));
  }
  if (source) {
    // Raw k: columns [Nq·D, (Nq + Nkv)·D) of each qkv row, made contiguous.
    const size_t row = size_t(Nkv * D) * sizeof(bf16);
    FACET_CUDA_RETURN(cudaMemcpy2DAsync(kr_.data(), row, qkv_.as<bf16>() + Nq * D,
                                        size_t(qkv_cols) * sizeof(bf16), row, size_t(T),
                                        cudaMemcpyDeviceToDevice, st));
    RETURN_IF_ERROR(cuda::WriteKvSource(kr_.as<bf16>(), At<int64_t>(in_dev_, in_.slots[pool]),
                                        int(T), int(Nkv), int(D), eps, k_cache_[i].as<bf16>(),
                                        st));
  }
  cuda::AttentionShape shape{int(Nq), int(Nkv), int(D), cfg.attention_scale,
                             cfg.attn_logit_softcap, l.is_sliding() ? l.sliding_window : 0};
  cuda::AttentionBatch batch{int(d.S), At<int32_t>(in_dev_, in_.q_start),
                             At<int32_t>(in_dev_, in_.kv_len), int(T), d.max_q_len,
                             d.max_kv_len};
  cuda::PagedKvCache kv{k_cache_[i].as<bf16>(), source ? nullptr : v_cache_[i].as<bf16>(),
                        At<int32_t>(in_dev_, in_.tables[pool]), num_blocks,
                        int(opt_.block_size), int(max_blocks_)};
  const cuda::KvSourceRebuild rebuild{w.k_norm.as<float>(), w.inv_freq.as<float>(),
                                      l.rope.RotatedPairs(l.head_dim)};
  if (FastAttention(int(D))) {
    RETURN_IF_ERROR(cuda::PagedAttention(plan, shape, batch, kv, source ? &rebuild : nullptr,
                                         q_.as<bf16>(), attn_.as<bf16>(), attn_ws_.data(),
                                         attn_ws_.bytes(), st));
  } else {
    RETURN_IF_ERROR(
        cuda::RefPagedAttention(shape, batch, kv, q_.as<bf16>(), attn_.as<bf16>(), st));
  }
  RETURN_IF_ERROR(gemm_->MatMulBf16(attn_.as<bf16>(), T, w.o.as<bf16>(), H, Nq * D, nullptr, o,
                                    st));
  // x = x + post_attn_norm(o); h = ffn_norm(x)
  RETURN_IF_ERROR(cuda::AddRmsNorm(o, w.post_attn_norm.as<float>(), x, 1.0f,
                                   w.ffn_norm.as<float>(), h, T, H, eps, false, st));

  // --- feed-forward: the dense GeGLU MLP (every family) ---
  const int64_t I = l.intermediate_size;
  RETURN_IF_ERROR(gemm_->MatMulBf16(h, T, w.gate_up.as<bf16>(), 2 * I, H, nullptr,
                                    gu_.as<bf16>(), st));
  RETURN_IF_ERROR(cuda::GeGlu(gu_.as<bf16>(), T, I, act_.as<bf16>(), st));
  RETURN_IF_ERROR(gemm_->MatMulBf16(act_.as<bf16>(), T, w.down.as<bf16>(), H, I, nullptr, o, st));

  const float* next_norm = i + 1 < cfg.num_layers ? layers_[i + 1]->attn_norm.as<float>()
                                                  : final_norm_.as<float>();
  if (!l.moe) {
    // x = (x + post_ffn_norm(f)) · layer_scalar; h = next norm(x)
    return cuda::AddRmsNorm(o, w.post_ffn_norm.as<float>(), x, w.layer_scalar, next_norm, h, T,
                            H, eps, false, st);
  }

  // --- Gemma 4 experts beside the dense MLP (gemma4.cc MoeFeedForward) ---
  const int64_t E = cfg.num_experts, K = cfg.top_k_experts, F = cfg.moe_intermediate_size;
  int32_t* ids = moe_ids_.as<int32_t>();
  float* wts = moe_w_.as<float>();
  // The router reads the un-normed residual x1 = x.
  RETURN_IF_ERROR(cuda::MoeRoute(x, T, H, w.router_scale.as<float>(), w.router.as<bf16>(), E,
                                 w.per_expert_scale.as<float>(), K, eps, ids, wts, st));
  RETURN_IF_ERROR(cuda::RmsNorm(x, w.ffn_norm_2.as<float>(), h, T, H, eps, false, st));
  float* e = moe_e_.as<float>();
  if (FastMoe(H, F)) {
    RETURN_IF_ERROR(cuda::MoeExperts(h, T, H, ids, wts, K, w.experts_gate_up.as<bf16>(),
                                     w.experts_down.as<bf16>(), E, F, e, moe_ws_.data(),
                                     moe_ws_.bytes(), st));
  } else {
    RETURN_IF_ERROR(cuda::RefMoeExperts(h, T, H, ids, wts, K, w.experts_gate_up.as<bf16>(),
                                        w.experts_down.as<bf16>(), E, F, e, moe_ws_.data(),
                                        moe_ws_.bytes(), st));
  }
  // s = post_ffn_norm_2(e) + post_ffn_norm_1(dense); f = post_ffn_norm(s)
  float* s = moe_s_.as<float>();
  RETURN_IF_ERROR(
      cuda::RmsNorm(e, w.post_ffn_norm_2.as<float>(), moe_en_.as<bf16>(), T, H, eps, false, st));
  FACET_CUDA_RETURN(cudaMemsetAsync(s, 0, size_t(T) * H * sizeof(float), st));
  RETURN_IF_ERROR(cuda::AddRmsNorm(moe_en_.as<bf16>(), nullptr, s, 1.0f, nullptr, nullptr, T, H,
                                   eps, false, st));
  RETURN_IF_ERROR(cuda::AddRmsNorm(o, w.post_ffn_norm_1.as<float>(), s, 1.0f,
                                   w.post_ffn_norm.as<float>(), moe_f_.as<bf16>(), T, H, eps,
                                   false, st));
  // x = (x + f) · layer_scalar; h = next norm(x)
  return cuda::AddRmsNorm(moe_f_.as<bf16>(), nullptr, x, w.layer_scalar, next_norm, h, T, H, eps,
                          false, st);
}

absl::Status CudaModel::Enqueue(const Dims& d) {
  const ModelConfig& cfg = config_;
  const cudaStream_t st = stream_.get();
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size;
  int32_t* bad = bad_.as<int32_t>();
  FACET_CUDA_RETURN(cudaMemsetAsync(bad, 0, 2 * sizeof(int32_t), st));
  RETURN_IF_ERROR(cuda::Embed(embed_.as<bf16>(), V, H, At<int32_t>(in_dev_, in_.tokens), d.T,
                              embed_scale_, x_.as<float>(), bad, st));
  RETURN_IF_ERROR(cuda::RmsNorm(x_.as<float>(), layers_[0]->attn_norm.as<float>(), h_.as<bf16>(),
                                d.T, H, cfg.rms_norm_eps, false, st));
  for (int i = 0; i < cfg.num_layers; ++i) {
    ASSIGN_OR_RETURN(cuda::AttentionPlan plan, Plan(i, d));
    RETURN_IF_ERROR(EnqueueLayer(i, d, plan));
  }
  // h now holds final_norm(x) for every row; the LM head reads the sampled
  // ones (none for a prefill chunk that stops short of the prompt's end).
  if (d.R == 0) return absl::OkStatus();
  const bf16* rows = h_.as<bf16>();
  if (d.gather) {
    RETURN_IF_ERROR(cuda::GatherRows(h_.as<bf16>(), H, At<int32_t>(in_dev_, in_.rows), d.R,
                                     rows_.as<bf16>(), st));
    rows = rows_.as<bf16>();
  }
  const bf16* head = lm_head_.data() ? lm_head_.as<bf16>() : embed_.as<bf16>();
  RETURN_IF_ERROR(gemm_->MatMulBf16(rows, d.R, head, V, H, logits_.as<float>(), nullptr, st));
  if (cfg.final_logit_softcap > 0) {
    RETURN_IF_ERROR(cuda::Softcap(logits_.as<float>(), d.R * V, cfg.final_logit_softcap, st));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::RunGraph(const Dims& d) {
  auto it = graphs_.find(d.T);
  if (it != graphs_.end()) {
    FACET_CUDA_RETURN(cudaGraphLaunch(it->second->exec, stream_.get()));
    ++graph_launches_;
    return absl::OkStatus();
  }
  // First step of this size: run it directly (which also builds the GEMM
  // plans and kernel attributes a capture must not create), then capture.
  RETURN_IF_ERROR(Enqueue(d));
  RETURN_IF_ERROR(stream_.Synchronize());
  auto g = std::make_unique<Graph>();
  FACET_CUDA_RETURN(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
  absl::Status st = Enqueue(d);
  const cudaError_t end = cudaStreamEndCapture(stream_.get(), &g->graph);
  RETURN_IF_ERROR(st);
  FACET_CUDA_RETURN(end);
  FACET_CUDA_RETURN(cudaGraphInstantiate(&g->exec, g->graph, 0));
  graphs_[d.T] = std::move(g);
  return absl::OkStatus();
}

absl::Status CudaModel::Forward(const CudaStep& step, std::vector<float>* logits) {
  RETURN_IF_ERROR(Validate(step));
  const int64_t T0 = int64_t(step.tokens.size()), S0 = int64_t(step.kv_len.size());
  const int64_t R0 = int64_t(step.logit_rows.size()), V = config_.vocab_size;
  Dims d;
  d.T = T0, d.S = S0, d.R = R0;
  bool identity = R0 == T0;
  for (int64_t r = 0; identity && r < R0; ++r) identity = step.logit_rows[r] == r;
  d.gather = !identity;
  for (int64_t i = 0; i < S0; ++i) {
    d.max_q_len = std::max(d.max_q_len, step.q_start[i + 1] - step.q_start[i]);
    d.max_kv_len = std::max(d.max_kv_len, step.kv_len[i]);
  }
  const bool graph = opt_.cuda_graphs && T0 == S0 && identity;
  if (graph) {
    // Padded to the bucket; planned for the longest context so that one
    // graph serves every later step of this batch size.
    d.T = d.S = d.R = DecodeGraphBucket(S0, opt_.max_seqs);
    d.max_q_len = 1;
    d.max_kv_len = int(max_blocks_ * opt_.block_size);
  }
  Pack(step, d);
  size_t ws = 0;
  for (int i = 0; i < config_.num_layers; ++i) {
    ASSIGN_OR_RETURN(cuda::AttentionPlan plan, Plan(i, d));
    ws = std::max(ws, plan.workspace_bytes);
  }
  RETURN_IF_ERROR(EnsureAttentionWorkspace(ws));
  RETURN_IF_ERROR(Upload(d));
  if (graph) {
    RETURN_IF_ERROR(RunGraph(d));
  } else {
    RETURN_IF_ERROR(Enqueue(d));
  }
  const cudaStream_t st = stream_.get();
  FACET_CUDA_RETURN(cudaMemcpyAsync(logits_host_.data(), logits_.data(),
                                    size_t(R0) * V * sizeof(float), cudaMemcpyDeviceToHost, st));
  FACET_CUDA_RETURN(cudaMemcpyAsync(bad_host_.data(), bad_.data(), 2 * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, st));
  RETURN_IF_ERROR(stream_.Synchronize());
  const int32_t* bad = bad_host_.as<int32_t>();
  if (bad[0] != 0 || bad[1] != 0) {
    return absl::InternalError(absl::StrCat("cuda forward: the device saw ", bad[0],
                                            " bad token ids and ", bad[1], " bad cache slots"));
  }
  const float* src = logits_host_.as<float>();
  logits->assign(src, src + R0 * V);
  return absl::OkStatus();
}

}  // namespace facet
