// Causal GQA attention, flash style: keys are visited in tiles with an online
// (running max) fp32 softmax, so memory is O(tile) whatever the context.
//
// Work item = (block of query tokens, kv head, key split). Every query head
// of the GQA group and every token of the block is a "row"; rows share each
// K/V tile while it is in L1. Per tile:
//   scores  one row against kLanes keys at a time: kLanes vector
//           accumulators over head_dim, then a transposing add tree turns
//           them into one vector of kLanes scores (no per-key horizontal sum);
//   softmax running max / sum per row, probabilities in place;
//   P·V     rows × head_dim register tiles accumulated over the tile's keys.
// Sliding layers only visit the window. When (token block, kv head) items
// cannot keep every thread busy (decode), the key range is split and the
// partial softmax states are merged afterwards ("flash decoding").

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
  int64_t q_block;  // query tokens per item
  int64_t splits;   // key splits per (token block, kv head)
  float* partial;   // splits > 1: [items·splits, rows, D + 2] (acc, max, sum)
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
using DI = hn::RebindToSigned<DF>;
constexpr int64_t kLanes = int64_t(hn::MaxLanes(DF()));
constexpr int64_t kSubTiles = kLanes >= 4 ? 4 : 8;  // score vectors per key tile
constexpr int64_t kTile = kSubTiles * kLanes;       // keys per tile
// P·V register tile: rows × vectors of head_dim (AVX-512 has 32 registers).
constexpr int kPvRows = 4;
constexpr int kPvVecs = kLanes >= 16 ? 4 : 2;

int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// acc[j] holds kLanes partial sums of key j's dot product; leaves in acc[0]
// the vector whose lane j is Σ acc[j]. Each round adds the even and odd lanes
// of two vectors side by side (ConcatEven + ConcatOdd), halving the vector
// count while the vector index moves into the lane index. Compile-time trip
// counts let the compiler keep every accumulator in a register.
template <int64_t kCount>
HWY_INLINE void SumEachVector(VF* acc) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kCount > 1) {
    const DF df;
#pragma GCC unroll 16
    for (int64_t i = 0; i < kCount / 2; ++i) {
      acc[i] = hn::Add(hn::ConcatEven(df, acc[2 * i + 1], acc[2 * i]),
                       hn::ConcatOdd(df, acc[2 * i + 1], acc[2 * i]));
    }
    SumEachVector<kCount / 2>(acc);
  }
#else
  (void)acc;
#endif
}

// Scores of one query row against kLanes keys. `kp` holds the keys packed
// chunk-major: for each kLanes-wide chunk of head_dim, the kLanes keys'
// vectors back to back, so every load is at a fixed offset from one pointer.
HWY_INLINE VF ScoreVector(const float* HWY_RESTRICT q, const float* HWY_RESTRICT kp, int64_t Dp) {
  const DF df;
  VF acc[kLanes];
#pragma GCC unroll 16
  for (int64_t j = 0; j < kLanes; ++j) acc[j] = hn::Zero(df);
  for (int64_t d = 0; d < Dp; d += kLanes) {
    const VF qv = hn::Load(df, q + d);
    const float* chunk = kp + d * kLanes;
#pragma GCC unroll 16
    for (int64_t j = 0; j < kLanes; ++j) {
      acc[j] = hn::MulAdd(qv, hn::Load(df, chunk + j * kLanes), acc[j]);
    }
  }
  SumEachVector<kLanes>(acc);
  return acc[0];
}

