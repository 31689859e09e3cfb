// Upload of a loaded ModelWeights to the device (CudaModel::Init): matrices
// as bf16 in the fused layouts the kernels read, vectors as fp32.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"
#include "kernels/cuda/check.h"
#include "models/cuda/cuda_layer.h"

namespace facet {
namespace {

using cuda::DeviceBuffer;

// Rows of `parts` stacked into one [Σ rows, cols] bf16 matrix: bf16 rows are
// copied as they are, other formats converted row by row through fp32 in
// chunks of about 32 MiB.
absl::StatusOr<DeviceBuffer> UploadMatrix(std::initializer_list<const WeightRef*> parts,
                                          const char* name, int64_t* total_bytes) {
  int64_t rows = 0, cols = -1;
  for (const WeightRef* w : parts) {
    if (w->data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
    if (cols >= 0 && w->cols != cols) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": parts have ", cols, " and ",
                                                     w->cols, " columns"));
    }
    cols = w->cols;
    rows += w->rows;
  }
  const size_t bytes = size_t(rows) * cols * sizeof(uint16_t);
  ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::Allocate(bytes));
  *total_bytes += int64_t(bytes);
  uint8_t* dst = buf.as<uint8_t>();
  std::vector<float> f32(cols);
  std::vector<bf16> staged;
  for (const WeightRef* w : parts) {
    const size_t row_out = size_t(cols) * sizeof(uint16_t);
    if (w->format == WeightFormat::kBF16) {
      FACET_CUDA_RETURN(cudaMemcpy(dst, w->data, row_out * w->rows, cudaMemcpyHostToDevice));
      dst += row_out * w->rows;
      continue;
    }
    const int64_t chunk = std::max<int64_t>(1, (int64_t(32) << 20) / int64_t(row_out));
    for (int64_t r0 = 0; r0 < w->rows; r0 += chunk) {
      const int64_t n = std::min(chunk, w->rows - r0);
      staged.resize(size_t(n) * cols);
      for (int64_t r = 0; r < n; ++r) {
        RETURN_IF_ERROR(DequantizeRow(w->format, w->row(r0 + r), f32.data(), cols));
        for (int64_t c = 0; c < cols; ++c) staged[r * cols + c] = F32ToBf16(f32[c]);
      }
      FACET_CUDA_RETURN(
          cudaMemcpy(dst, staged.data(), row_out * n, cudaMemcpyHostToDevice));
      dst += row_out * n;
    }
  }
  return buf;
}

absl::StatusOr<DeviceBuffer> UploadVector(const std::vector<float>& v, const char* name,
                                          size_t expected) {
  if (v.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", v.size(), " values, expected ", expected));
  }
  ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::Allocate(v.size() * sizeof(float)));
  FACET_CUDA_RETURN(
      cudaMemcpy(buf.data(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return buf;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaLayer>> UploadLayer(const ModelConfig& cfg, int index,
                                                       const LayerWeights& w,
                                                       int64_t* weight_bytes) {
  const LayerConfig& l = cfg.layers[index];
  const size_t H = size_t(cfg.hidden_size), D = size_t(l.head_dim);
  auto out = std::make_unique<CudaLayer>();
  CudaLayer& c = *out;
  if (l.k_eq_v) {
    ASSIGN_OR_RETURN(c.qkv, UploadMatrix({&w.q, &w.k}, "qkv", weight_bytes));
  } else {
    ASSIGN_OR_RETURN(c.qkv, UploadMatrix({&w.q, &w.k, &w.v}, "qkv", weight_bytes));
  }
  ASSIGN_OR_RETURN(c.o, UploadMatrix({&w.o}, "o_proj", weight_bytes));
  ASSIGN_OR_RETURN(c.gate_up, UploadMatrix({&w.gate, &w.up}, "gate|up", weight_bytes));
  ASSIGN_OR_RETURN(c.down, UploadMatrix({&w.down}, "down_proj", weight_bytes));
  ASSIGN_OR_RETURN(c.attn_norm, UploadVector(w.attn_norm, "attn_norm", H));
  ASSIGN_OR_RETURN(c.post_attn_norm, UploadVector(w.post_attn_norm, "post_attn_norm", H));
  ASSIGN_OR_RETURN(c.ffn_norm, UploadVector(w.ffn_norm, "ffn_norm", H));
  ASSIGN_OR_RETURN(c.post_ffn_norm, UploadVector(w.post_ffn_norm, "post_ffn_norm", H));
  if (!w.q_norm.empty()) {
    ASSIGN_OR_RETURN(c.q_norm, UploadVector(w.q_norm, "q_norm", D));
  }
  if (!w.k_norm.empty()) {
    ASSIGN_OR_RETURN(c.k_norm, UploadVector(w.k_norm, "k_norm", D));
  }
  // The rotary table from the config (as ComputeRopeTables), [D/2].
  const RopeConfig& r = l.rope;
  ASSIGN_OR_RETURN(c.inv_freq,
                   UploadVector(cpu::RopeInvFreq(l.head_dim, r.theta, r.factor,
                                                 r.partial_rotary_factor,
                                                 r.type == RopeType::kProportional),
                                "inv_freq", D / 2));
  c.layer_scalar = cfg.layer_scalar ? w.layer_scalar : 1.0f;
  if (l.moe) {
    const size_t E = size_t(cfg.num_experts);
    ASSIGN_OR_RETURN(c.ffn_norm_2, UploadVector(w.ffn_norm_2, "ffn_norm_2", H));
    ASSIGN_OR_RETURN(c.post_ffn_norm_1, UploadVector(w.post_ffn_norm_1, "post_ffn_norm_1", H));
    ASSIGN_OR_RETURN(c.post_ffn_norm_2, UploadVector(w.post_ffn_norm_2, "post_ffn_norm_2", H));
    ASSIGN_OR_RETURN(c.router_scale, UploadVector(w.router_scale, "router_scale", H));
    ASSIGN_OR_RETURN(c.per_expert_scale, UploadVector(w.per_expert_scale, "per_expert_scale", E));
    ASSIGN_OR_RETURN(c.router, UploadMatrix({&w.router}, "router", weight_bytes));
    ASSIGN_OR_RETURN(c.experts_gate_up,
                     UploadMatrix({&w.experts_gate_up}, "experts.gate_up", weight_bytes));
    ASSIGN_OR_RETURN(c.experts_down, UploadMatrix({&w.experts_down}, "experts.down", weight_bytes));
  }
  return out;
}

absl::StatusOr<cuda::DeviceBuffer> UploadEmbedding(const WeightRef& w, int64_t* weight_bytes) {
  return UploadMatrix({&w}, "embedding", weight_bytes);
}

absl::StatusOr<cuda::DeviceBuffer> UploadNorm(const std::vector<float>& v, size_t n) {
  return UploadVector(v, "final_norm", n);
}

}  // namespace facet
