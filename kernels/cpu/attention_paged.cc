// Plain C++ paged attention (see attention_paged.h). Per query row: gather the
// visible keys through the block table, split them into pieces, softmax each
// piece in double, hand back (normalised output, log-sum-exp) per piece.

#include "kernels/cpu/attention_paged.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/half.h"

namespace facet::cpu {
namespace {

// Query position and visible key range [lo, hi) of token t of sequence s.
struct RowRange {
  int64_t pos, lo, hi;
};

RowRange RangeOf(const AttentionParams& p, const PagedBatch& b, int64_t s, int64_t t) {
  const int64_t n = b.q_start[s + 1] - b.q_start[s];
  const int64_t pos = b.kv_len[s] - n + (t - b.q_start[s]);
  int64_t lo = 0;
  if (p.window > 0) lo = std::max<int64_t>(0, pos - p.window + 1);
  return {pos, lo, pos + 1};
}

const float* Row(const float* cache, const PagedKvLayer& kv, const AttentionParams& p, int64_t s,
                 int64_t pos, int64_t kvh) {
  const int32_t block = kv.block_table[s * kv.max_blocks + pos / kv.block_size];
  return cache + ((int64_t(block) * kv.block_size + pos % kv.block_size) * p.num_kv_heads + kvh) *
                     p.head_dim;
}

}  // namespace

void RebuildKeyFromSource(const float* u, const KvSourceRebuild& r, int64_t head_dim, int32_t pos,
                          float* k) {
  for (int64_t d = 0; d < head_dim; ++d) k[d] = u[d] * r.k_norm_weight[d];
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    if (r.inv_freq[i] == 0.0f) continue;  // cos 0 = 1, sin 0 = 0: unchanged
    const float angle = float(pos) * r.inv_freq[i];
    const float c = std::cos(angle), sn = std::sin(angle);
    const float a = k[i], bb = k[i + half];
    k[i] = a * c - bb * sn;
    k[i + half] = bb * c + a * sn;
  }
  if (r.round_key_to_bf16) {
    for (int64_t d = 0; d < head_dim; ++d) k[d] = RoundBf16(k[d]);
  }
}

void KvSourceFromProjection(const float* kr, int64_t rows, int64_t head_dim, float eps, float* u) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = kr + r * head_dim;
    float ss = 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) ss += x[d] * x[d];
    const float inv = std::pow(ss / float(head_dim) + eps, -0.5f);
    float* y = u + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) y[d] = x[d] * inv;
  }
}

absl::Status CheckPagedAttention(const AttentionParams& p, const PagedBatch& b,
                                 const PagedKvLayer& kv, const KvSourceRebuild* rebuild,
                                 int64_t splits) {
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention: num_heads ", p.num_heads,
                                                   " must be a positive multiple of num_kv_heads ",
                                                   p.num_kv_heads));
  }
  if (p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged attention: head_dim ", p.head_dim, " must be positive and even"));
  }
  if (p.window < 0 || p.softcap < 0.0f) {
    return absl::InvalidArgumentError("paged attention: window and softcap must be >= 0");
  }
  if (splits < 1) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention: splits ", splits, " < 1"));
  }
  if (b.num_seqs < 0 || (b.num_seqs > 0 && (b.q_start == nullptr || b.kv_len == nullptr))) {
    return absl::InvalidArgumentError("paged attention: missing q_start / kv_len");
  }
  if (kv.k == nullptr || kv.block_table == nullptr || kv.block_size <= 0 || kv.max_blocks <= 0) {
    return absl::InvalidArgumentError("paged attention: missing cache, block table or block size");
  }
  if (kv.v == nullptr && (rebuild == nullptr || rebuild->k_norm_weight == nullptr ||
                          rebuild->inv_freq == nullptr)) {
    return absl::InvalidArgumentError(
        "paged attention: a K = V source cache (v == null) needs the k-norm weight and inv_freq");
  }
  if (b.num_seqs > 0 && b.q_start[0] != 0) {
    return absl::InvalidArgumentError("paged attention: q_start[0] must be 0");
  }
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    const int64_t n = b.q_start[s + 1] - b.q_start[s];
    if (n < 0 || b.kv_len[s] < n) {
      return absl::InvalidArgumentError(absl::StrCat("paged attention: sequence ", s, " has ", n,
                                                     " queries but kv_len ", b.kv_len[s]));
    }
    if (n > 0 && (b.kv_len[s] + kv.block_size - 1) / kv.block_size > kv.max_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("paged attention: sequence ", s, " kv_len ",
                                                     b.kv_len[s], " exceeds its block table"));
    }
    if (n == 0) continue;
    // Every block some query of the sequence can see must be held.
    const RowRange first = RangeOf(p, b, s, b.q_start[s]);
    for (int64_t blk = first.lo / kv.block_size; blk <= (b.kv_len[s] - 1) / kv.block_size; ++blk) {
      const int32_t id = kv.block_table[s * kv.max_blocks + blk];
      if (id < 0 || id >= kv.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("paged attention: sequence ", s,
                                                       " logical block ", blk, " maps to ", id,
                                                       " outside [0, ", kv.num_blocks, ")"));
      }
    }
  }
  if (b.num_seqs > 0 && b.q_start[b.num_seqs] != p.num_q_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("paged attention: q_start ends at ",
                                                   b.q_start[b.num_seqs], " but num_q_tokens is ",
                                                   p.num_q_tokens));
  }
  return absl::OkStatus();
}

