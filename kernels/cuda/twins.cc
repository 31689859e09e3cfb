#include "kernels/cuda/twins.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/sample_hash.h"

namespace facet::cuda::twin {

void AddRmsNorm(const float* branch, const float* w_post, float* resid, float resid_scale,
                const float* w_next, float* next, int64_t rows, int64_t dim, float eps,
                bool plus_one) {
  std::vector<float> normed(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const float* b = branch + r * dim;
    float* x = resid + r * dim;
    if (w_post != nullptr) {
      cpu::ref::RmsNorm(b, w_post, normed.data(), 1, dim, eps, plus_one);
    } else {
      std::copy(b, b + dim, normed.begin());
    }
    for (int64_t i = 0; i < dim; ++i) x[i] = (x[i] + normed[i]) * resid_scale;
    if (next != nullptr) cpu::ref::RmsNorm(x, w_next, next + r * dim, 1, dim, eps, plus_one);
  }
}

void MoeBlockEnd(const float* dense, const float* w1, const float* experts, const float* w2,
                 const float* w_post, float* resid, float resid_scale, const float* w_next,
                 float* next, int64_t rows, int64_t dim, float eps) {
  std::vector<float> a(dim), b(dim);
  for (int64_t r = 0; r < rows; ++r) {
    cpu::ref::RmsNorm(dense + r * dim, w1, a.data(), 1, dim, eps, false);
    cpu::ref::RmsNorm(experts + r * dim, w2, b.data(), 1, dim, eps, false);
    for (int64_t i = 0; i < dim; ++i) a[i] += b[i];
    AddRmsNorm(a.data(), w_post, resid + r * dim, resid_scale, w_next,
               next == nullptr ? nullptr : next + r * dim, 1, dim, eps, false);
  }
}

absl::StatusOr<std::vector<float>> RopeInvFreq(int64_t head_dim, float theta, float linear_factor,
                                               float partial_rotary_factor, bool proportional) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RopeInvFreq: head_dim ", head_dim));
  }
  if (!proportional && partial_rotary_factor != 1.0f) {
    return absl::InvalidArgumentError("RopeInvFreq: partial_rotary_factor needs proportional RoPE");
  }
  const int64_t half = head_dim / 2;
  // Proportional: int(partial_rotary_factor · head_dim // 2) pairs turn.
  const int64_t rotated = std::clamp<int64_t>(
      proportional ? int64_t(std::floor(double(partial_rotary_factor) * double(head_dim) / 2.0))
                   : half,
      0, half);
  std::vector<float> inv(half, 0.0f);
  for (int64_t i = 0; i < rotated; ++i) {
    const float exponent = float(2 * i) / float(head_dim);
    inv[i] = 1.0f / float(std::pow(double(theta), double(exponent)));
    if (linear_factor != 1.0f) inv[i] /= linear_factor;
  }
  return inv;
}

absl::Status QkNormRopeKv(const QkvRope& p) {
  const int64_t D = p.head_dim, Nq = p.num_heads, Nkv = p.num_kv_heads;
  const int64_t row = (Nq + (p.k_eq_v ? 1 : 2) * Nkv) * D;
  std::vector<float> q(Nq * D), k(Nkv * D), v(Nkv * D);
  int64_t bad = 0;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const float* src = p.qkv + t * row;
    std::copy(src, src + Nq * D, q.begin());
    std::copy(src + Nq * D, src + (Nq + Nkv) * D, k.begin());
    const float* vsrc = p.k_eq_v ? src + Nq * D : src + (Nq + Nkv) * D;
    std::copy(vsrc, vsrc + Nkv * D, v.begin());
    if (p.q_norm != nullptr) cpu::ref::RmsNorm(q.data(), p.q_norm, q.data(), Nq, D, p.eps, p.plus_one);
    if (p.k_norm != nullptr) cpu::ref::RmsNorm(k.data(), p.k_norm, k.data(), Nkv, D, p.eps, p.plus_one);
    if (p.v_norm) cpu::ref::RmsNorm(v.data(), nullptr, v.data(), Nkv, D, p.eps, false);
    cpu::ref::Rope(q.data(), p.positions + t, 1, Nq, D, p.inv_freq);
    cpu::ref::Rope(k.data(), p.positions + t, 1, Nkv, D, p.inv_freq);
    std::copy(q.begin(), q.end(), p.q_out + t * Nq * D);
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    if (slot >= p.num_slots) {
      ++bad;
      continue;
    }
    std::copy(k.begin(), k.end(), p.k_cache + slot * Nkv * D);
    std::copy(v.begin(), v.end(), p.v_cache + slot * Nkv * D);
  }
  if (bad > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkNormRopeKv: ", bad, " tokens with a slot >= num_slots ", p.num_slots));
  }
  return absl::OkStatus();
}

