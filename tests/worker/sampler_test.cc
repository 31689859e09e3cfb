#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace facet {
namespace {

using ::testing::HasSubstr;

SamplingParams Sampling(float temperature, int32_t top_k = 0, float top_p = 1.0f,
                        float min_p = 0.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = 1234;
  return p;
}

// Logits whose softmax at temperature 1 is `probs`.
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(float(std::log(p)));
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p;
  double z = 0;
  for (float l : logits) z += std::exp((l - m) / temperature);
  for (float l : logits) p.push_back(std::exp((l - m) / temperature) / z);
  return p;
}

// Token counts over steps 0..n-1; each step is an independent draw because the
// noise is a function of the step.
std::vector<int> Histogram(const SamplingParams& params, const std::vector<float>& logits, int n) {
  Sampler sampler(params);
  std::vector<int> counts(logits.size(), 0);
  for (int step = 0; step < n; ++step) {
    ++counts[sampler.Sample(logits.data(), int64_t(logits.size()), {}, step)];
  }
  return counts;
}

// Upper 1e-4 quantile of chi-square with `dof` degrees of freedom
// (Wilson-Hilferty), so a correct sampler fails a given check about once in
// ten thousand seeds.
double ChiSquareCritical(int dof) {
  const double z = 3.719;  // standard normal 1 - 1e-4 quantile
  double a = 2.0 / (9.0 * dof);
  return dof * std::pow(1 - a + z * std::sqrt(a), 3);
}

// Asserts counts ~ Multinomial(n, expected): Pearson chi-square under the
// critical value, and no sample at all where the expected probability is 0.
void ExpectMatchesDistribution(const std::vector<int>& counts, const std::vector<double>& expected) {
  ASSERT_EQ(counts.size(), expected.size());
  int n = std::accumulate(counts.begin(), counts.end(), 0);
  double chi2 = 0;
  int bins = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " should have been filtered out";
      continue;
    }
    double e = n * expected[i];
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++bins;
  }
  if (bins > 1) {
    EXPECT_LT(chi2, ChiSquareCritical(bins - 1)) << "over " << n << " samples";
  }
}

std::vector<double> Renormalised(std::vector<double> p, const std::vector<bool>& keep) {
  double z = 0;
  for (size_t i = 0; i < p.size(); ++i) z += keep[i] ? p[i] : 0;
  for (size_t i = 0; i < p.size(); ++i) p[i] = keep[i] ? p[i] / z : 0;
  return p;
}

std::vector<float> RandomLogits(int64_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0, stddev);
  std::vector<float> logits(n);
  for (float& l : logits) l = dist(rng);
  return logits;
}

TEST(SamplerTest, GreedyIsArgmaxWithTiesToLowestId) {
  Sampler greedy(Sampling(0));
  std::vector<float> tied = {1.0f, 3.0f, -2.0f, 3.0f, 2.0f};
  EXPECT_EQ(greedy.Sample(tied.data(), 5, {}, 0), 1);
  std::vector<float> logits = RandomLogits(5000, 2.0f, 7);
  int32_t expected = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (int step = 0; step < 5; ++step) {
    EXPECT_EQ(greedy.Sample(logits.data(), 5000, {}, step), expected);
  }
}

TEST(SamplerTest, NanLogitIsNeverPicked) {
  float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits = {nan, 0.5f, nan, 0.2f};
  Sampler greedy(Sampling(0));
  EXPECT_EQ(greedy.Sample(logits.data(), 4, {}, 0), 1);
  std::vector<int> counts = Histogram(Sampling(1.0f), logits, 500);
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_GT(counts[3], 0);
}

