// Distributed sampling over a vocabulary split across the MPI world equals
// single-rank sampling of the gathered row, for every filter combination,
// with ties and flat distributions. Every rank builds the same full logits
// from a shared seed and samples from its own slice.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator.h"
#include "tests/parallel/test_world.h"
#include "worker/sampler.h"

namespace facet {
namespace {

constexpr int64_t kVocab = 1000;  // divides by 1, 2, 4

enum class Shape { kNormal, kTied, kFlat, kPeaked };

std::vector<float> Logits(uint64_t seed, Shape shape) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::vector<float> x(kVocab);
  for (float& v : x) {
    v = normal(rng);
    if (shape == Shape::kTied) v = std::round(v);  // many exact ties
    if (shape == Shape::kFlat) v = 0.01f * v;
  }
  if (shape == Shape::kPeaked) x[rng() % kVocab] = 40.f;
  return x;
}

SamplingParams Params(float t, int k, float top_p, float min_p, float rep) {
  SamplingParams p;
  p.temperature = t;
  p.top_k = k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.repetition_penalty = rep;
  p.seed = 42;
  return p;
}

TEST(SampleSharded, EqualsSingleRankForEveryFilter) {
  parallel::Communicator& w = parallel::TestWorld();
  auto vocab = parallel::EvenShard(kVocab, w.size(), w.rank(), "test vocab");
  ASSERT_TRUE(vocab.ok());
  const std::vector<SamplingParams> cases = {
      Params(0, 0, 1, 0, 1),       Params(0, 0, 1, 0, 1.3f),    Params(1, 0, 1, 0, 1),
      Params(0.7f, 0, 1, 0, 1),    Params(1, 40, 1, 0, 1),      Params(1, 1, 1, 0, 1),
      Params(1, 0, 0.9f, 0, 1),    Params(0.5f, 0, 0.5f, 0, 1), Params(1, 50, 0.8f, 0, 1),
      Params(1, 0, 1, 0.05f, 1),   Params(1.2f, 20, 0.95f, 0.01f, 1.2f),
      Params(1, 999, 1, 0, 1),     Params(1, 5000, 0.99f, 0, 1)};
  const std::vector<int32_t> history = {3, 17, 250, 251, 499, 500, 750, 999};
  int checked = 0, distinct_from_greedy = 0;
  for (size_t c = 0; c < cases.size(); ++c) {
    for (Shape shape : {Shape::kNormal, Shape::kTied, Shape::kFlat, Shape::kPeaked}) {
      for (int64_t step = 0; step < 6; ++step) {
        std::vector<float> full = Logits(1000 * c + 10 * int(shape) + step, shape);
        Sampler single(cases[c]), sharded(cases[c]);
        const int32_t want = single.Sample(full.data(), kVocab, history, step);
        auto got = sharded.SampleSharded(w, full.data() + vocab->begin, *vocab, kVocab, history, step);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, want) << "case " << c << " shape " << int(shape) << " step " << step;
        // All ranks agree (they must, or the ranks' sequences would diverge).
        int32_t lo = *got, hi = *got;
        ASSERT_TRUE(w.AllReduce(std::span<int32_t>(&lo, 1), parallel::ReduceOp::kMin).ok());
        ASSERT_TRUE(w.AllReduce(std::span<int32_t>(&hi, 1), parallel::ReduceOp::kMax).ok());
        EXPECT_EQ(lo, hi);
        Sampler greedy(Params(0, 0, 1, 0, 1));
        distinct_from_greedy += want != greedy.Sample(full.data(), kVocab, {}, 0);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, int(cases.size()) * 4 * 6);
  // The sampled cases really sample (not all argmax), so the test can fail.
  EXPECT_GT(distinct_from_greedy, checked / 4);
}

TEST(SampleSharded, BadSliceIsAnError) {
  Sampler s(Params(1, 0, 1, 0, 1));
  std::vector<float> x(10);
  parallel::Communicator& w = parallel::TestWorld();
  // Checked before any collective, so every rank fails alike.
  EXPECT_EQ(s.SampleSharded(w, x.data(), parallel::Range{5, 10}, 10, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace facet