// acc[r, c·kLanes ..] = acc · corr[r] + Σ_j p[r, j] · v[j, c·kLanes ..] for
// RB rows, VB vectors of head_dim starting at `col`.
template <int RB, int VB>
HWY_NOINLINE void PvTile(float* HWY_RESTRICT acc, int64_t acc_stride, const float* HWY_RESTRICT p,
                         int64_t p_stride, const float* corr, const float* HWY_RESTRICT v,
                         int64_t v_stride, int64_t n) {
  const DF df;
  VF a[RB][VB];
  for (int r = 0; r < RB; ++r) {
    const VF c = hn::Set(df, corr[r]);
    for (int i = 0; i < VB; ++i) a[r][i] = hn::Mul(hn::Load(df, acc + r * acc_stride + i * kLanes), c);
  }
  for (int64_t j = 0; j < n; ++j) {
    VF vv[VB];
    for (int i = 0; i < VB; ++i) vv[i] = hn::LoadU(df, v + j * v_stride + i * kLanes);
    for (int r = 0; r < RB; ++r) {
      const VF pb = hn::Set(df, p[r * p_stride + j]);
      for (int i = 0; i < VB; ++i) a[r][i] = hn::MulAdd(pb, vv[i], a[r][i]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int i = 0; i < VB; ++i) hn::Store(a[r][i], df, acc + r * acc_stride + i * kLanes);
  }
}

template <int RB>
void PvRows(float* acc, int64_t acc_stride, const float* p, int64_t p_stride, const float* corr,
            const float* v, int64_t v_stride, int64_t n, int64_t Dp) {
  int64_t d = 0;
  for (; d + kPvVecs * kLanes <= Dp; d += kPvVecs * kLanes) {
    PvTile<RB, kPvVecs>(acc + d, acc_stride, p, p_stride, corr, v + d, v_stride, n);
  }
  for (; d < Dp; d += kLanes) PvTile<RB, 1>(acc + d, acc_stride, p, p_stride, corr, v + d, v_stride, n);
}

void Pv(float* acc, int64_t acc_stride, const float* p, int64_t p_stride, const float* corr,
        const float* v, int64_t v_stride, int64_t n, int64_t rows, int64_t Dp) {
  int64_t r = 0;
  for (; r + kPvRows <= rows; r += kPvRows) {
    PvRows<kPvRows>(acc + r * acc_stride, acc_stride, p + r * p_stride, p_stride, corr + r, v,
                    v_stride, n, Dp);
  }
  for (; r < rows; ++r) {
    PvRows<1>(acc + r * acc_stride, acc_stride, p + r * p_stride, p_stride, corr + r, v, v_stride,
              n, Dp);
  }
}

// Visible key rows [lo, hi) of query token t.
void KeyRange(const internal::AttnJob& job, int64_t t, int64_t* lo, int64_t* hi) {
  const int64_t qpos = job.q_pos[t];
  int64_t oldest = job.kv_pos0;
  if (job.p.window > 0) oldest = std::max<int64_t>(oldest, qpos - job.p.window + 1);
  const int64_t newest = std::min<int64_t>(qpos, job.kv_pos0 + job.num_kv - 1);
  *lo = oldest - job.kv_pos0;
  *hi = std::max(*lo, newest - job.kv_pos0 + 1);
}

struct Scratch {
  float* q;      // [rows, Dp] packed queries
  float* acc;    // [rows, Dp]
  float* s;      // [rows, kTile] scores, then probabilities
  float* m;      // [rows] running max
  float* l;      // [rows] running sum
  float* corr;   // [rows] this tile's rescale
  float* kpad;   // [kLanes, Dp] K sub-tile, packed for ScoreVector
  float* vpad;   // [kTile, Dp] V tile copy when head_dim is ragged
  int64_t* lo;   // [rows] visible key range
  int64_t* hi;
};

// One (token block, kv head, key split) item; leaves the un-normalised
// accumulator and max / sum per row in the scratch.
void AttendItem(const internal::AttnJob& job, int64_t t0, int64_t nt, int64_t kvh, int64_t split,
                const Scratch& sc) {
  const AttentionParams& p = job.p;
  const DF df;
  const DI di;
  const int64_t D = p.head_dim, Dp = RoundUp(D, kLanes);
  const int64_t group = p.num_heads / p.num_kv_heads, rows = nt * group;
  const int64_t kv_stride = p.num_kv_heads * D;
  const bool ragged = D != Dp;

  int64_t ulo = INT64_MAX, uhi = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / group, h = kvh * group + r % group;
    KeyRange(job, t, &sc.lo[r], &sc.hi[r]);
    ulo = std::min(ulo, sc.lo[r]);
    uhi = std::max(uhi, sc.hi[r]);
    float* qr = sc.q + r * Dp;
    std::memcpy(qr, job.q + (t * p.num_heads + h) * D, D * sizeof(float));
    std::fill(qr + D, qr + Dp, 0.0f);
  }
  std::fill(sc.acc, sc.acc + rows * Dp, 0.0f);
  std::fill(sc.m, sc.m + rows, -INFINITY);
  std::fill(sc.l, sc.l + rows, 0.0f);
  const int64_t per = (uhi - ulo + job.splits - 1) / job.splits;
  const int64_t j0 = std::min(uhi, ulo + split * per), j1 = std::min(uhi, j0 + per);

  const VF vscale = hn::Set(df, p.scale);
  const VF vcap = hn::Set(df, p.softcap);
  const VF neg_inf = hn::Set(df, -INFINITY);
  for (int64_t jt = j0; jt < j1; jt += kTile) {
    const int64_t n = std::min(kTile, j1 - jt);
    const float* kt = job.k + (jt * p.num_kv_heads + kvh) * D;
    const float* vt = job.v + (jt * p.num_kv_heads + kvh) * D;
    int64_t vstride = kv_stride;
    if (ragged || n < kTile) {
      // V rows padded to Dp and missing keys as zero rows, so the vector
      // loops never read past the cache.
      for (int64_t j = 0; j < kTile; ++j) {
        float* vd = sc.vpad + j * Dp;
        std::fill(vd, vd + Dp, 0.0f);
        if (j < n) std::memcpy(vd, vt + j * kv_stride, D * sizeof(float));
      }
      vt = sc.vpad;
      vstride = Dp;
    }
    // Scores, one sub-tile of kLanes keys at a time: packed (see
    // ScoreVector) into a buffer that stays in L1 across all rows.
    for (int64_t sub = 0; sub < kTile; sub += kLanes) {
      for (int64_t j = 0; j < kLanes; ++j) {
        const float* src = kt + (sub + j) * kv_stride;
        const bool present = sub + j < n;
        for (int64_t d = 0; d < Dp; d += kLanes) {
          float* dst = sc.kpad + d * kLanes + j * kLanes;
          if (present && d + kLanes <= D) {
            std::memcpy(dst, src + d, kLanes * sizeof(float));
          } else {  // missing key or ragged end of head_dim: zeros
            std::fill(dst, dst + kLanes, 0.0f);
            if (present && d < D) std::memcpy(dst, src + d, (D - d) * sizeof(float));
          }
        }
      }
      const auto key = hn::Iota(di, int32_t(jt + sub));
      for (int64_t r = 0; r < rows; ++r) {
        VF s = hn::Mul(ScoreVector(sc.q + r * Dp, sc.kpad, Dp), vscale);
        if (p.softcap > 0.0f) s = hn::Mul(hn::Tanh(df, hn::Div(s, vcap)), vcap);
        const auto visible = hn::And(hn::Gt(key, hn::Set(di, int32_t(sc.lo[r] - 1))),
                                     hn::Lt(key, hn::Set(di, int32_t(std::min(sc.hi[r], jt + n)))));
        hn::Store(hn::IfThenElse(hn::RebindMask(df, visible), s, neg_inf), df,
                  sc.s + r * kTile + sub);
      }
    }
    // Online softmax per row.
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = sc.s + r * kTile;
      VF vmax = hn::Load(df, sr);
      for (int64_t sub = kLanes; sub < kTile; sub += kLanes) vmax = hn::Max(vmax, hn::Load(df, sr + sub));
      const float tile_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
      if (tile_max == -INFINITY) {  // nothing visible to this row here
        std::fill(sr, sr + kTile, 0.0f);
        sc.corr[r] = 1.0f;
        continue;
      }
      const float m_new = std::max(sc.m[r], tile_max);
      sc.corr[r] = sc.m[r] == -INFINITY ? 0.0f : std::exp(sc.m[r] - m_new);
      sc.m[r] = m_new;
      const VF vm = hn::Set(df, m_new);
      VF sum = hn::Zero(df);
      for (int64_t sub = 0; sub < kTile; sub += kLanes) {
        const VF e = hn::Exp(df, hn::Sub(hn::Load(df, sr + sub), vm));  // exp(-inf) = 0
        hn::Store(e, df, sr + sub);
        sum = hn::Add(sum, e);
      }
      sc.l[r] = sc.l[r] * sc.corr[r] + hn::GetLane(hn::SumOfLanes(df, sum));
    }
    Pv(sc.acc, Dp, sc.s, kTile, sc.corr, vt, vstride, n, rows, Dp);
  }
}

