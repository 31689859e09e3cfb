// Causal GQA attention, flash style: keys are visited in tiles with an online
// (running max) fp32 softmax, so memory is O(tile) whatever the context.
//
// Work item = (query token, kv head, key split). All query heads of a GQA
// group are done together so each K/V row is read once per group. Sliding
// layers only visit the keys inside the window. When there are fewer
// (token, kv head) items than threads — decode with few kv heads — the key
// range is split across threads and the partial softmax states merged
// afterwards ("flash decoding").

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/hwy_targets.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ops_check.h"

#ifndef FACET_KERNELS_CPU_ATTENTION_JOB_
#define FACET_KERNELS_CPU_ATTENTION_JOB_
namespace facet::cpu::internal {

struct AttnJob {
  AttentionParams p;
  const float* q;
  const int32_t* q_pos;
  const float* k;
  const float* v;
  int64_t num_kv;
  int64_t kv_pos0;
  float* out;
  int64_t splits;   // key splits per (token, kv head)
  float* partial;   // splits > 1: [items, splits, group, D + 2] (acc, max, sum)
};

}  // namespace facet::cpu::internal
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/attention.cc"
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
constexpr int64_t kKeyTile = 32;

float Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const DF df;
  VF s0 = hn::Zero(df), s1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * int64_t(kLanes) <= n; i += 2 * kLanes) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + kLanes), hn::LoadU(df, b + i + kLanes), s1);
  }
  for (; i + int64_t(kLanes) <= n; i += kLanes) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// acc[0:n] = acc · scale + p · v  (scale = 1 skips the multiply).
void ScaleAddRow(float* HWY_RESTRICT acc, float scale, float p, const float* HWY_RESTRICT v,
                 int64_t n) {
  const DF df;
  const VF vp = hn::Set(df, p), vs = hn::Set(df, scale);
  int64_t i = 0;
  if (scale == 1.0f) {
    for (; i + int64_t(kLanes) <= n; i += kLanes) {
      hn::StoreU(hn::MulAdd(vp, hn::LoadU(df, v + i), hn::LoadU(df, acc + i)), df, acc + i);
    }
    for (; i < n; ++i) acc[i] += p * v[i];
  } else {
    for (; i + int64_t(kLanes) <= n; i += kLanes) {
      const VF a = hn::Mul(hn::LoadU(df, acc + i), vs);
      hn::StoreU(hn::MulAdd(vp, hn::LoadU(df, v + i), a), df, acc + i);
    }
    for (; i < n; ++i) acc[i] = acc[i] * scale + p * v[i];
  }
}

// exp(x[i] - shift) in place for n <= kKeyTile values; returns their sum.
float ExpShiftSum(float* x, int64_t n, float shift) {
  const DF df;
  HWY_ALIGN float buf[kKeyTile + kLanes];
  std::memcpy(buf, x, n * sizeof(float));
  // Padding lanes get exp(-inf) = 0 and do not disturb the sum.
  for (int64_t i = n; i < int64_t(kKeyTile + kLanes); ++i) buf[i] = -INFINITY;
  const VF vshift = hn::Set(df, shift);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; i += kLanes) {
    const VF e = hn::Exp(df, hn::Sub(hn::Load(df, buf + i), vshift));
    hn::Store(e, df, buf + i);
  }
  for (int64_t i = 0; i < n; ++i) sum += buf[i];
  std::memcpy(x, buf, n * sizeof(float));
  return sum;
}



// Runs keys [j0, j1) (row indices) for query token t, kv head kvh. Leaves the
// un-normalised accumulator in acc[group][D] and max / sum in m[g], l[g].
void AttendRange(const internal::AttnJob& job, int64_t t, int64_t kvh, int64_t j0, int64_t j1, float* acc,
                 float* m, float* l, float* scores) {
  const AttentionParams& p = job.p;
  const int64_t D = p.head_dim, group = p.num_heads / p.num_kv_heads;
  const float* q = job.q + (t * p.num_heads + kvh * group) * D;
  std::fill(acc, acc + group * D, 0.0f);
  std::fill(m, m + group, -INFINITY);
  std::fill(l, l + group, 0.0f);
  for (int64_t jt = j0; jt < j1; jt += kKeyTile) {
    const int64_t n = std::min(kKeyTile, j1 - jt);
    for (int64_t g = 0; g < group; ++g) {
      float* s = scores + g * kKeyTile;
      for (int64_t j = 0; j < n; ++j) {
        const float* kr = job.k + ((jt + j) * p.num_kv_heads + kvh) * D;
        float dot = Dot(q + g * D, kr, D) * p.scale;
        if (p.softcap > 0.0f) dot = p.softcap * std::tanh(dot / p.softcap);
        s[j] = dot;
      }
      const float tile_max = *std::max_element(s, s + n);
      const float m_new = std::max(m[g], tile_max);
      // First tile: m = -inf, correction exp(-inf) = 0 on an all-zero state.
      const float corr = m[g] == -INFINITY ? 0.0f : std::exp(m[g] - m_new);
      m[g] = m_new;
      l[g] = l[g] * corr + ExpShiftSum(s, n, m_new);
      float* a = acc + g * D;
      for (int64_t j = 0; j < n; ++j) {
        const float* vr = job.v + ((jt + j) * p.num_kv_heads + kvh) * D;
        ScaleAddRow(a, j == 0 ? corr : 1.0f, s[j], vr, D);
      }
    }
  }
}

// Visible key rows for token t: [lo, hi).
void KeyRange(const internal::AttnJob& job, int64_t t, int64_t* lo, int64_t* hi) {
  const int64_t qpos = job.q_pos[t];
  int64_t oldest = job.kv_pos0;
  if (job.p.window > 0) oldest = std::max<int64_t>(oldest, qpos - job.p.window + 1);
  const int64_t newest = std::min<int64_t>(qpos, job.kv_pos0 + job.num_kv - 1);
  *lo = oldest - job.kv_pos0;
  *hi = std::max(*lo, newest - job.kv_pos0 + 1);
}