TEST(SamplerTest, SameSeedAndStepGiveSameTokenAndSeedsSpread) {
  std::vector<float> uniform(16, 0.0f);
  SamplingParams params = Sampling(1.0f);
  Sampler a(params), b(params);
  for (int step = 0; step < 50; ++step) {
    EXPECT_EQ(a.Sample(uniform.data(), 16, {}, step), b.Sample(uniform.data(), 16, {}, step));
  }
  // Across seeds at a fixed step the token is uniform over the 16 ids.
  const int kSeeds = 3200;
  std::vector<int> counts(16, 0);
  for (int seed = 0; seed < kSeeds; ++seed) {
    params.seed = uint64_t(seed);
    Sampler s(params);
    ++counts[s.Sample(uniform.data(), 16, {}, 5)];
  }
  ExpectMatchesDistribution(counts, std::vector<double>(16, 1.0 / 16));
}

TEST(SamplerTest, TemperatureSamplingMatchesSoftmax) {
  std::vector<float> logits = {0.5f, -1.0f, 2.0f, 0.0f, 1.3f, -0.4f, 0.9f, -2.0f};
  for (float t : {1.0f, 0.7f, 1.8f}) {
    SCOPED_TRACE(t);
    ExpectMatchesDistribution(Histogram(Sampling(t), logits, 40000), Softmax(logits, t));
  }
}

TEST(SamplerTest, TopKOneIsGreedy) {
  std::vector<float> logits = RandomLogits(1000, 1.0f, 3);
  int32_t expected = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  Sampler sampler(Sampling(1.5f, /*top_k=*/1));
  for (int step = 0; step < 200; ++step) {
    ASSERT_EQ(sampler.Sample(logits.data(), 1000, {}, step), expected);
  }
}

TEST(SamplerTest, TopKKeepsTheKBestRenormalised) {
  std::vector<double> probs = {0.1, 0.3, 0.05, 0.4, 0.15};
  std::vector<float> logits = LogitsFor(probs);
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, /*top_k=*/2), logits, 20000),
                            Renormalised(probs, {false, true, false, true, false}));
}

TEST(SamplerTest, TopKKeepsAllTiesAtTheBoundary) {
  // HF removes only scores strictly below the k-th largest.
  std::vector<float> logits = {1.0f, 0.0f, 1.0f, 1.0f, -1.0f};
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, /*top_k=*/2), logits, 6000),
                            {1.0 / 3, 0, 1.0 / 3, 1.0 / 3, 0});
}

TEST(SamplerTest, SmallTopPKeepsOnlyTheTopToken) {
  std::vector<float> logits = RandomLogits(3000, 0.5f, 11);
  int32_t expected = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Hot and nearly flat, but top_p below the top token's own mass leaves only it.
  std::vector<double> probs = Softmax(logits, 5.0);
  Sampler sampler(Sampling(5.0f, 0, /*top_p=*/float(0.5 * probs[expected])));
  for (int step = 0; step < 200; ++step) {
    ASSERT_EQ(sampler.Sample(logits.data(), 3000, {}, step), expected);
  }
}

TEST(SamplerTest, TopPKeepsTheTokenThatCrossesTheThreshold) {
  // Sorted: 0.5 (id 2), 0.25 (id 0), 0.15 (id 3), 0.1 (id 1). Mass before id 3
  // is 0.75 >= 0.6, so it goes; id 0 crosses 0.6 and stays.
  std::vector<double> probs = {0.25, 0.1, 0.5, 0.15};
  std::vector<float> logits = LogitsFor(probs);
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, 0, /*top_p=*/0.6f), logits, 20000),
                            Renormalised(probs, {true, false, true, false}));
}

TEST(SamplerTest, TopPOnAFlatVocabularyKeepsTheExactPrefix) {
  // Needs thousands of tokens for half the mass: exercises the growing head.
  const int64_t n = 20000;
  std::vector<float> logits = RandomLogits(n, 0.3f, 5);
  const float top_p = 0.5f;
  std::vector<double> probs = Softmax(logits, 1.0);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<bool> keep(n, false);
  double before = 0;
  int64_t kept = 0;
  for (int32_t id : order) {
    if (before >= top_p) break;
    keep[id] = true;
    before += probs[id];
    ++kept;
  }
  ASSERT_GT(kept, 2000);
  std::vector<int64_t> rank(n);
  for (int64_t r = 0; r < n; ++r) rank[order[r]] = r;
  Sampler sampler(Sampling(1.0f, 0, top_p));
  int64_t rank_max = 0;
  for (int step = 0; step < 500; ++step) {
    int32_t id = sampler.Sample(logits.data(), n, {}, step);
    ASSERT_TRUE(keep[id]) << "token " << id << " is outside the top-p prefix of " << kept;
    rank_max = std::max(rank_max, rank[id]);
  }
  // Draws reach deep into the prefix, so it was not cut short either.
  EXPECT_GT(rank_max, kept * 9 / 10);
}