void RunItems(const internal::AttnJob& job, int64_t i0, int64_t i1) {
  const AttentionParams& p = job.p;
  const int64_t D = p.head_dim, Dp = RoundUp(D, kLanes);
  const int64_t group = p.num_heads / p.num_kv_heads, max_rows = job.q_block * group;
  const int64_t rows_pad = RoundUp(max_rows, kLanes);
  thread_local internal::ScratchFloats scratch;
  thread_local std::vector<int64_t> ranges;
  float* base = scratch.Get(size_t(rows_pad * (2 * Dp + kTile + 3) + (kLanes + kTile) * Dp));
  ranges.resize(2 * max_rows);
  Scratch sc;
  sc.q = base;  // every array below starts on a vector boundary
  sc.acc = sc.q + rows_pad * Dp;
  sc.s = sc.acc + rows_pad * Dp;
  sc.m = sc.s + rows_pad * kTile;
  sc.l = sc.m + rows_pad;
  sc.corr = sc.l + rows_pad;
  sc.kpad = sc.corr + rows_pad;
  sc.vpad = sc.kpad + kLanes * Dp;
  sc.lo = ranges.data();
  sc.hi = sc.lo + max_rows;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t split = item % job.splits;
    const int64_t kvh = item / job.splits % p.num_kv_heads;
    const int64_t t0 = item / job.splits / p.num_kv_heads * job.q_block;
    const int64_t nt = std::min(job.q_block, p.num_q_tokens - t0);
    AttendItem(job, t0, nt, kvh, split, sc);
    const int64_t rows = nt * group;
    if (job.splits == 1) {
      for (int64_t r = 0; r < rows; ++r) {
        float* o = job.out + ((t0 + r / group) * p.num_heads + kvh * group + r % group) * D;
        const float inv = 1.0f / sc.l[r];
        for (int64_t d = 0; d < D; ++d) o[d] = sc.acc[r * Dp + d] * inv;
      }
    } else {
      float* part = job.partial + item * max_rows * (D + 2);
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(part + r * (D + 2), sc.acc + r * Dp, D * sizeof(float));
        part[r * (D + 2) + D] = sc.m[r];
        part[r * (D + 2) + D + 1] = sc.l[r];
      }
    }
  }
}