void RunItems(const internal::AttnJob& job, int64_t i0, int64_t i1) {
  const AttentionParams& p = job.p;
  const int64_t D = p.head_dim, group = p.num_heads / p.num_kv_heads;
  thread_local internal::ScratchFloats scratch;
  float* acc = scratch.Get(group * (D + 2 + kKeyTile));
  float* m = acc + group * D;
  float* l = m + group;
  float* scores = l + group;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t split = item % job.splits;
    const int64_t t = item / job.splits / p.num_kv_heads;
    const int64_t kvh = item / job.splits % p.num_kv_heads;
    int64_t lo, hi;
    KeyRange(job, t, &lo, &hi);
    const int64_t per = (hi - lo + job.splits - 1) / job.splits;
    const int64_t j0 = std::min(hi, lo + split * per), j1 = std::min(hi, j0 + per);
    AttendRange(job, t, kvh, j0, j1, acc, m, l, scores);
    if (job.splits == 1) {
      for (int64_t g = 0; g < group; ++g) {
        float* o = job.out + (t * p.num_heads + kvh * group + g) * D;
        const float inv = 1.0f / l[g];
        for (int64_t d = 0; d < D; ++d) o[d] = acc[g * D + d] * inv;
      }
    } else {
      float* part = job.partial + item * group * (D + 2);
      for (int64_t g = 0; g < group; ++g) {
        std::memcpy(part + g * (D + 2), acc + g * D, D * sizeof(float));
        part[g * (D + 2) + D] = m[g];
        part[g * (D + 2) + D + 1] = l[g];
      }
    }
  }
}

// Merges the split partial states of (token, kv head) items [i0, i1).
void MergeSplits(const internal::AttnJob& job, int64_t i0, int64_t i1) {
  const AttentionParams& p = job.p;
  const int64_t D = p.head_dim, group = p.num_heads / p.num_kv_heads;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t t = item / p.num_kv_heads, kvh = item % p.num_kv_heads;
    for (int64_t g = 0; g < group; ++g) {
      const float* first = job.partial + (item * job.splits) * group * (D + 2) + g * (D + 2);
      float m = -INFINITY;
      for (int64_t s = 0; s < job.splits; ++s) m = std::max(m, first[s * group * (D + 2) + D]);
      float* o = job.out + (t * p.num_heads + kvh * group + g) * D;
      std::fill(o, o + D, 0.0f);
      float l = 0.0f;
      for (int64_t s = 0; s < job.splits; ++s) {
        const float* part = first + s * group * (D + 2);
        if (part[D] == -INFINITY) continue;  // empty split
        const float w = std::exp(part[D] - m);
        l += part[D + 1] * w;
        for (int64_t d = 0; d < D; ++d) o[d] += part[d] * w;
      }
      const float inv = 1.0f / l;
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
    }
  }
}

void AttentionImpl(const internal::AttnJob& job, ThreadPool* pool) {
  const int64_t items = job.p.num_q_tokens * job.p.num_kv_heads;
  const int64_t work = items * job.splits;
  if (pool == nullptr) {
    RunItems(job, 0, work);
  } else {
    pool->ParallelFor(work, 1, [&](int64_t b, int64_t e) { RunItems(job, b, e); });
  }
  if (job.splits > 1) {
    if (pool == nullptr) {
      MergeSplits(job, 0, items);
    } else {
      pool->ParallelFor(items, 1, [&](int64_t b, int64_t e) { MergeSplits(job, b, e); });
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace facet::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet::cpu {

HWY_EXPORT(AttentionImpl);

absl::Status Attention(const AttentionParams& p, const float* q, const int32_t* q_pos,
                       const float* k, const float* v, int64_t num_kv, int64_t kv_pos0,
                       float* out, ThreadPool* pool) {
  RETURN_IF_ERROR(internal::CheckAttention(p, q, q_pos, k, v, num_kv, kv_pos0, out));
  if (p.num_q_tokens == 0) return absl::OkStatus();
  internal::AttnJob job{p, q, q_pos, k, v, num_kv, kv_pos0, out, 1, nullptr};
  // Split the keys only when (token, kv head) items cannot keep every thread
  // busy, and only into pieces long enough to amortise the merge.
  const int64_t threads = pool == nullptr ? 1 : pool->num_threads();
  const int64_t items = p.num_q_tokens * p.num_kv_heads;
  std::vector<float> partial;
  if (items < 2 * threads) {
    int64_t longest = 0;
    for (int64_t t = 0; t < p.num_q_tokens; ++t) {
      int64_t newest = std::min<int64_t>(q_pos[t], kv_pos0 + num_kv - 1);
      int64_t oldest = kv_pos0;
      if (p.window > 0) oldest = std::max<int64_t>(oldest, q_pos[t] - p.window + 1);
      longest = std::max(longest, newest - oldest + 1);
    }
    constexpr int64_t kMinKeysPerSplit = 256;
    job.splits = std::max<int64_t>(
        1, std::min((2 * threads + items - 1) / items, longest / kMinKeysPerSplit));
  }
  if (job.splits > 1) {
    const int64_t group = p.num_heads / p.num_kv_heads;
    partial.resize(items * job.splits * group * (p.head_dim + 2));
    job.partial = partial.data();
  }
  HWY_DYNAMIC_DISPATCH(AttentionImpl)(job, pool);
  return absl::OkStatus();
}

}  // namespace facet::cpu
#endif  // HWY_ONCE
