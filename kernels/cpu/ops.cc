// Element-wise and row-wise kernels (Embed, RmsNorm, RoPE, GeGLU, softcap),
// the RoPE frequency table and the Gemma 4 MoE router / experts. MatMul lives
// in matmul.cc, Attention in attention.cc.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "core/logging.h"
#include "kernels/cpu/hwy_targets.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ops_check.h"
#include "kernels/cpu/quant.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace facet::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());

// Applies `fn(vectors...) -> VF` over n floats. The ragged end goes through
// zero-padded copies so it is computed by the same vector code as the rest
// (no scalar variant to keep in sync, no reads past the arrays).
template <class Fn>
HWY_INLINE void Map1(const float* HWY_RESTRICT a, float* out, int64_t n, Fn fn) {
  const DF df;
  int64_t i = 0;
  for (; i + int64_t(kLanes) <= n; i += kLanes) hn::StoreU(fn(hn::LoadU(df, a + i)), df, out + i);
  if (i < n) {
    HWY_ALIGN float ta[kLanes] = {};
    std::memcpy(ta, a + i, (n - i) * sizeof(float));
    hn::Store(fn(hn::Load(df, ta)), df, ta);
    std::memcpy(out + i, ta, (n - i) * sizeof(float));
  }
}

template <class Fn>
HWY_INLINE void Map2(const float* a, const float* b, float* out, int64_t n, Fn fn) {
  const DF df;
  int64_t i = 0;
  for (; i + int64_t(kLanes) <= n; i += kLanes) {
    hn::StoreU(fn(hn::LoadU(df, a + i), hn::LoadU(df, b + i)), df, out + i);
  }
  if (i < n) {
    HWY_ALIGN float ta[kLanes] = {};
    HWY_ALIGN float tb[kLanes] = {};
    std::memcpy(ta, a + i, (n - i) * sizeof(float));
    std::memcpy(tb, b + i, (n - i) * sizeof(float));
    hn::Store(fn(hn::Load(df, ta), hn::Load(df, tb)), df, ta);
    std::memcpy(out + i, ta, (n - i) * sizeof(float));
  }
}

void EmbedRow(WeightFormat format, const void* row, int64_t cols, float scale, float* out) {
  const DF df;
  const VF vscale = hn::Set(df, scale);
  int64_t i = 0;
  switch (format) {
    case WeightFormat::kF32: {
      Map1(static_cast<const float*>(row), out, cols, [&](VF v) { return hn::Mul(v, vscale); });
      return;
    }
    case WeightFormat::kBF16: {
      const auto* p = static_cast<const hwy::bfloat16_t*>(row);
      const hn::Rebind<hwy::bfloat16_t, DF> dh;
      for (; i + int64_t(kLanes) <= cols; i += kLanes) {
        hn::StoreU(hn::Mul(hn::PromoteTo(df, hn::LoadU(dh, p + i)), vscale), df, out + i);
      }
      const auto* bits = static_cast<const bf16*>(row);
      for (; i < cols; ++i) out[i] = Bf16ToF32(bits[i]) * scale;
      return;
    }
    case WeightFormat::kF16: {
      const auto* p = static_cast<const hwy::float16_t*>(row);
      const hn::Rebind<hwy::float16_t, DF> dh;
      for (; i + int64_t(kLanes) <= cols; i += kLanes) {
        hn::StoreU(hn::Mul(hn::PromoteTo(df, hn::LoadU(dh, p + i)), vscale), df, out + i);
      }
      const auto* bits = static_cast<const fp16*>(row);
      for (; i < cols; ++i) out[i] = Fp16ToF32(bits[i]) * scale;
      return;
    }
    default: break;
  }
  FACET_CHECK(false) << "Embed: unsupported table format " << WeightFormatName(format);
}

