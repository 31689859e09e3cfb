#include "worker/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include "core/logging.h"

namespace facet {
namespace {

using internal::SampleEntry;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The splitmix64 finaliser: a bijection on 64 bits with full avalanche, so
// consecutive counters give independent-looking outputs.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Counter-based noise: (seed, step) are mixed once per Sample call, then one
// round per token id; no state is carried between tokens or steps.
uint64_t NoisePrefix(uint64_t seed, int64_t step) {
  return Mix64(Mix64(seed + 0x9E3779B97F4A7C15ull) + uint64_t(step) * 0xD1B54A32D192ED03ull);
}

// 52 uniform bits for one token.
uint64_t NoiseBits(uint64_t prefix, int32_t id) {
  return Mix64(prefix + uint64_t(uint32_t(id)) * 0x8CB92BA72F3D8DD7ull) >> 12;
}

float NoiseFromBits(uint64_t k) {
  // (k + 1/2) * 2^-52 is exact in a double and lies in [2^-53, 1 - 2^-53],
  // so both logs are finite.
  double u = (double(k) + 0.5) * 0x1p-52;
  return float(-std::log(-std::log(u)));
}

// An upper bound on NoiseFromBits(k) from integer operations only, so most
// tokens can be ruled out without the two logs. With v = 1 - u =
// (k' + 1/2) 2^-52, k' = 2^52 - 1 - k: -log(u) >= v, hence the noise is at most
// -log(v) <= (53 - bit_width(k')) ln 2. The margin covers the rounding of the
// logs and of the float conversion.
float NoiseBound(uint64_t k) {
  uint64_t k_rev = ((uint64_t(1) << 52) - 1) - k;
  return float(53 - std::bit_width(k_rev)) * 0.6931472f + 0.01f;
}

// Unnormalised softmax weight of a logit relative to the maximum m; the same
// float expression wherever a mass is summed, so sums agree.
float Weight(float logit, float m, float temperature) { return std::exp((logit - m) / temperature); }

// Sets every entry's weight and returns their sum: the softmax mass top-p
// needs over a pool that top-k has already cut.
double WeighPool(std::vector<SampleEntry>& pool, float m, float temperature) {
  double z = 0;
  for (SampleEntry& e : pool) {
    e.weight = Weight(e.value, m, temperature);
    z += e.weight;
  }
  return z;
}

// Strict total order "better first": larger value, then lower id.
bool Better(const SampleEntry& a, const SampleEntry& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// Largest value, NaN ignored (-inf when all are NaN or -inf). Eight
// independent accumulators: one chain would be bound by the max latency.
float MaxValue(const float* x, int64_t n) {
  float acc[8];
  std::fill(acc, acc + 8, kNegInf);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] = std::max(acc[j], x[i + j]);  // keeps acc on NaN
  }
  for (; i < n; ++i) acc[0] = std::max(acc[0], x[i]);
  return *std::max_element(acc, acc + 8);
}

// Lowest id among the largest values; NaN never wins. All -inf -> 0.
int32_t ArgMax(const float* x, int64_t n) {
  const float m = MaxValue(x, n);
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == m) return int32_t(i);
  }
  return 0;
}

// Fills `pool` with every token whose value is >= the k-th largest of x[0, n)
// (unordered). Ties at the boundary are all kept, as in HF's TopKLogitsWarper,
// which removes `scores < topk(...)[..., -1]`. One pass with a rising
// threshold: a value below the k-th largest of any subset cannot be in the
// answer, so most of the vocabulary costs one compare.
void SelectTopK(const float* x, int64_t n, int64_t k, std::vector<SampleEntry>* pool) {
  size_t cap = size_t(std::max<int64_t>(4 * k, 4096));
  float threshold = kNegInf;
  pool->clear();
  pool->reserve(cap);
  auto shrink = [&] {
    std::nth_element(pool->begin(), pool->begin() + (k - 1), pool->end(), Better);
    threshold = (*pool)[k - 1].value;
    std::erase_if(*pool, [&](const SampleEntry& e) { return e.value < threshold; });
    // Only ties with the threshold can keep the pool this full; make room for them.
    if (pool->size() * 2 > cap) cap = pool->size() * 2;
  };
  auto visit = [&](int64_t i) {
    if (x[i] >= threshold) {  // false for NaN, which is never kept
      pool->push_back({x[i], int32_t(i), 0.0f});
      if (pool->size() >= cap) shrink();
    }
  };
  int64_t i = 0;
  // Blocks of 16 are first tested as a whole: one compare of the block's
  // maximum instead of sixteen branches, once the threshold has risen.
  for (; i + 16 <= n; i += 16) {
    if (!(MaxValue(x + i, 16) >= threshold)) continue;
    for (int64_t j = i; j < i + 16; ++j) visit(j);
  }
  for (; i < n; ++i) visit(i);
  if (int64_t(pool->size()) > k) shrink();
}

