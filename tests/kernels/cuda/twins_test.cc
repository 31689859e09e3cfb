// CPU checks of the CUDA kernels' twins (kernels/cuda/twins.h) and of the
// sampler hash port (kernels/cuda/sample_hash.h): the references the GPU
// tests trust, tested where every build runs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/half.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cuda/sample_hash.h"
#include "kernels/cuda/twins.h"
#include "worker/sampler.h"

namespace facet::cuda::twin {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(SampleHashPort, BitIdenticalToCpuSampler) {
  // The device sampler's noise must be the CPU sampler's, bit for bit.
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t seed = rng();
    const int64_t step = int64_t(rng() % 100000);
    const int32_t id = int32_t(rng() % 262144);
    const float want = GumbelNoise(seed, step, id);
    const float got = sample_hash::Noise(seed, step, id);
    ASSERT_EQ(FloatBits(got), FloatBits(want)) << "seed " << seed << " step " << step << " id " << id;
  }
  // Edge ids and steps.
  for (int32_t id : {0, 1, 262143, INT32_MAX}) {
    EXPECT_EQ(FloatBits(sample_hash::Noise(0, 0, id)), FloatBits(GumbelNoise(0, 0, id)));
  }
}

TEST(SampleTwin, SameTokenAsCpuSampler) {
  // Small vocabularies with many ties and masked entries exercise the
  // boundaries (top-k ties, the token crossing top-p, min-p, NaN, -inf).
  std::mt19937 rng(9);
  struct Case {
    float t;
    int32_t k;
    float p, min_p;
  };
  const Case cases[] = {{0, 0, 1, 0},   {1, 0, 1, 0},     {0.7f, 5, 1, 0},    {1, 0, 0.8f, 0},
                        {0.9f, 7, 0.9f, 0.1f}, {2, 1, 1, 0}, {0.3f, 0, 0.5f, 0}, {1, 0, 1, 0.2f},
                        {1.5f, 300, 0.99f, 0}};
  int differ_from_argmax = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t V = 1 + int64_t(rng() % 1000);
    std::vector<float> x(V);
    std::normal_distribution<float> d(0, 2);
    for (float& v : x) v = trial % 3 == 0 ? std::round(d(rng)) : d(rng);  // rounding makes ties
    if (V > 4 && trial % 5 == 0) x[1] = -INFINITY, x[3] = NAN;
    for (const Case& c : cases) {
      SamplingParams sp;
      sp.temperature = c.t, sp.top_k = c.k, sp.top_p = c.p, sp.min_p = c.min_p;
      sp.seed = rng();
      const int64_t step = trial;
      Sampler cpu(sp);
      const int32_t want = cpu.Sample(x.data(), V, {}, step);
      SampleArgs a;
      a.temperature = c.t, a.top_k = c.k, a.top_p = c.p, a.min_p = c.min_p;
      a.seed = sp.seed, a.step = step;
      const int32_t got = Sample(x.data(), V, a);
      ASSERT_EQ(got, want) << "trial " << trial << " V " << V << " T " << c.t << " k " << c.k
                           << " p " << c.p << " min_p " << c.min_p;
      differ_from_argmax += got != Sample(x.data(), V, SampleArgs{});
    }
  }
  EXPECT_GT(differ_from_argmax, 100);  // the draws are really random
}