float SumSquares(const float* x, int64_t n) {
  const DF df;
  VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 4 * int64_t(kLanes) <= n; i += 4 * kLanes) {
    const VF v0 = hn::LoadU(df, x + i), v1 = hn::LoadU(df, x + i + kLanes);
    const VF v2 = hn::LoadU(df, x + i + 2 * kLanes), v3 = hn::LoadU(df, x + i + 3 * kLanes);
    a0 = hn::MulAdd(v0, v0, a0);
    a1 = hn::MulAdd(v1, v1, a1);
    a2 = hn::MulAdd(v2, v2, a2);
    a3 = hn::MulAdd(v3, v3, a3);
  }
  for (; i + int64_t(kLanes) <= n; i += kLanes) {
    const VF v = hn::LoadU(df, x + i);
    a0 = hn::MulAdd(v, v, a0);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

void RmsNormRows(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps,
                 bool plus_one) {
  const DF df;
  const VF one = hn::Set(df, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    // HF: x * rsqrt(mean(x²) + eps), the mean a division, all fp32.
    const float inv = 1.0f / std::sqrt(SumSquares(xr, dim) / float(dim) + eps);
    const VF vinv = hn::Set(df, inv);
    if (w == nullptr) {
      Map1(xr, yr, dim, [&](VF v) { return hn::Mul(v, vinv); });
    } else if (plus_one) {
      // (x · inv) · (1 + w): HF forms 1 + w first, then multiplies.
      Map2(xr, w, yr, dim, [&](VF v, VF wv) { return hn::Mul(hn::Mul(v, vinv), hn::Add(one, wv)); });
    } else {
      Map2(xr, w, yr, dim, [&](VF v, VF wv) { return hn::Mul(hn::Mul(v, vinv), wv); });
    }
  }
}

// Rotates the first n_pairs pairs of one head with precomputed cos/sin.
void RopeHead(float* HWY_RESTRICT v, int64_t half, int64_t n_pairs, const float* HWY_RESTRICT cs,
              const float* HWY_RESTRICT sn) {
  const DF df;
  float* lo = v;
  float* hi = v + half;
  int64_t i = 0;
  for (; i + int64_t(kLanes) <= n_pairs; i += kLanes) {
    const VF a = hn::LoadU(df, lo + i), b = hn::LoadU(df, hi + i);
    const VF c = hn::LoadU(df, cs + i), s = hn::LoadU(df, sn + i);
    hn::StoreU(hn::Sub(hn::Mul(a, c), hn::Mul(b, s)), df, lo + i);
    hn::StoreU(hn::Add(hn::Mul(b, c), hn::Mul(a, s)), df, hi + i);
  }
  for (; i < n_pairs; ++i) {
    const float a = lo[i], b = hi[i];
    lo[i] = a * cs[i] - b * sn[i];
    hi[i] = b * cs[i] + a * sn[i];
  }
}

void RopeImpl(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
              const float* inv_freq) {
  const int64_t half = head_dim / 2;
  // Pairs with a zero frequency never turn (cos 0 = 1, sin 0 = 0 exactly):
  // proportional RoPE rotates only the first quarter, so skip the rest.
  int64_t n_pairs = half;
  while (n_pairs > 0 && inv_freq[n_pairs - 1] == 0.0f) --n_pairs;
  if (n_pairs == 0) return;
  thread_local internal::ScratchFloats scratch;
  float* cs = scratch.Get(2 * n_pairs);
  float* sn = cs + n_pairs;
  for (int64_t t = 0; t < tokens; ++t) {
    const float pos = float(positions[t]);
    for (int64_t i = 0; i < n_pairs; ++i) {
      const float angle = pos * inv_freq[i];
      cs[i] = std::cos(angle);
      sn[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) RopeHead(x + (t * heads + h) * head_dim, half, n_pairs, cs, sn);
  }
}

// torch's gelu(approximate="tanh"), vectorised the way its CPU kernel is:
// 0.5 · x · (1 + tanh(β · (x + κ · x³))), β and κ rounded to fp32.
HWY_INLINE VF GeluTanh(DF df, VF x) {
  const VF beta = hn::Set(df, float(0.79788456080286535587989211986876));
  const VF kappa = hn::Set(df, 0.044715f);
  const VF x3 = hn::Mul(hn::Mul(x, x), x);
  const VF inner = hn::Mul(beta, hn::Add(x, hn::Mul(kappa, x3)));
  const VF t = hn::Tanh(df, inner);
  return hn::Mul(hn::Mul(hn::Set(df, 0.5f), x), hn::Add(hn::Set(df, 1.0f), t));
}

void GeGluImpl(const float* gate_up, int64_t m, int64_t inter, float* out) {
  const DF df;
  for (int64_t r = 0; r < m; ++r) {
    const float* gate = gate_up + r * 2 * inter;
    Map2(gate, gate + inter, out + r * inter, inter,
         [&](VF g, VF u) { return hn::Mul(GeluTanh(df, g), u); });
  }
}

void SoftcapImpl(float* x, int64_t n, float cap) {
  const DF df;
  const VF vcap = hn::Set(df, cap);
  Map1(x, x, n, [&](VF v) { return hn::Mul(hn::Tanh(df, hn::Div(v, vcap)), vcap); });
}

void AddInPlaceImpl(float* y, const float* x, int64_t n) {
  Map2(y, x, y, n, [](VF a, VF b) { return hn::Add(a, b); });
}

void ScaleImpl(float* x, int64_t n, float s) {
  const VF vs = hn::Set(DF(), s);
  Map1(x, x, n, [&](VF v) { return hn::Mul(v, vs); });
}

// Router input: (RmsNorm_noweight(x) · scale) · root, fp32 as HF.
void RouterInputImpl(const float* x, int64_t rows, int64_t H, const float* scale, float root,
                     float eps, float* z) {
  RmsNormRows(x, nullptr, z, rows, H, eps, false);
  const VF vroot = hn::Set(DF(), root);
  for (int64_t r = 0; r < rows; ++r) {
    Map2(z + r * H, scale, z + r * H, H,
         [&](VF v, VF s) { return hn::Mul(hn::Mul(v, s), vroot); });
  }
}

// out[row] += w · y[row], multiply then add (HF: states * weight, index_add_).
void AddScaledImpl(float* out, const float* y, int64_t n, float w) {
  const VF vw = hn::Set(DF(), w);
  Map2(out, y, out, n, [&](VF o, VF v) { return hn::Add(o, hn::Mul(v, vw)); });
}

}  // namespace HWY_NAMESPACE
}  // namespace facet::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet::cpu {