// Reorders `pool` so that its first N entries are the top-p set and returns N.
// In best-first order a token is kept while the mass strictly before it is
// < target (HF's TopPLogitsWarper removes tokens whose ascending cumulative
// probability is <= 1 - top_p), so the token that crosses the target stays.
// A weighted quickselect: expected linear time, no full sort of the vocabulary.
size_t TopPPrefix(std::vector<SampleEntry>& pool, double target) {
  auto begin = pool.begin();
  size_t lo = 0, hi = pool.size();  // [0, lo) is kept; [hi, end) is dropped
  double before = 0;                // mass of [0, lo)
  for (int round = 0; hi - lo > 64 && round < 64; ++round) {
    SampleEntry a = pool[lo], b = pool[lo + (hi - lo) / 2], c = pool[hi - 1];
    if (Better(b, a)) std::swap(a, b);
    if (Better(c, b)) std::swap(b, c);
    if (Better(b, a)) std::swap(a, b);
    const SampleEntry pivot = b;  // median of three
    auto mid_it = std::partition(begin + lo, begin + hi,
                                 [&](const SampleEntry& e) { return Better(e, pivot); });
    std::iter_swap(mid_it, std::find_if(mid_it, begin + hi,
                                        [&](const SampleEntry& e) { return e.id == pivot.id; }));
    const size_t mid = size_t(mid_it - begin);  // pool[mid] is the pivot
    double upper = 0;
    for (size_t j = lo; j < mid; ++j) upper += pool[j].weight;
    if (before + upper >= target) {
      hi = mid;
    } else if (before + upper + pivot.weight >= target) {
      return mid + 1;
    } else {
      before += upper + pivot.weight;
      lo = mid + 1;
    }
  }
  std::sort(begin + lo, begin + hi, Better);
  for (size_t j = lo; j < hi; ++j) {
    if (before >= target) return j;
    before += pool[j].weight;
  }
  return hi;
}

// Top-p histograms bucket tokens by distance below the maximum logit m, in
// quarter nats at temperature 1 (kTopPBuckets buckets, the last one open).
constexpr int kTopPBuckets = 256;

// Buckets per logit unit at temperature t; finite even for a tiny t, so
// that 0 * TopPBucketsPerUnit(t) stays 0.
float TopPBucketsPerUnit(float t) { return std::min(4.0f / t, 1e30f); }

int TopPBucket(float x, float m, float buckets_per_unit) {
  return int(std::min((m - x) * buckets_per_unit, float(kTopPBuckets - 1)));
}

// The logit cut of top-p from the histogram `mass` [kTopPBuckets]: tokens
// down to the first bucket where the running mass reaches `target` are
// kept; a whole extra bucket of margin covers the rounding of the bucket
// index. -inf when the target is only reached in the last bucket.
float TopPCut(const double* mass, double target, float m, float buckets_per_unit) {
  double before = 0;
  for (int b = 0; b < kTopPBuckets - 1; ++b) {
    if (before + mass[b] >= target) return m - float(b + 2) / buckets_per_unit;
    before += mass[b];
  }
  return kNegInf;
}

