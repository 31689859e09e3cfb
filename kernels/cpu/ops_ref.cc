#include "kernels/cpu/ops_ref.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/half.h"
#include "core/logging.h"
#include "kernels/cpu/ops_check.h"

namespace facet::cpu::ref {

float WeightAt(const WeightRef& w, int64_t row, int64_t col) {
  const uint8_t* r = w.row(row);
  switch (w.format) {
    case WeightFormat::kF32: return reinterpret_cast<const float*>(r)[col];
    case WeightFormat::kF16: return Fp16ToF32(reinterpret_cast<const fp16*>(r)[col]);
    case WeightFormat::kBF16: return Bf16ToF32(reinterpret_cast<const bf16*>(r)[col]);
    default: break;
  }
  FACET_CHECK(false) << "WeightAt: format " << WeightFormatName(w.format) << " is not a float format";
  return 0.0f;
}

absl::Status MatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool*) {
  RETURN_IF_ERROR(internal::CheckMatMul(x, m, w, y));
  if (!internal::IsFloatFormat(w.format)) {
    return absl::UnimplementedError(absl::StrCat("ref::MatMul: no reference for ",
                                                 std::string(WeightFormatName(w.format))));
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t n = 0; n < w.rows; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) acc += double(x[i * w.cols + k]) * WeightAt(w, n, k);
      y[i * w.rows + n] = float(acc);
    }
  }
  return absl::OkStatus();
}

void Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    FACET_CHECK(ids[i] >= 0 && ids[i] < table.rows) << "token id " << ids[i];
    for (int64_t c = 0; c < table.cols; ++c) {
      out[i * table.cols + c] = WeightAt(table, ids[i], c) * scale;
    }
  }
}

void RmsNorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps,
             bool plus_one) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) {
      double scale = 1.0;
      if (w != nullptr) scale = plus_one ? 1.0 + w[i] : w[i];
      yr[i] = float(xr[i] * inv * scale);
    }
  }
}

void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          const float* inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        // HF: freqs = inv_freq ⊗ position in fp32, cos/sin in fp32.
        const float angle = float(positions[t]) * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

namespace {

// torch's gelu(approximate="tanh") constants, rounded to fp32 as its kernel does.
constexpr float kGeluBeta = float(0.79788456080286535587989211986876);  // sqrt(2/pi)
constexpr float kGeluKappa = 0.044715f;

double GeluTanh(double g) {
  return 0.5 * g * (1.0 + std::tanh(double(kGeluBeta) * (g + double(kGeluKappa) * g * g * g)));
}

}  // namespace

void GeGlu(const float* gate_up, int64_t m, int64_t inter, float* out) {
  for (int64_t r = 0; r < m; ++r) {
    const float* gate = gate_up + r * 2 * inter;
    const float* up = gate + inter;
    for (int64_t i = 0; i < inter; ++i) out[r * inter + i] = float(GeluTanh(gate[i]) * up[i]);
  }
}

void Softcap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = float(cap * std::tanh(double(x[i]) / cap));
}

void AddInPlace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void Scale(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

absl::Status Attention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                       const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                       float* out, ThreadPool*) {
  RETURN_IF_ERROR(internal::CheckAttention(p, q, q_pos, k, v, num_kv, kv_pos0, out));
  const int64_t D = p.head_dim, group = p.num_heads / p.num_kv_heads;
  std::vector<double> scores(num_kv);
  for (int64_t t = 0; t < p.num_q_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const float* qv = q + (t * p.num_heads + h) * D;
      const int64_t kvh = h / group;
      double max_score = -INFINITY;
      for (int64_t j = 0; j < num_kv; ++j) {
        const int64_t dist = int64_t(q_pos[t]) - (kv_pos0 + j);
        const bool allowed = dist >= 0 && (p.window == 0 || dist <= p.window - 1);
        if (!allowed) {
          scores[j] = -INFINITY;
          continue;
        }
        const float* kv = k + (j * p.num_kv_heads + kvh) * D;
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) s += double(qv[d]) * kv[d];
        s *= p.scale;
        if (p.softcap > 0.0f) s = p.softcap * std::tanh(s / p.softcap);
        scores[j] = s;
        max_score = std::max(max_score, s);
      }
      double denom = 0.0;
      for (int64_t j = 0; j < num_kv; ++j) {
        scores[j] = scores[j] == -INFINITY ? 0.0 : std::exp(scores[j] - max_score);
        denom += scores[j];
      }
      float* o = out + (t * p.num_heads + h) * D;
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j < num_kv; ++j) {
          if (scores[j] != 0.0) acc += scores[j] * v[(j * p.num_kv_heads + kvh) * D + d];
        }
        o[d] = float(acc / denom);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const WeightRef& router_proj, const float* per_expert_scale, int64_t top_k,
                      float eps, int32_t* expert_ids, float* expert_weights, ThreadPool* pool) {
  RETURN_IF_ERROR(internal::CheckMoeRoute(x1, T, H, router_scale, router_proj, per_expert_scale,
                                          top_k, expert_ids, expert_weights));
  const int64_t E = router_proj.rows;
  std::vector<float> z(H), logits(E);
  std::vector<double> prob(E);
  const double root = 1.0 / std::sqrt(double(H));
  for (int64_t t = 0; t < T; ++t) {
    RmsNorm(x1 + t * H, nullptr, z.data(), 1, H, eps, false);
    for (int64_t i = 0; i < H; ++i) z[i] = float(z[i] * double(router_scale[i]) * root);
    RETURN_IF_ERROR(MatMul(z.data(), 1, router_proj, logits.data(), pool));
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += prob[e] = std::exp(logits[e] - max_logit);
    for (int64_t e = 0; e < E; ++e) prob[e] /= sum;
    // Stable sort by descending probability keeps the lower id first on ties.
    std::vector<int32_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return prob[a] > prob[b]; });
    double kept = 0.0;
    for (int64_t j = 0; j < top_k; ++j) kept += prob[order[j]];
    for (int64_t j = 0; j < top_k; ++j) {
      expert_ids[t * top_k + j] = order[j];
      expert_weights[t * top_k + j] = float(prob[order[j]] / kept * per_expert_scale[order[j]]);
    }
  }
  return absl::OkStatus();
}

absl::Status MoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                        const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                        const WeightRef& down, int64_t num_experts, float* out, float*,
                        ThreadPool* pool) {
  int64_t F = 0;
  RETURN_IF_ERROR(internal::CheckMoeExperts(x, T, expert_ids, expert_weights, top_k, gate_up,
                                            down, num_experts, out, &F));
  const int64_t H = gate_up.cols;
  std::vector<float> gu(2 * F), act(F), y(H);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int64_t> slots(top_k);
    std::iota(slots.begin(), slots.end(), 0);
    std::stable_sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) {
      return expert_ids[t * top_k + a] < expert_ids[t * top_k + b];
    });
    std::vector<double> acc(H, 0.0);
    for (int64_t j : slots) {
      const int64_t e = expert_ids[t * top_k + j];
      RETURN_IF_ERROR(MatMul(x + t * H, 1, gate_up.Rows(e * 2 * F, 2 * F), gu.data(), pool));
      GeGlu(gu.data(), 1, F, act.data());
      RETURN_IF_ERROR(MatMul(act.data(), 1, down.Rows(e * H, H), y.data(), pool));
      for (int64_t i = 0; i < H; ++i) acc[i] += double(expert_weights[t * top_k + j]) * y[i];
    }
    for (int64_t i = 0; i < H; ++i) out[t * H + i] = float(acc[i]);
  }
  return absl::OkStatus();
}

}  // namespace facet::cpu::ref