HWY_EXPORT(EmbedRow);
HWY_EXPORT(RmsNormRows);
HWY_EXPORT(RopeImpl);
HWY_EXPORT(GeGluImpl);
HWY_EXPORT(SoftcapImpl);
HWY_EXPORT(AddInPlaceImpl);
HWY_EXPORT(ScaleImpl);
HWY_EXPORT(RouterInputImpl);
HWY_EXPORT(AddScaledImpl);

void Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    FACET_CHECK(ids[i] >= 0 && ids[i] < table.rows)
        << "Embed: token id " << ids[i] << " outside [0, " << table.rows << ")";
    float* row = out + i * table.cols;
    if (internal::IsFloatFormat(table.format)) {
      HWY_DYNAMIC_DISPATCH(EmbedRow)(table.format, table.row(ids[i]), table.cols, scale, row);
      continue;
    }
    // GGUF tables (often Q6_K / Q8_0): dequantize the one row, then scale.
    const absl::Status s = DequantizeRow(table.format, table.row(ids[i]), row, table.cols);
    FACET_CHECK(s.ok()) << "Embed: " << s.message();
    HWY_DYNAMIC_DISPATCH(ScaleImpl)(row, table.cols, scale);
  }
}

void RmsNorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps,
             bool plus_one) {
  FACET_CHECK(rows >= 0 && dim > 0) << "RmsNorm: rows=" << rows << " dim=" << dim;
  HWY_DYNAMIC_DISPATCH(RmsNormRows)(x, w, y, rows, dim, eps, plus_one);
}