absl::Status PagedAttentionPartial(const AttentionParams& p, const PagedBatch& b,
                                   const PagedKvLayer& kv, const KvSourceRebuild* rebuild,
                                   const float* q, int64_t splits, float* o_part, float* lse) {
  RETURN_IF_ERROR(CheckPagedAttention(p, b, kv, rebuild, splits));
  const int64_t D = p.head_dim, Nq = p.num_heads, group = p.num_heads / p.num_kv_heads;
  const int64_t T = p.num_q_tokens;
  std::vector<float> kbuf(D);
  std::vector<double> scores, acc(D);
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    for (int64_t t = b.q_start[s]; t < b.q_start[s + 1]; ++t) {
      const RowRange rr = RangeOf(p, b, s, t);
      const int64_t per = (rr.hi - rr.lo + splits - 1) / splits;
      for (int64_t h = 0; h < Nq; ++h) {
        const int64_t kvh = h / group;
        const float* qv = q + (t * Nq + h) * D;
        for (int64_t sp = 0; sp < splits; ++sp) {
          const int64_t j0 = std::min(rr.hi, rr.lo + sp * per), j1 = std::min(rr.hi, j0 + per);
          float* o = o_part + ((sp * T + t) * Nq + h) * D;
          float* l = lse + (sp * T + t) * Nq + h;
          if (j0 == j1) {
            std::fill(o, o + D, 0.0f);
            *l = -INFINITY;
            continue;
          }
          scores.assign(j1 - j0, 0.0);
          double m = -INFINITY;
          for (int64_t j = j0; j < j1; ++j) {
            const float* kr = Row(kv.k, kv, p, s, j, kvh);
            if (kv.v == nullptr) {
              RebuildKeyFromSource(kr, *rebuild, D, int32_t(j), kbuf.data());
              kr = kbuf.data();
            }
            double dot = 0.0;
            for (int64_t d = 0; d < D; ++d) dot += double(qv[d]) * kr[d];
            dot *= p.scale;
            if (p.softcap > 0.0f) dot = p.softcap * std::tanh(dot / p.softcap);
            scores[j - j0] = dot;
            m = std::max(m, dot);
          }
          double sum = 0.0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t j = j0; j < j1; ++j) {
            const double e = std::exp(scores[j - j0] - m);
            sum += e;
            const float* vr = Row(kv.v != nullptr ? kv.v : kv.k, kv, p, s, j, kvh);
            for (int64_t d = 0; d < D; ++d) acc[d] += e * vr[d];
          }
          for (int64_t d = 0; d < D; ++d) o[d] = float(acc[d] / sum);
          *l = float(m + std::log(sum));
        }
      }
    }
  }
  return absl::OkStatus();
}

void MergeAttentionStates(const float* o_part, const float* lse, int64_t splits, int64_t rows,
                          int64_t head_dim, float* out) {
  const int64_t D = head_dim;
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) m = std::max<double>(m, lse[s * rows + r]);
    float* o = out + r * D;
    if (m == -INFINITY) {
      std::fill(o, o + D, 0.0f);
      continue;
    }
    double wsum = 0.0;
    std::vector<double> acc(D, 0.0);
    for (int64_t s = 0; s < splits; ++s) {
      const double l = lse[s * rows + r];
      if (l == -INFINITY) continue;
      const double w = std::exp(l - m);
      wsum += w;
      const float* part = o_part + (s * rows + r) * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += w * part[d];
    }
    for (int64_t d = 0; d < D; ++d) o[d] = float(acc[d] / wsum);
  }
}

int64_t PagedAttentionWorkspaceFloats(const AttentionParams& p, int64_t splits) {
  return splits * p.num_q_tokens * p.num_heads * (p.head_dim + 1);
}

absl::Status PagedAttention(const AttentionParams& p, const PagedBatch& b, const PagedKvLayer& kv,
                            const KvSourceRebuild* rebuild, const float* q, int64_t splits,
                            float* workspace, float* out) {
  RETURN_IF_ERROR(CheckPagedAttention(p, b, kv, rebuild, splits));
  const int64_t rows = p.num_q_tokens * p.num_heads;
  std::vector<float> lse1;
  if (splits == 1) {  // the partial of the only piece is the answer
    lse1.resize(rows);
    return PagedAttentionPartial(p, b, kv, rebuild, q, 1, out, lse1.data());
  }
  if (workspace == nullptr) {
    return absl::InvalidArgumentError("paged attention: splits > 1 needs a workspace");
  }
  float* o_part = workspace;                          // [splits, rows, D]
  float* lse = workspace + splits * rows * p.head_dim;  // [splits, rows]
  RETURN_IF_ERROR(PagedAttentionPartial(p, b, kv, rebuild, q, splits, o_part, lse));
  MergeAttentionStates(o_part, lse, splits, rows, p.head_dim, out);
  return absl::OkStatus();
}

}  // namespace facet::cpu