TEST(SamplerTest, TopPWithAndWithoutTopKAgree) {
  // top_k = vocab - 1 only drops the lowest token, far outside the top-p set,
  // so the bucketed whole-vocabulary path and the top-k path must pick the
  // same tokens.
  const int64_t n = 20000;
  std::vector<float> logits = RandomLogits(n, 2.0f, 13);
  for (float top_p : {0.3f, 0.9f, 0.99f}) {
    Sampler whole(Sampling(0.9f, 0, top_p));
    Sampler via_top_k(Sampling(0.9f, int32_t(n - 1), top_p));
    for (int step = 0; step < 50; ++step) {
      ASSERT_EQ(whole.Sample(logits.data(), n, {}, step), via_top_k.Sample(logits.data(), n, {}, step))
          << "top_p " << top_p << " step " << step;
    }
  }
}

TEST(SamplerTest, TopPSeesTheTopKRenormalisedMass) {
  // top_k=3 leaves {0.5, 0.25, 0.15}/0.9; the mass before 0.15 is then 0.833
  // >= 0.8, so top-p drops it. Applied to the full distribution (0.75 before
  // it) top-p would have kept it.
  std::vector<double> probs = {0.5, 0.25, 0.15, 0.1};
  ExpectMatchesDistribution(
      Histogram(Sampling(1.0f, /*top_k=*/3, /*top_p=*/0.8f), LogitsFor(probs), 20000),
      Renormalised(probs, {true, true, false, false}));
}

TEST(SamplerTest, TemperatureIsAppliedBeforeTopP) {
  std::vector<double> probs = {0.5, 0.25, 0.15, 0.1};
  std::vector<float> logits = LogitsFor(probs);
  // At T=1 the mass before 0.15 is 0.75 >= 0.7: dropped.
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, 0, 0.7f), logits, 20000),
                            Renormalised(probs, {true, true, false, false}));
  // At T=2 the distribution is flatter; the mass before id 2 is ~0.63 < 0.7.
  std::vector<double> hot = Softmax(logits, 2.0);
  ASSERT_LT(hot[0] + hot[1], 0.7);
  ASSERT_GE(hot[0] + hot[1] + hot[2], 0.7);
  ExpectMatchesDistribution(Histogram(Sampling(2.0f, 0, 0.7f), logits, 20000),
                            Renormalised(hot, {true, true, true, false}));
}

TEST(SamplerTest, MinPKeepsTokensAboveAFractionOfTheMax) {
  std::vector<double> probs = {0.3, 0.05, 0.5, 0.15};
  std::vector<float> logits = LogitsFor(probs);
  // 0.5 * p_max = 0.25: keeps 0.5 and 0.3.
  std::vector<double> expected = Renormalised(probs, {true, false, true, false});
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, 0, 1.0f, /*min_p=*/0.5f), logits, 20000),
                            expected);
  // Same through the top-k path (top_k=3 removes nothing min-p keeps).
  ExpectMatchesDistribution(Histogram(Sampling(1.0f, 3, 1.0f, 0.5f), logits, 20000), expected);
  // On tempered probabilities: at T=2 the ratios are sqrt(p/p_max), and 0.15
  // (ratio 0.55) survives while 0.05 (0.32) does not.
  std::vector<double> hot = Softmax(logits, 2.0);
  ExpectMatchesDistribution(Histogram(Sampling(2.0f, 0, 1.0f, 0.5f), logits, 20000),
                            Renormalised(hot, {true, false, true, true}));
}