std::vector<float> RopeInvFreq(int64_t head_dim, float theta, float linear_factor,
                               float partial_rotary_factor, bool proportional) {
  FACET_CHECK(head_dim > 0 && head_dim % 2 == 0) << "RopeInvFreq: head_dim " << head_dim;
  const int64_t half = head_dim / 2;
  // HF: inv_freq = 1.0 / (theta ** (arange(0, d, 2).float() / denom)), then
  // inv_freq /= factor. The exponent is an fp32 division and torch's pow is
  // within an ulp of the true power; the double pow rounded once to fp32 is
  // that correctly rounded value.
  int64_t rotated = 0;  // pairs that turn
  double denom = 0;     // exponent denominator
  if (proportional) {
    // rope_angles = int(partial_rotary_factor * head_dim // 2): a float floor division.
    rotated = int64_t(std::floor(double(partial_rotary_factor) * double(head_dim) / 2.0));
    denom = double(head_dim);
  } else {
    // HF's default RoPE with partial_rotary_factor < 1 turns pairs (i, i + d/2)
    // inside the first d dims (GPT-NeoX style); Rope() pairs across the full
    // head, so that layout cannot be expressed. No Gemma uses it.
    FACET_CHECK(partial_rotary_factor == 1.0f)
        << "RopeInvFreq: partial_rotary_factor " << partial_rotary_factor
        << " needs proportional RoPE";
    rotated = half;
    denom = double(head_dim);
  }
  rotated = std::clamp<int64_t>(rotated, 0, half);
  std::vector<float> inv(half, 0.0f);
  for (int64_t i = 0; i < rotated; ++i) {
    const float exponent = float(2 * i) / float(denom);
    const float power = float(std::pow(double(theta), double(exponent)));
    inv[i] = 1.0f / power;
    if (linear_factor != 1.0f) inv[i] /= linear_factor;
  }
  return inv;
}

void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          const float* inv_freq) {
  FACET_CHECK(head_dim > 0 && head_dim % 2 == 0) << "Rope: head_dim " << head_dim;
  if (tokens <= 0 || heads <= 0) return;
  HWY_DYNAMIC_DISPATCH(RopeImpl)(x, positions, tokens, heads, head_dim, inv_freq);
}

void GeGlu(const float* gate_up, int64_t m, int64_t inter, float* out) {
  FACET_CHECK(m >= 0 && inter >= 0) << "GeGlu: m=" << m << " inter=" << inter;
  HWY_DYNAMIC_DISPATCH(GeGluImpl)(gate_up, m, inter, out);
}

void Softcap(float* x, int64_t n, float cap) {
  FACET_CHECK(cap > 0.0f) << "Softcap: cap " << cap;
  HWY_DYNAMIC_DISPATCH(SoftcapImpl)(x, n, cap);
}

void AddInPlace(float* y, const float* x, int64_t n) {
  HWY_DYNAMIC_DISPATCH(AddInPlaceImpl)(y, x, n);
}

void Scale(float* x, int64_t n, float s) { HWY_DYNAMIC_DISPATCH(ScaleImpl)(x, n, s); }

// ---------------------------------------------------------------------------
// Mixture of experts.