// Merges the split partial states of (token block, kv head) items [i0, i1).
void MergeSplits(const internal::AttnJob& job, int64_t i0, int64_t i1) {
  const AttentionParams& p = job.p;
  const int64_t D = p.head_dim, group = p.num_heads / p.num_kv_heads;
  const int64_t max_rows = job.q_block * group;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t kvh = item % p.num_kv_heads, t0 = item / p.num_kv_heads * job.q_block;
    const int64_t rows = std::min(job.q_block, p.num_q_tokens - t0) * group;
    for (int64_t r = 0; r < rows; ++r) {
      const float* first = job.partial + (item * job.splits) * max_rows * (D + 2) + r * (D + 2);
      const int64_t split_stride = max_rows * (D + 2);
      float m = -INFINITY;
      for (int64_t s = 0; s < job.splits; ++s) m = std::max(m, first[s * split_stride + D]);
      float* o = job.out + ((t0 + r / group) * p.num_heads + kvh * group + r % group) * D;
      std::fill(o, o + D, 0.0f);
      float l = 0.0f;
      for (int64_t s = 0; s < job.splits; ++s) {
        const float* part = first + s * split_stride;
        if (part[D] == -INFINITY) continue;  // split saw no key of this row
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
  const int64_t blocks = (job.p.num_q_tokens + job.q_block - 1) / job.q_block;
  const int64_t items = blocks * job.p.num_kv_heads;
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
  const int64_t group = p.num_heads / p.num_kv_heads;
  // About 64 rows (tokens × heads of a group) share each K/V tile.
  const int64_t q_block = std::clamp<int64_t>(64 / group, 1, p.num_q_tokens);
  internal::AttnJob job{p, q, q_pos, k, v, num_kv, kv_pos0, out, q_block, 1, nullptr};
  // Split the keys only when the items cannot keep every thread busy, and
  // only into pieces long enough to amortise the merge.
  const int64_t threads = pool == nullptr ? 1 : pool->num_threads();
  const int64_t items = (p.num_q_tokens + q_block - 1) / q_block * p.num_kv_heads;
  std::vector<float> partial;
  if (items < 2 * threads) {
    int64_t longest = 0;
    for (int64_t t = 0; t < p.num_q_tokens; ++t) {
      const int64_t newest = std::min<int64_t>(q_pos[t], kv_pos0 + num_kv - 1);
      int64_t oldest = kv_pos0;
      if (p.window > 0) oldest = std::max<int64_t>(oldest, q_pos[t] - p.window + 1);
      longest = std::max(longest, newest - oldest + 1);
    }
    constexpr int64_t kMinKeysPerSplit = 256;
    job.splits = std::max<int64_t>(
        1, std::min((2 * threads + items - 1) / items, longest / kMinKeysPerSplit));
  }
  if (job.splits > 1) {
    partial.resize(items * job.splits * q_block * group * (p.head_dim + 2));
    job.partial = partial.data();
  }
  HWY_DYNAMIC_DISPATCH(AttentionImpl)(job, pool);
  return absl::OkStatus();
}

}  // namespace facet::cpu
#endif  // HWY_ONCE