TEST(SamplerTest, RepetitionPenaltyChangesTheArgmax) {
  SamplingParams params = Sampling(0);
  params.repetition_penalty = 1.5f;
  Sampler sampler(params);
  // Positive logit is divided: 2.0 / 1.5 = 1.33 < 1.8.
  std::vector<float> pos = {2.0f, 1.8f, -1.0f};
  std::vector<int32_t> history = {0, 7, -3};  // ids outside the vocabulary are ignored
  EXPECT_EQ(sampler.Sample(pos.data(), 3, history, 0), 1);
  EXPECT_EQ(pos[0], 2.0f) << "the caller's logits must not change";
  // Negative logit is multiplied: -1.0 * 1.5 = -1.5 < -1.2.
  std::vector<float> neg = {-1.0f, -1.2f, -3.0f};
  EXPECT_EQ(sampler.Sample(neg.data(), 3, std::vector<int32_t>{0}, 0), 1);
  // A repeated id is penalised once: 2.0 / 1.5 = 1.33 still beats 1.2.
  std::vector<float> twice = {2.0f, 1.2f};
  EXPECT_EQ(sampler.Sample(twice.data(), 2, std::vector<int32_t>{0, 0, 0}, 0), 0);
  // Without the penalty the argmax is unchanged.
  Sampler plain(Sampling(0));
  EXPECT_EQ(plain.Sample(pos.data(), 3, history, 0), 0);
}

TEST(SamplerTest, RepetitionPenaltyAppliesBeforeSampling) {
  // Penalised logits {log 0.5 * 1.5, log 0.5} must give softmax of those.
  std::vector<float> logits = {float(std::log(0.5)), float(std::log(0.5))};
  SamplingParams params = Sampling(1.0f);
  params.repetition_penalty = 1.5f;
  Sampler sampler(params);
  std::vector<int> counts(2, 0);
  std::vector<int32_t> history = {0};
  for (int step = 0; step < 20000; ++step) ++counts[sampler.Sample(logits.data(), 2, history, step)];
  ExpectMatchesDistribution(counts, Softmax({logits[0] * 1.5f, logits[1]}, 1.0));
}

// The distributed design: each rank holds a slice of the vocabulary, takes its
// best key, and the merge keeps the larger (lower id on a tie).
TEST(SamplerTest, GumbelMaxMergesAcrossVocabularyShards) {
  const int64_t n = 1001;
  const float t = 0.8f;
  std::vector<float> logits = RandomLogits(n, 1.5f, 9);
  SamplingParams params = Sampling(t);
  Sampler sampler(params);
  auto shard_best = [&](int64_t begin, int64_t end, int64_t step) {
    std::pair<float, int32_t> best{-std::numeric_limits<float>::infinity(), -1};
    for (int64_t i = begin; i < end; ++i) {
      float key = logits[i] / t + GumbelNoise(params.seed, step, int32_t(i));
      if (key > best.first) best = {key, int32_t(i)};
    }
    return best;
  };
  std::set<int32_t> distinct;
  for (int64_t step = 0; step < 300; ++step) {
    auto lo = shard_best(0, n / 2, step);
    auto hi = shard_best(n / 2, n, step);
    int32_t merged = hi.first > lo.first ? hi.second : lo.second;
    ASSERT_EQ(sampler.Sample(logits.data(), n, {}, step), merged) << "step " << step;
    distinct.insert(merged);
  }
  EXPECT_GT(distinct.size(), 20u) << "the draws should not collapse onto a few tokens";
}

TEST(SamplerTest, GumbelNoiseIsAStandardGumbel) {
  // Mean of Gumbel(0,1) is the Euler-Mascheroni constant, variance pi^2/6.
  const int kN = 200000;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < kN; ++i) {
    double g = GumbelNoise(42, i / 1000, i % 1000);
    sum += g;
    sum2 += g * g;
  }
  double mean = sum / kN;
  double var = sum2 / kN - mean * mean;
  const double kVar = M_PI * M_PI / 6;
  EXPECT_NEAR(mean, 0.5772156649, 5 * std::sqrt(kVar / kN));
  EXPECT_NEAR(var, kVar, 0.05);
  EXPECT_EQ(GumbelNoise(1, 2, 3), GumbelNoise(1, 2, 3));
  EXPECT_NE(GumbelNoise(1, 2, 3), GumbelNoise(2, 2, 3));
  EXPECT_NE(GumbelNoise(1, 2, 3), GumbelNoise(1, 3, 3));
  EXPECT_NE(GumbelNoise(1, 2, 3), GumbelNoise(1, 2, 4));
}