absl::Status MoeRoute(const float* x1, int64_t T, int64_t H, const float* router_scale,
                      const WeightRef& router_proj, const float* per_expert_scale, int64_t top_k,
                      float eps, int32_t* expert_ids, float* expert_weights, ThreadPool* pool) {
  RETURN_IF_ERROR(internal::CheckMoeRoute(x1, T, H, router_scale, router_proj, per_expert_scale,
                                          top_k, expert_ids, expert_weights));
  const int64_t E = router_proj.rows;
  // HF multiplies by the python float H**-0.5, i.e. its fp32 rounding.
  const float root = float(1.0 / std::sqrt(double(H)));
  // Tokens go through the router in chunks so the projection is one batched
  // MatMul without a [T, H] buffer (the API has no workspace; this is small).
  constexpr int64_t kChunk = 32;
  const int64_t chunk = std::min(kChunk, T);
  std::vector<float> z(chunk * H), logits(chunk * E);
  std::vector<uint8_t> taken(E);
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = std::min(chunk, T - t0);
    HWY_DYNAMIC_DISPATCH(RouterInputImpl)(x1 + t0 * H, rows, H, router_scale, root, eps, z.data());
    RETURN_IF_ERROR(MatMul(z.data(), rows, router_proj, logits.data(), pool));
    for (int64_t r = 0; r < rows; ++r) {
      float* p = logits.data() + r * E;
      // fp32 softmax over all experts (spec §5.1: JAX's choice; HF uses act dtype).
      const float max_logit = *std::max_element(p, p + E);
      float sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) sum += p[e] = std::exp(p[e] - max_logit);
      for (int64_t e = 0; e < E; ++e) p[e] /= sum;
      // top_k is 8 of 128: repeated selection beats sorting. Strict '>' keeps
      // the lower id on ties.
      std::fill(taken.begin(), taken.end(), 0);
      int32_t* ids = expert_ids + (t0 + r) * top_k;
      float* ws = expert_weights + (t0 + r) * top_k;
      float kept = 0.0f;
      for (int64_t j = 0; j < top_k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
          if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
        }
        taken[best] = 1;
        ids[j] = int32_t(best);
        ws[j] = p[best];
        kept += p[best];
      }
      for (int64_t j = 0; j < top_k; ++j) ws[j] = ws[j] / kept * per_expert_scale[ids[j]];
    }
  }
  return absl::OkStatus();
}

size_t MoeExpertsWorkspaceFloats(int64_t T, int64_t H, int64_t F, int64_t /*top_k*/) {
  // Per expert, at most T gathered rows: x / down output [T, H] (one buffer,
  // x is dead once gate_up has run), gate_up [T, 2F], activation [T, F].
  return size_t(std::max<int64_t>(T, 0)) * size_t(H + 3 * F);
}

absl::Status MoeExperts(const float* x, int64_t T, const int32_t* expert_ids,
                        const float* expert_weights, int64_t top_k, const WeightRef& gate_up,
                        const WeightRef& down, int64_t num_experts, float* out, float* workspace,
                        ThreadPool* pool) {
  int64_t F = 0;
  RETURN_IF_ERROR(internal::CheckMoeExperts(x, T, expert_ids, expert_weights, top_k, gate_up,
                                            down, num_experts, out, &F));
  if (T == 0) return absl::OkStatus();
  if (workspace == nullptr) return absl::InvalidArgumentError("MoeExperts: null workspace");
  const int64_t H = gate_up.cols;
  float* xs = workspace;         // [T, H] gathered rows, then the down projection
  float* gu = xs + T * H;        // [T, 2F]
  float* act = gu + T * 2 * F;   // [T, F]

  // Counting sort of the (token, slot) pairs by expert; within an expert the
  // pairs stay in token order.
  const int64_t pairs = T * top_k;
  std::vector<int64_t> start(num_experts + 1, 0);
  for (int64_t i = 0; i < pairs; ++i) ++start[expert_ids[i] + 1];
  for (int64_t e = 0; e < num_experts; ++e) start[e + 1] += start[e];
  std::vector<int64_t> order(pairs);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < pairs; ++i) order[fill[expert_ids[i]]++] = i;
  }

  std::fill(out, out + T * H, 0.0f);
  // Ascending expert id, as HF's loop over expert_hit; a token's slots thus
  // add into out in expert order.
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t b = start[e]; b < start[e + 1]; b += T) {
      const int64_t rows = std::min(T, start[e + 1] - b);
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(xs + r * H, x + (order[b + r] / top_k) * H, H * sizeof(float));
      }
      RETURN_IF_ERROR(MatMul(xs, rows, gate_up.Rows(e * 2 * F, 2 * F), gu, pool));
      GeGlu(gu, rows, F, act);
      RETURN_IF_ERROR(MatMul(act, rows, down.Rows(e * H, H), xs, pool));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t pair = order[b + r];
        HWY_DYNAMIC_DISPATCH(AddScaledImpl)(out + (pair / top_k) * H, xs + r * H, H,
                                            expert_weights[pair]);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace facet::cpu
#endif  // HWY_ONCE