// Fills `pool` with a superset of the top-p set of softmax(x / T) over the
// whole vocabulary (m = max x) and returns the normaliser z, so that
// TopPPrefix(pool, top_p * z) finds the exact set without sorting the
// vocabulary.
double CollectTopPCandidates(const float* x, int64_t n, float m, float t, float top_p,
                             std::vector<SampleEntry>* pool) {
  // Bucket the vocabulary by distance below the maximum, in quarter nats,
  // summing each bucket's mass. Bucketing is monotone in the value, so the
  // prefix ends in the first bucket where the running mass reaches the
  // target, and only tokens down to that bucket need selecting (a few
  // more do no harm: TopPPrefix finds the exact end).
  constexpr int kBuckets = kTopPBuckets;
  const float buckets_per_unit = TopPBucketsPerUnit(t);
  double z = 0;
  // Four interleaved histograms and sums: most tokens land in a few
  // buckets, and one accumulator would serialise on its add latency.
  constexpr int kWays = 4;
  std::array<std::array<double, kBuckets>, kWays> partial{};
  std::array<double, kWays> partial_z{};
  for (int64_t i = 0; i < n; ++i) {
    float w = Weight(x[i], m, t);
    if (!(w > 0)) continue;  // NaN, or too far below to carry mass
    partial_z[i % kWays] += w;
    partial[i % kWays][TopPBucket(x[i], m, buckets_per_unit)] += w;
  }
  std::array<double, kBuckets> mass{};
  for (int way = 0; way < kWays; ++way) {
    z += partial_z[way];
    for (int b = 0; b < kBuckets; ++b) mass[b] += partial[way][b];
  }
  const float cut = TopPCut(mass.data(), double(top_p) * z, m, buckets_per_unit);
  pool->clear();
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] >= cut) pool->push_back({x[i], int32_t(i), Weight(x[i], m, t)});
  }
  return z;
}

// Running Gumbel-max over the kept tokens: the key is value / T + noise,
// ties go to the lowest id (as a sharded merge would), and min-p drops tokens
// with (value - m) / T < log_min_p. Starts from the maximum, which every
// filter keeps.
class GumbelMax {
 public:
  GumbelMax(uint64_t prefix, int32_t top_id, float m, float t, double log_min_p)
      : prefix_(prefix), m_(m), t_(t), log_min_p_(log_min_p), best_id_(top_id),
        best_(m / t + NoiseFromBits(NoiseBits(prefix, top_id))) {}

  void Consider(int32_t id, float value) {
    const float scaled = value / t_;
    const uint64_t bits = NoiseBits(prefix_, id);
    // A token whose scaled logit plus its noise bound trails the best key
    // cannot win; this skips the two logs for almost every token.
    if (!(scaled + NoiseBound(bits) >= best_)) return;
    if (!((double(value) - m_) / t_ >= log_min_p_)) return;
    const float key = scaled + NoiseFromBits(bits);
    if (key > best_ || (key == best_ && id < best_id_)) {
      best_ = key;
      best_id_ = id;
    }
  }

  int32_t id() const { return best_id_; }

 private:
  uint64_t prefix_;
  float m_, t_;
  double log_min_p_;
  int32_t best_id_;
  float best_;
};

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (vocab_size <= 0 || vocab_size > std::numeric_limits<int32_t>::max()) {
    return bad("sampling: vocab_size must be in [1, 2^31), got ", vocab_size);
  }
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return bad("sampling: temperature must be finite and >= 0 (0 = greedy), got ", p.temperature);
  }
  if (p.top_k < 0) return bad("sampling: top_k must be >= 0 (0 = off), got ", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return bad("sampling: top_p must be in (0, 1] (1 = off), got ", p.top_p);
  }
  if (!(p.min_p >= 0 && p.min_p < 1)) {
    return bad("sampling: min_p must be in [0, 1) (0 = off), got ", p.min_p);
  }
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return bad("sampling: repetition_penalty must be finite and > 0 (1 = off), got ",
               p.repetition_penalty);
  }
  if (p.max_tokens < 1) return bad("sampling: max_tokens must be >= 1, got ", p.max_tokens);
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    int32_t id = p.stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return bad("sampling: stop_token_ids[", i, "] = ", id, " is outside the vocabulary [0, ",
                 vocab_size, ")");
    }
  }
  return absl::OkStatus();
}

float GumbelNoise(uint64_t seed, int64_t step, int32_t id) {
  return NoiseFromBits(NoiseBits(NoisePrefix(seed, step), id));
}

Sampler::Sampler(SamplingParams params) : params_(std::move(params)) {
  // Stop ids are range-checked against the real vocabulary by the caller.
  absl::Status s = ValidateSamplingParams(params_, std::numeric_limits<int32_t>::max());
  FACET_CHECK(s.ok()) << s.message();
}