absl::StatusOr<MoePermutation> MoePermute(const int32_t* ids, int64_t T, int64_t k, int64_t E,
                                          int64_t tile_rows, int64_t max_tiles) {
  MoePermutation out;
  std::vector<int32_t> counts(E, 0);
  for (int64_t p = 0; p < T * k; ++p) {
    if (ids[p] < 0 || ids[p] >= E) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoePermute: expert id ", ids[p], " at pair ", p, " outside [0, ", E, ")"));
    }
    ++counts[ids[p]];
  }
  out.offsets.resize(E + 1);
  out.tile_expert.assign(max_tiles, -1);
  int64_t tile = 0;
  for (int64_t e = 0; e < E; ++e) {
    out.offsets[e] = int32_t(tile * tile_rows);
    const int64_t tiles = (counts[e] + tile_rows - 1) / tile_rows;
    if (tile + tiles > max_tiles) return absl::InternalError("MoePermute: max_tiles too small");
    for (int64_t q = 0; q < tiles; ++q) out.tile_expert[tile + q] = int32_t(e);
    tile += tiles;
  }
  out.offsets[E] = int32_t(tile * tile_rows);
  out.row_src.assign(max_tiles * tile_rows, -1);
  out.pair_row.assign(T * k, -1);
  std::vector<int32_t> next(out.offsets.begin(), out.offsets.end() - 1);
  for (int64_t p = 0; p < T * k; ++p) {  // ascending p within each expert
    const int32_t r = next[ids[p]]++;
    out.row_src[r] = int32_t(p);
    out.pair_row[p] = r;
  }
  return out;
}

std::vector<float> DequantizeFp8(const uint8_t* w, int64_t N, int64_t K, const float* scales,
                                 bool block128) {
  std::vector<float> out(N * K);
  const int64_t kb = (K + 127) / 128;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < K; ++c) {
      const float s = block128 ? scales[(n / 128) * kb + c / 128] : scales[n];
      out[n * K + c] = Fp8E4M3ToF32(w[n * K + c]) * s;
    }
  }
  return out;
}

int32_t Sample(const float* x, int64_t V, const SampleArgs& a) {
  // Best first: larger value, then lower id; NaN last.
  auto better = [&](int32_t i, int32_t j) {
    if (std::isnan(x[j])) return !std::isnan(x[i]) || i < j;
    if (std::isnan(x[i])) return false;
    return x[i] > x[j] || (x[i] == x[j] && i < j);
  };
  int32_t top = 0;
  for (int32_t i = 1; i < int32_t(V); ++i) {
    if (better(i, top)) top = i;
  }
  if (std::isnan(x[top])) return 0;
  const float m = x[top];
  if (a.temperature == 0 || !std::isfinite(m)) return top;
  const float t = a.temperature;
  std::vector<int32_t> order;
  for (int32_t i = 0; i < int32_t(V); ++i) {
    if (!std::isnan(x[i])) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), better);
  size_t kept = order.size();
  if (a.top_k > 0 && a.top_k < V && size_t(a.top_k) < order.size()) {
    const float thr = x[order[a.top_k - 1]];
    kept = a.top_k;
    while (kept < order.size() && x[order[kept]] >= thr) ++kept;  // ties with the k-th stay
  }
  if (a.top_p < 1.0f) {
    double z = 0;
    for (size_t j = 0; j < kept; ++j) z += std::exp((x[order[j]] - m) / t);
    const double target = double(a.top_p) * z;
    double before = 0;
    size_t n = 0;
    while (n < kept && before < target) before += std::exp((x[order[n++]] - m) / t);
    kept = n;
  }
  const double log_min_p = a.min_p > 0 ? std::log(double(a.min_p)) : -HUGE_VAL;
  int32_t best_id = top;
  float best = -INFINITY;
  for (size_t j = 0; j < kept; ++j) {
    const int32_t i = order[j];
    if (!((double(x[i]) - m) / t >= log_min_p)) continue;
    const float key = x[i] / t + sample_hash::Noise(a.seed, a.step, i);
    if (key > best || (key == best && i < best_id)) best = key, best_id = i;
  }
  return best_id;
}

}  // namespace facet::cuda::twin
