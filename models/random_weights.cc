#include "models/random_weights.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/half.h"

namespace facet {
namespace {

// splitmix64: a counter-based generator, so any element can be filled
// independently (and in parallel) from (seed, index).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

float Uniform(uint64_t seed, uint64_t i) {  // in [-1, 1)
  return float(Mix(seed ^ Mix(i)) >> 40) * (2.0f / float(1 << 24)) - 1.0f;
}

class Builder {
 public:
  Builder(WeightFormat f, uint64_t seed, ThreadPool* pool) : format_(f), seed_(seed), pool_(pool) {}

  WeightRef Matrix(int64_t rows, int64_t cols) {
    const uint64_t s = Mix(seed_ + ++counter_);
    const float a = std::sqrt(3.0f / float(cols));
    buffers_.emplace_back(size_t(rows * RowBytes(format_, cols)));
    uint8_t* data = buffers_.back().data();
    const WeightFormat f = format_;
    auto fill = [=](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float v = a * Uniform(s, uint64_t(i));
        switch (f) {
          case WeightFormat::kBF16: reinterpret_cast<bf16*>(data)[i] = F32ToBf16(v); break;
          case WeightFormat::kF16: reinterpret_cast<fp16*>(data)[i] = F32ToFp16(v); break;
          default: reinterpret_cast<float*>(data)[i] = v; break;
        }
      }
    };
    if (pool_) pool_->ParallelFor(rows * cols, 1 << 16, fill);
    else fill(0, rows * cols);
    return WeightRef{data, format_, rows, cols};
  }

  std::vector<float> Vector(int64_t n, float center, float spread) {
    const uint64_t s = Mix(seed_ + ++counter_);
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = center + spread * Uniform(s, uint64_t(i));
    return v;
  }

  std::shared_ptr<const void> Release() {
    return std::make_shared<std::vector<std::vector<uint8_t>>>(std::move(buffers_));
  }

 private:
  WeightFormat format_;
  uint64_t seed_;
  ThreadPool* pool_;
  uint64_t counter_ = 0;
  std::vector<std::vector<uint8_t>> buffers_;
};

}  // namespace

absl::StatusOr<ModelWeights> MakeRandomWeights(const ModelConfig& cfg, WeightFormat format,
                                               uint64_t seed, ThreadPool* pool) {
  if (format != WeightFormat::kF32 && format != WeightFormat::kBF16 && format != WeightFormat::kF16) {
    return absl::InvalidArgumentError(absl::StrCat("random weights in ",
                                                   std::string(WeightFormatName(format)),
                                                   " are not supported (use f32, f16 or bf16)"));
  }
  if (cfg.HasPerLayerEmbeddings()) {
    return absl::UnimplementedError("per-layer embeddings (Gemma 4 E2B/E4B) are not supported yet");
  }
  Builder b(format, seed, pool);
  const int64_t H = cfg.hidden_size;
  // Norm weights are stored ready to multiply: centred on 1 in both forms.
  auto norm = [&](int64_t n) { return b.Vector(n, 1.0f, 0.1f); };
  ModelWeights w;
  w.embed = b.Matrix(cfg.vocab_size, H);
  w.lm_head = w.embed;
  w.final_norm = norm(H);
  w.embed_scale = format == WeightFormat::kBF16 ? RoundBf16(cfg.EmbeddingScale()) : cfg.EmbeddingScale();
  w.layers.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    const LayerConfig& l = cfg.layers[i];
    LayerWeights& lw = w.layers[i];
    lw.attn_norm = norm(H);
    lw.post_attn_norm = norm(H);
    lw.ffn_norm = norm(H);
    lw.post_ffn_norm = norm(H);
    lw.q = b.Matrix(l.q_dim(), H);
    lw.o = b.Matrix(H, l.q_dim());
    if (cfg.qk_norm) lw.q_norm = norm(l.head_dim);
    if (l.owns_kv()) {
      lw.k = b.Matrix(l.kv_dim(), H);
      if (!l.k_eq_v) lw.v = b.Matrix(l.kv_dim(), H);
      if (cfg.qk_norm) lw.k_norm = norm(l.head_dim);
    }
    lw.gate = b.Matrix(l.intermediate_size, H);
    lw.up = b.Matrix(l.intermediate_size, H);
    lw.down = b.Matrix(H, l.intermediate_size);
    if (l.moe) {
      const int64_t E = cfg.num_experts, F = cfg.moe_intermediate_size;
      lw.ffn_norm_2 = norm(H);
      lw.post_ffn_norm_1 = norm(H);
      lw.post_ffn_norm_2 = norm(H);
      lw.router_scale = norm(H);
      lw.per_expert_scale = norm(E);
      lw.router = b.Matrix(E, H);
      lw.experts_gate_up = b.Matrix(E * 2 * F, H);
      lw.experts_down = b.Matrix(E * H, F);
    }
    if (cfg.layer_scalar) lw.layer_scalar = 1.0f;
  }
  w.storage = b.Release();
  ComputeRopeTables(cfg, &w);
  return w;
}

}  // namespace facet