bool Sampler::IsStop(int32_t id) const {
  return std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), id) !=
         params_.stop_token_ids.end();
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, std::span<const int32_t> history,
                        int64_t step) {
  FACET_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max()) << "vocab " << vocab;
  const SamplingParams& p = params_;
  const float* x = logits;

  // Filter order follows HF transformers' GenerationMixin._get_logits_processor
  // (src/transformers/generation/utils.py): RepetitionPenaltyLogitsProcessor is
  // appended with the other processors, then, when sampling, the warpers
  // Temperature -> TopK -> TopP -> MinP.
  if (p.repetition_penalty != 1.0f && !history.empty()) {
    scratch_.assign(logits, logits + vocab);
    // Computed from the original logit, so an id repeated in the history is
    // penalised once, as HF's gather/scatter does.
    for (int32_t id : history) {
      if (id < 0 || id >= vocab) continue;
      float l = logits[id];
      scratch_[id] = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
    x = scratch_.data();
  }
  const int32_t top_id = ArgMax(x, vocab);
  if (p.temperature == 0) return top_id;
  const float m = x[top_id];
  // All -inf, or +inf present: there is no distribution to sample from; the
  // argmax is the only meaningful answer.
  if (!std::isfinite(m)) return top_id;
  const float t = p.temperature;

  // The kept set is `pool_` once top-k or top-p ran, else the whole vocabulary.
  bool use_pool = false;
  if (p.top_k > 0 && p.top_k < vocab) {
    SelectTopK(x, vocab, p.top_k, &pool_);
    use_pool = true;
  }
  if (p.top_p < 1.0f) {
    // Temperature comes first, so the mass is that of softmax(x / T) over what
    // top-k kept.
    double z = 0;
    if (!use_pool) {
      z = CollectTopPCandidates(x, vocab, m, t, p.top_p, &pool_);
      use_pool = true;
    } else {
      z = WeighPool(pool_, m, t);
    }
    pool_.resize(TopPPrefix(pool_, double(p.top_p) * z));
  }

  // min-p keeps p_i >= min_p * p_max, i.e. (x_i - m) / T >= log(min_p). The
  // maximum survives top-k and top-p, so p_max is the same before and after.
  const double log_min_p = p.min_p > 0 ? std::log(double(p.min_p)) : -HUGE_VAL;
  GumbelMax best(NoisePrefix(p.seed, step), top_id, m, t, log_min_p);
  if (use_pool) {
    for (const SampleEntry& e : pool_) best.Consider(e.id, e.value);
  } else {
    for (int64_t i = 0; i < vocab; ++i) best.Consider(int32_t(i), x[i]);
  }
  return best.id();
}

}  // namespace facet