TEST(RopeInvFreqTwin, BitIdenticalToCpu) {
  struct Case {
    int64_t d;
    float theta, linear, partial;
    bool proportional;
  };
  for (const Case& c : {Case{256, 1e4f, 1, 1, false}, Case{128, 1e6f, 8, 1, false},
                        Case{512, 1e6f, 1, 0.25f, true}, Case{64, 1e4f, 1, 1, true},
                        Case{8, 1e4f, 1, 0.5f, true}}) {
    const std::vector<float> want = cpu::RopeInvFreq(c.d, c.theta, c.linear, c.partial, c.proportional);
    auto got = RopeInvFreq(c.d, c.theta, c.linear, c.partial, c.proportional);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(FloatBits((*got)[i]), FloatBits(want[i])) << c.d << " " << i;
  }
  EXPECT_EQ(RopeInvFreq(7, 1e4f, 1, 1, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RopeInvFreq(8, 1e4f, 1, 0.5f, false).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AddRmsNormTwin, MatchesHandComputation) {
  const int64_t rows = 3, dim = 8;
  std::vector<float> branch = Random(rows * dim, 1, 2.0f), resid = Random(rows * dim, 2, 3.0f);
  std::vector<float> wp = Random(dim, 3), wn = Random(dim, 4);
  std::vector<float> r = resid, next(rows * dim);
  AddRmsNorm(branch.data(), wp.data(), r.data(), 0.5f, wn.data(), next.data(), rows, dim, 1e-6f,
             true);
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0, ss2 = 0;
    for (int64_t c = 0; c < dim; ++c) ss += double(branch[i * dim + c]) * branch[i * dim + c];
    const double inv = 1 / std::sqrt(ss / dim + 1e-6);
    std::vector<double> x(dim);
    for (int64_t c = 0; c < dim; ++c) {
      x[c] = (resid[i * dim + c] + branch[i * dim + c] * inv * (1 + wp[c])) * 0.5;
      ss2 += x[c] * x[c];
      EXPECT_NEAR(r[i * dim + c], x[c], 1e-5 * (1 + std::fabs(x[c])));
    }
    const double inv2 = 1 / std::sqrt(ss2 / dim + 1e-6);
    for (int64_t c = 0; c < dim; ++c) {
      EXPECT_NEAR(next[i * dim + c], x[c] * inv2 * (1 + wn[c]), 1e-5);
    }
  }
  // No post-norm, no next: a plain residual add.
  std::vector<float> r2 = resid;
  AddRmsNorm(branch.data(), nullptr, r2.data(), 1.0f, nullptr, nullptr, rows, dim, 1e-6f, false);
  for (size_t i = 0; i < r2.size(); ++i) EXPECT_EQ(r2[i], resid[i] + branch[i]);
}

TEST(MoeBlockEndTwin, IsTheGemma4BlockEnd) {
  // Gemma 4 MoE (spec §3.2): x2 = (x1 + post(post1(d) + post2(e))) · layer_scalar.
  const int64_t dim = 16;
  std::vector<float> d = Random(dim, 20), e = Random(dim, 21), x = Random(dim, 22, 3.0f);
  std::vector<float> w1 = Random(dim, 23), w2 = Random(dim, 24), wp = Random(dim, 25), wn = Random(dim, 26);
  std::vector<float> a(dim), b(dim), f(dim), want_next(dim), next(dim);
  cpu::ref::RmsNorm(d.data(), w1.data(), a.data(), 1, dim, 1e-6f, false);
  cpu::ref::RmsNorm(e.data(), w2.data(), b.data(), 1, dim, 1e-6f, false);
  for (int64_t i = 0; i < dim; ++i) a[i] += b[i];
  cpu::ref::RmsNorm(a.data(), wp.data(), f.data(), 1, dim, 1e-6f, false);
  std::vector<float> want = x;
  for (int64_t i = 0; i < dim; ++i) want[i] = (want[i] + f[i]) * 0.25f;
  cpu::ref::RmsNorm(want.data(), wn.data(), want_next.data(), 1, dim, 1e-6f, false);
  MoeBlockEnd(d.data(), w1.data(), e.data(), w2.data(), wp.data(), x.data(), 0.25f, wn.data(),
              next.data(), 1, dim, 1e-6f);
  EXPECT_EQ(x, want);
  EXPECT_EQ(next, want_next);
}

TEST(QkNormRopeKvTwin, WritesSlotsSkipsNegativesAndSharesKv) {
  const int64_t T = 3, Nq = 2, Nkv = 1, D = 8, slots = 8;
  // K = V layout: [T, (Nq + Nkv)·D].
  std::vector<float> qkv = Random(T * (Nq + Nkv) * D, 5);
  std::vector<int32_t> pos = {0, 5, 9};
  std::vector<int64_t> slot = {6, -1, 1};
  std::vector<float> inv = *RopeInvFreq(D, 10000.f, 1.f, 0.5f, true);
  std::vector<float> qn = Random(D, 6), kn = Random(D, 7);
  std::vector<float> q(T * Nq * D), kc(slots * Nkv * D, 42.f), vc(slots * Nkv * D, 42.f);
  QkvRope p;
  p.tokens = T, p.num_heads = Nq, p.num_kv_heads = Nkv, p.head_dim = D, p.qkv = qkv.data();
  p.k_eq_v = true, p.q_norm = qn.data(), p.k_norm = kn.data(), p.v_norm = true;
  p.positions = pos.data(), p.inv_freq = inv.data(), p.slot_mapping = slot.data(), p.num_slots = slots;
  p.q_out = q.data(), p.k_cache = kc.data(), p.v_cache = vc.data();
  ASSERT_TRUE(QkNormRopeKv(p).ok());
  // Untouched slots keep their old contents; token 1 (slot -1) wrote nothing.
  for (int64_t s : {0, 2, 3, 4, 5, 7}) EXPECT_EQ(kc[s * D], 42.f) << s;
  // v = weightless-normed raw k, no RoPE: unit mean square.
  for (int64_t t : {0, 2}) {
    const float* v = vc.data() + slot[t] * D;
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += double(v[d]) * v[d] / D;
    EXPECT_NEAR(ms, 1.0, 1e-4);
    // and it is the raw k row over its root mean square
    const float* kraw = qkv.data() + t * (Nq + Nkv) * D + Nq * D;
    double kms = 0;
    for (int64_t d = 0; d < D; ++d) kms += double(kraw[d]) * kraw[d] / D;
    for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(v[d] * std::sqrt(kms + 1e-6), kraw[d], 1e-5);
  }
  // Position 0 leaves q = RmsNorm(q) (no rotation).
  std::vector<float> qnormed(Nq * D);
  cpu::ref::RmsNorm(qkv.data(), qn.data(), qnormed.data(), Nq, D, 1e-6f, false);
  for (int64_t i = 0; i < Nq * D; ++i) EXPECT_FLOAT_EQ(q[i], qnormed[i]);
  // Proportional RoPE with factor 0.5 leaves the upper half of the pairs unrotated.
  std::vector<float> k2(D);
  cpu::ref::RmsNorm(qkv.data() + 2 * (Nq + Nkv) * D + Nq * D, kn.data(), k2.data(), 1, D, 1e-6f, false);
  EXPECT_FLOAT_EQ(kc[1 * D + 3], k2[3]);  // i = 3 >= 0.5·D/2: frequency zero
  EXPECT_NE(kc[1 * D + 0], k2[0]);        // i = 0 turns by 9 rad

  slot[2] = slots;
  absl::Status s = QkNormRopeKv(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(MoePermuteTwin, GroupsByExpertInPairOrderWithPadding) {
  const int64_t T = 5, k = 2, E = 4, tile = 4;
  const std::vector<int32_t> ids = {2, 0, 0, 1, 2, 3, 0, 2, 2, 0};
  const int64_t max_tiles = (T * k + tile - 1) / tile + E;
  auto perm = MoePermute(ids.data(), T, k, E, tile, max_tiles);
  ASSERT_TRUE(perm.ok()) << perm.status();
  // counts 4, 1, 4, 1 -> tiles 1, 1, 1, 1 -> offsets 0, 4, 8, 12, 16.
  EXPECT_EQ(perm->offsets, (std::vector<int32_t>{0, 4, 8, 12, 16}));
  EXPECT_EQ(std::vector<int32_t>(perm->tile_expert.begin(), perm->tile_expert.begin() + 5),
            (std::vector<int32_t>{0, 1, 2, 3, -1}));
  std::set<int32_t> rows;
  for (int64_t p = 0; p < T * k; ++p) {
    const int32_t r = perm->pair_row[p];
    EXPECT_EQ(perm->row_src[r], p);
    EXPECT_GE(r, perm->offsets[ids[p]]);
    EXPECT_LT(r, perm->offsets[ids[p] + 1]);
    rows.insert(r);
  }
  EXPECT_EQ(rows.size(), size_t(T * k));
  // Expert 0's pairs 1, 2, 6, 9 in order.
  EXPECT_EQ(std::vector<int32_t>(perm->row_src.begin(), perm->row_src.begin() + 4),
            (std::vector<int32_t>{1, 2, 6, 9}));
  EXPECT_EQ(perm->row_src[5], -1);  // padding of expert 1

  const std::vector<int32_t> bad = {0, 4};
  EXPECT_EQ(MoePermute(bad.data(), 1, 2, E, tile, max_tiles).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DequantizeFp8Twin, PerChannelAndBlockScales) {
  const int64_t N = 130, K = 260;
  std::vector<uint8_t> w(N * K);
  for (size_t i = 0; i < w.size(); ++i) w[i] = uint8_t(i * 37 % 0x7e);  // finite codes
  std::vector<float> per_channel(N), block(2 * 3);
  for (int64_t n = 0; n < N; ++n) per_channel[n] = 0.5f + n;
  for (size_t b = 0; b < block.size(); ++b) block[b] = 2.0f + b;
  const auto a = DequantizeFp8(w.data(), N, K, per_channel.data(), false);
  const auto b = DequantizeFp8(w.data(), N, K, block.data(), true);
  for (int64_t n : {0, 127, 128, 129}) {
    for (int64_t c : {0, 127, 128, 255, 256, 259}) {
      const float v = Fp8E4M3ToF32(w[n * K + c]);
      EXPECT_EQ(a[n * K + c], v * per_channel[n]);
      EXPECT_EQ(b[n * K + c], v * block[(n / 128) * 3 + c / 128]) << n << "," << c;
    }
  }
}

}  // namespace
}  // namespace facet::cuda::twin