TEST(SamplerTest, IsStop) {
  SamplingParams params;
  params.stop_token_ids = {1, 106};
  Sampler sampler(params);
  EXPECT_TRUE(sampler.IsStop(106));
  EXPECT_TRUE(sampler.IsStop(1));
  EXPECT_FALSE(sampler.IsStop(2));
}

TEST(SamplerTest, ValidateSamplingParams) {
  const int64_t vocab = 100;
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, vocab).ok());
  EXPECT_TRUE(ValidateSamplingParams(Sampling(0.7f, 64, 0.95f, 0.05f), vocab).ok());
  auto expect_error = [&](const SamplingParams& p, const std::string& field) {
    absl::Status s = ValidateSamplingParams(p, vocab);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(field));
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SamplingParams p;
  p = {}; p.temperature = -0.1f; expect_error(p, "temperature");
  p = {}; p.temperature = nan; expect_error(p, "temperature");
  p = {}; p.top_p = 0; expect_error(p, "top_p");
  p = {}; p.top_p = 1.01f; expect_error(p, "top_p");
  p = {}; p.top_p = nan; expect_error(p, "top_p");
  p = {}; p.min_p = 1.0f; expect_error(p, "min_p");
  p = {}; p.min_p = -0.1f; expect_error(p, "min_p");
  p = {}; p.top_k = -1; expect_error(p, "top_k");
  p = {}; p.repetition_penalty = 0; expect_error(p, "repetition_penalty");
  p = {}; p.repetition_penalty = -1; expect_error(p, "repetition_penalty");
  p = {}; p.max_tokens = 0; expect_error(p, "max_tokens");
  p = {}; p.stop_token_ids = {5, 100}; expect_error(p, "stop_token_ids[1]");
  p = {}; p.stop_token_ids = {-1}; expect_error(p, "stop_token_ids[0]");
}

double ThreadCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Reports the cost on a Gemma 3 sized vocabulary; no assertion on time.
TEST(SamplerTest, SpeedOnGemmaVocabulary) {
  const int64_t n = 262144;
  std::vector<float> logits = RandomLogits(n, 3.0f, 1);
  std::vector<int32_t> history(4096);
  for (size_t i = 0; i < history.size(); ++i) history[i] = int32_t((i * 7919) % n);
  struct Case {
    const char* name;
    SamplingParams params;
  } cases[] = {
      {"greedy", Sampling(0)},
      {"T=1 top_k=64 top_p=0.95", Sampling(1.0f, 64, 0.95f)},
      {"T=1 top_k=64 top_p=0.95 min_p=0.05 penalty=1.1", Sampling(1.0f, 64, 0.95f, 0.05f)},
      {"T=1 top_p=0.95", Sampling(1.0f, 0, 0.95f)},
      {"T=1 (no filter)", Sampling(1.0f)},
  };
  cases[2].params.repetition_penalty = 1.1f;
  for (const Case& c : cases) {
    Sampler sampler(c.params);
    const int kIters = 30;
    int64_t sum = 0;
    // Thread CPU time: the test machine is shared, and wall time would count
    // other processes' turns.
    double start = ThreadCpuMs();
    for (int step = 0; step < kIters; ++step) sum += sampler.Sample(logits.data(), n, history, step);
    double ms = (ThreadCpuMs() - start) / kIters;
    std::printf("Sample, vocab %lld, %s: %.3f ms CPU\n", (long long)n, c.name, ms);
    EXPECT_GE(sum, 0);
  }
}

}  // namespace
}  // namespace facet