// ---------------------------------------------------------------------------
// Vocabulary-sharded sampling (SampleSharded). Same filters, same keys; the
// global quantities come from small collectives.
namespace facet {
namespace {

struct Best {
  float value;
  int32_t id;
};

// The largest value over ranks, lowest id on ties (NaN never wins; all -inf
// gives the lowest id any rank offered).
absl::StatusOr<Best> MergeBest(parallel::Communicator& comm, Best mine) {
  std::vector<Best> all(size_t(comm.size()));
  RETURN_IF_ERROR(comm.AllGather(&mine, all.data(), sizeof(Best), parallel::DType::kBytes));
  Best b = all[0];
  for (const Best& o : all) {
    if (o.value > b.value || (o.value == b.value && o.id < b.id) || (std::isnan(b.value) && !std::isnan(o.value))) b = o;
  }
  return b;
}

// Every rank's entries, concatenated in rank order (identical on all ranks).
absl::StatusOr<std::vector<SampleEntry>> GatherEntries(parallel::Communicator& comm,
                                                       const std::vector<SampleEntry>& mine) {
  const int n = comm.size();
  int64_t count = int64_t(mine.size());
  std::vector<int64_t> counts(n);
  RETURN_IF_ERROR(comm.AllGather(&count, counts.data(), 1, parallel::DType::kI64));
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  std::vector<SampleEntry> padded(static_cast<size_t>(most));
  std::vector<SampleEntry> all(static_cast<size_t>(most) * n);
  std::copy(mine.begin(), mine.end(), padded.begin());
  RETURN_IF_ERROR(comm.AllGather(padded.data(), all.data(), size_t(most) * sizeof(SampleEntry),
                                 parallel::DType::kBytes));
  std::vector<SampleEntry> out;
  for (int r = 0; r < n; ++r)
    out.insert(out.end(), all.begin() + r * most, all.begin() + r * most + counts[r]);
  return out;
}

}  // namespace

absl::StatusOr<int32_t> Sampler::SampleSharded(parallel::Communicator& comm, const float* logits,
                                               parallel::Range vocab, int64_t full_vocab,
                                               std::span<const int32_t> history, int64_t step) {
  if (vocab.size <= 0 || vocab.begin < 0 || vocab.end() > full_vocab ||
      full_vocab > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("sharded sampling: slice [", vocab.begin, ", ",
                                                   vocab.end(), ") of a vocabulary of ", full_vocab));
  }
  const SamplingParams& p = params_;
  const int64_t n = vocab.size;
  const int32_t base = int32_t(vocab.begin);
  const float* x = logits;
  if (p.repetition_penalty != 1.0f && !history.empty()) {
    scratch_.assign(logits, logits + n);
    for (int32_t id : history) {
      if (!vocab.Contains(id)) continue;
      float l = logits[id - base];
      scratch_[id - base] = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
    x = scratch_.data();
  }
  const int32_t local_top = ArgMax(x, n);
  ASSIGN_OR_RETURN(Best top, MergeBest(comm, Best{x[local_top], base + local_top}));
  if (p.temperature == 0) return top.id;
  const float m = top.value;
  if (!std::isfinite(m)) return top.id;
  const float t = p.temperature;

  bool use_pool = false;
  if (p.top_k > 0 && p.top_k < full_vocab) {
    // Each rank's tokens >= its own k-th largest include every token >= the
    // global k-th largest (which is at least as large), so the merge is exact.
    std::vector<SampleEntry> local;
    SelectTopK(x, n, p.top_k, &local);
    for (SampleEntry& e : local) e.id += base;
    ASSIGN_OR_RETURN(pool_, GatherEntries(comm, local));
    if (int64_t(pool_.size()) > p.top_k) {
      std::nth_element(pool_.begin(), pool_.begin() + (p.top_k - 1), pool_.end(), Better);
      const float threshold = pool_[p.top_k - 1].value;
      std::erase_if(pool_, [&](const SampleEntry& e) { return e.value < threshold; });
    }
    use_pool = true;
  }
  if (p.top_p < 1.0f) {
    double z = 0;
    if (!use_pool) {
      // The single-rank bucket histogram, summed over ranks, fixes the same
      // cut everywhere; only tokens above it travel.
      constexpr int kBuckets = kTopPBuckets;
      const float buckets_per_unit = TopPBucketsPerUnit(t);
      std::vector<double> mass(kBuckets + 1, 0.0);  // [buckets | z]
      for (int64_t i = 0; i < n; ++i) {
        float w = Weight(x[i], m, t);
        if (!(w > 0)) continue;
        mass[kBuckets] += w;
        mass[TopPBucket(x[i], m, buckets_per_unit)] += w;
      }
      RETURN_IF_ERROR(comm.AllReduce(mass.data(), mass.data(), mass.size(), parallel::DType::kF64,
                                     parallel::ReduceOp::kSum));
      z = mass[kBuckets];
      const float cut = TopPCut(mass.data(), double(p.top_p) * z, m, buckets_per_unit);
      std::vector<SampleEntry> local;
      for (int64_t i = 0; i < n; ++i) {
        if (x[i] >= cut) local.push_back({x[i], base + int32_t(i), Weight(x[i], m, t)});
      }
      ASSIGN_OR_RETURN(pool_, GatherEntries(comm, local));
      use_pool = true;
    } else {
      z = WeighPool(pool_, m, t);
    }
    pool_.resize(TopPPrefix(pool_, double(p.top_p) * z));
  }

  const double log_min_p = p.min_p > 0 ? std::log(double(p.min_p)) : -HUGE_VAL;
  GumbelMax best(NoisePrefix(p.seed, step), top.id, m, t, log_min_p);
  if (use_pool) {
    // Every rank holds the same merged pool: the same answer, no traffic.
    for (const SampleEntry& e : pool_) best.Consider(e.id, e.value);
    return best.id();
  }
  for (int64_t i = 0; i < n; ++i) best.Consider(base + int32_t(i), x[i]);
  // Each rank's winner travels as (id, value); the keys are recomputed from
  // them on the merge, so every rank agrees.
  GumbelMax merged(NoisePrefix(p.seed, step), top.id, m, t, log_min_p);
  std::vector<Best> all(size_t(comm.size()));
  const int32_t my = best.id();
  Best mine{vocab.Contains(my) ? x[my - base] : m, my};
  RETURN_IF_ERROR(comm.AllGather(&mine, all.data(), sizeof(Best), parallel::DType::kBytes));
  for (const Best& b : all) merged.Consider(b.id, b.value);
  return merged.id();
}

}  // namespace facet
