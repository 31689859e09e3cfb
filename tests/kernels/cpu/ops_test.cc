// Fast CPU kernels (kernels/cpu/ops.h) against their references (ops_ref.h),
// plus hand-checkable cases.
//
// Tolerances are error bounds, not guesses. u = 2^-24 is the fp32 unit
// roundoff; γ_n = n·u / (1 − n·u) bounds the relative error of an n-term fp32
// sum of products in any order: |fl(Σ a_i b_i) − Σ a_i b_i| ≤ γ_n · Σ |a_i b_i|
// (Higham, Accuracy and Stability of Numerical Algorithms, §3.1). The
// references reduce in double and round once, so they add u·|result|.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cpu/quant.h"

namespace facet::cpu {
namespace {

constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff

double Gamma(double n) { return n * kU / (1.0 - n * kU); }

std::vector<float> Random(int64_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// A weight matrix in one of the float formats, built from random values.
struct TestWeight {
  std::vector<uint8_t> bytes;
  WeightRef ref;
};

TestWeight MakeWeight(WeightFormat f, int64_t rows, int64_t cols, uint32_t seed,
                      float lo = -1.0f, float hi = 1.0f) {
  const std::vector<float> v = Random(rows * cols, seed, lo, hi);
  TestWeight w;
  w.bytes.resize(RowBytes(f, cols) * rows + 1);
  for (int64_t i = 0; i < rows * cols; ++i) {
    switch (f) {
      case WeightFormat::kF32: std::memcpy(w.bytes.data() + 4 * i, &v[i], 4); break;
      case WeightFormat::kF16: {
        const fp16 h = F32ToFp16(v[i]);
        std::memcpy(w.bytes.data() + 2 * i, &h, 2);
        break;
      }
      case WeightFormat::kBF16: {
        const bf16 h = F32ToBf16(v[i]);
        std::memcpy(w.bytes.data() + 2 * i, &h, 2);
        break;
      }
      default: ADD_FAILURE() << "not a float format";
    }
  }
  w.ref = WeightRef{w.bytes.data(), f, rows, cols};
  return w;
}

constexpr WeightFormat kFloatFormats[] = {WeightFormat::kF32, WeightFormat::kF16,
                                          WeightFormat::kBF16};

std::string Name(WeightFormat f) { return std::string(WeightFormatName(f)); }

// ---------------------------------------------------------------------------
// MatMul

// Each fast output is an fp32 sum of K products: |y − y_exact| ≤ γ_K·Σ_k |x_k w_k|;
// the reference is y_exact rounded once (≤ u·|y|).
void ExpectMatMulClose(const std::vector<float>& x, int64_t m, const WeightRef& w,
                       const std::vector<float>& fast, const std::vector<float>& want,
                       const std::string& what) {
  int bad = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t n = 0; n < w.rows; ++n) {
      double abs_sum = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) {
        abs_sum += std::fabs(double(x[i * w.cols + k]) * ref::WeightAt(w, n, k));
      }
      const double y = want[i * w.rows + n];
      const double tol = Gamma(double(w.cols)) * abs_sum + kU * std::fabs(y) + 1e-30;
      const double err = std::fabs(double(fast[i * w.rows + n]) - y);
      if (err > tol && bad++ < 5) {
        ADD_FAILURE() << what << " y[" << i << ", " << n << "] = " << fast[i * w.rows + n]
                      << " want " << y << " err " << err << " > tol " << tol;
      }
    }
  }
}

void CheckMatMul(const std::vector<int64_t>& Ks, const std::vector<int64_t>& Ns,
                 const std::vector<int64_t>& ms) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (WeightFormat f : kFloatFormats) {
    for (int64_t K : Ks) {
      for (int64_t N : Ns) {
        const TestWeight w = MakeWeight(f, N, K, seed++);
        for (int64_t m : ms) {
          const std::vector<float> x = Random(m * K, seed++);
          std::vector<float> want(m * N), fast(m * N, NAN), serial(m * N, NAN);
          ASSERT_TRUE(ref::MatMul(x.data(), m, w.ref, want.data(), nullptr).ok());
          ASSERT_TRUE(MatMul(x.data(), m, w.ref, fast.data(), &pool).ok());
          ASSERT_TRUE(MatMul(x.data(), m, w.ref, serial.data(), nullptr).ok());
          const std::string what = Name(f) + " m=" + std::to_string(m) + " N=" +
                                   std::to_string(N) + " K=" + std::to_string(K);
          ExpectMatMulClose(x, m, w.ref, fast, want, what);
          // Threads own whole output columns, so the thread count cannot
          // change a single bit.
          ASSERT_EQ(0, std::memcmp(fast.data(), serial.data(), fast.size() * 4)) << what;
        }
      }
    }
  }
}

TEST(OpsMatMul, MatchesReferenceAcrossShapesAndFormats) {
  // K: below, at and past a SIMD width; past the packed block depth (256).
  // N: ragged panels, more than one 128-column block. m: decode path (< 32)
  // and the packed path, with ragged micro-tiles.
  CheckMatMul({1, 3, 17, 67, 129, 300}, {1, 5, 33, 140}, {1, 2, 5, 17, 31, 32, 45, 64});
}

TEST(OpsMatMul, ManyRowsAcrossRowBlocks) {
  // More rows than one packed x block (384 on AVX-512, 192 on AVX2).
  ThreadPool pool(2);
  const int64_t m = 400, N = 37, K = 300;
  for (WeightFormat f : kFloatFormats) {
    const TestWeight w = MakeWeight(f, N, K, 77);
    const std::vector<float> x = Random(m * K, 78);
    std::vector<float> want(m * N), fast(m * N, NAN);
    ASSERT_TRUE(ref::MatMul(x.data(), m, w.ref, want.data(), nullptr).ok());
    ASSERT_TRUE(MatMul(x.data(), m, w.ref, fast.data(), &pool).ok());
    ExpectMatMulClose(x, m, w.ref, fast, want, Name(f) + " m=400");
  }
}

TEST(OpsMatMul, DecodeSplitAcrossThreadsIsBitExact) {
  // Enough rows that the few-rows path hands out many chunks of different
  // sizes (the small shapes above fit in one work item), with a ragged row
  // count and K a multiple of no vector width.
  const int64_t N = 2003, K = 70;
  ThreadPool two(2), three(3);
  uint32_t seed = 500;
  for (WeightFormat f : kFloatFormats) {
    const TestWeight w = MakeWeight(f, N, K, seed++);
    for (int64_t m : {int64_t(1), int64_t(5)}) {
      const std::vector<float> x = Random(m * K, seed++);
      std::vector<float> want(m * N), serial(m * N, NAN), a(m * N, NAN), b(m * N, NAN);
      ASSERT_TRUE(ref::MatMul(x.data(), m, w.ref, want.data(), nullptr).ok());
      ASSERT_TRUE(MatMul(x.data(), m, w.ref, serial.data(), nullptr).ok());
      ASSERT_TRUE(MatMul(x.data(), m, w.ref, a.data(), &two).ok());
      ASSERT_TRUE(MatMul(x.data(), m, w.ref, b.data(), &three).ok());
      const std::string what = Name(f) + " m=" + std::to_string(m);
      ExpectMatMulClose(x, m, w.ref, serial, want, what);
      ASSERT_EQ(0, std::memcmp(a.data(), serial.data(), a.size() * 4)) << what;
      ASSERT_EQ(0, std::memcmp(b.data(), serial.data(), b.size() * 4)) << what;
    }
  }
}

TEST(OpsMatMul, ExactOnSmallIntegers) {
  // Integer products and sums below 2^24 are exact in fp32 in any order, so
  // both paths must give the exact integer matrix product.
  const int64_t m = 40, N = 37, K = 70;
  std::vector<float> x(m * K), wv(N * K);
  for (int64_t i = 0; i < m * K; ++i) x[i] = float(int(i * 7 % 11) - 5);
  for (int64_t i = 0; i < N * K; ++i) wv[i] = float(int(i * 5 % 13) - 6);
  const WeightRef w{wv.data(), WeightFormat::kF32, N, K};
  for (int64_t rows : {int64_t(3), int64_t(m)}) {
    std::vector<float> y(rows * N);
    ASSERT_TRUE(MatMul(x.data(), rows, w, y.data(), nullptr).ok());
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t n = 0; n < N; ++n) {
        int64_t want = 0;
        for (int64_t k = 0; k < K; ++k) want += int64_t(x[i * K + k]) * int64_t(wv[n * K + k]);
        ASSERT_EQ(float(want), y[i * N + n]) << "rows=" << rows << " i=" << i << " n=" << n;
      }
    }
  }
}

TEST(OpsMatMul, BlockFormatsGoThroughQuantMatMul) {
  const int64_t m = 3, N = 9, K = 256;
  const std::vector<float> src = Random(N * K, 7);
  std::vector<uint8_t> q(RowBytes(WeightFormat::kQ8_0, K) * N);
  for (int64_t n = 0; n < N; ++n) {
    ASSERT_TRUE(QuantizeRowRef(WeightFormat::kQ8_0, src.data() + n * K,
                               q.data() + n * RowBytes(WeightFormat::kQ8_0, K), K)
                    .ok());
  }
  const WeightRef w{q.data(), WeightFormat::kQ8_0, N, K};
  const std::vector<float> x = Random(m * K, 8);
  std::vector<float> a(m * N), b(m * N);
  ASSERT_TRUE(MatMul(x.data(), m, w, a.data(), nullptr).ok());
  ASSERT_TRUE(QuantMatMul(x.data(), m, w, b.data(), nullptr).ok());
  EXPECT_EQ(a, b);
}

TEST(OpsMatMul, RejectsBadArguments) {
  std::vector<float> x(8), y(8);
  std::vector<uint8_t> q(1024);
  const WeightRef ragged{q.data(), WeightFormat::kQ4_K, 2, 100};  // 100 % 256 != 0
  EXPECT_EQ(MatMul(x.data(), 1, ragged, y.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  const WeightRef ok{q.data(), WeightFormat::kF32, 2, 2};
  EXPECT_EQ(MatMul(nullptr, 1, ok, y.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MatMul(x.data(), -1, ok, y.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MatMul(x.data(), 0, ok, y.data(), nullptr).ok());
}

TEST(OpsMatMul, PrintsThroughput) {
  // Informational only (no assertion): where the kernels stand on this box.
  // Wall time suffers when other processes share the cores; process CPU
  // time shows what the kernel itself costs.
  const int64_t N = 2048, K = 2048;
  const TestWeight w = MakeWeight(WeightFormat::kBF16, N, K, 99);
  ThreadPool pool(0);
  const int64_t best = hwy::SupportedTargets() & -hwy::SupportedTargets();
  for (int64_t m : {int64_t(1), int64_t(512)}) {
    const std::vector<float> x = Random(m * K, 100);
    std::vector<float> y(m * N);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      ASSERT_TRUE(MatMul(x.data(), m, w.ref, y.data(), p).ok());  // warm up
      const int reps = m == 1 ? 50 : 3;
      const std::clock_t c0 = std::clock();
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) ASSERT_TRUE(MatMul(x.data(), m, w.ref, y.data(), p).ok());
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC / reps;
      const double flop = 2.0 * m * N * K, bytes = double(N * K * 2);
      std::printf(
          "MatMul bf16 %lldx%lld m=%lld %s threads=%d: wall %.2f ms (%.1f GFLOP/s, %.1f GB/s), "
          "cpu %.2f ms (%.1f GFLOP/s/core-s, %.1f GB/s/core-s)\n",
          (long long)N, (long long)K, (long long)m, hwy::TargetName(best),
          p ? p->num_threads() : 1, wall * 1e3, flop / wall * 1e-9, bytes / wall * 1e-9,
          cpu * 1e3, flop / cpu * 1e-9, bytes / cpu * 1e-9);
    }
  }
}

// ---------------------------------------------------------------------------
// Embed, RmsNorm, element-wise

void CheckEmbed() {
  // Widening is exact and the scale multiply is one fp32 rounding in both.
  const int32_t ids[] = {0, 6, 3, 6};
  for (WeightFormat f : kFloatFormats) {
    for (int64_t cols : {1, 3, 17, 67}) {
      const TestWeight table = MakeWeight(f, 7, cols, 11);
      std::vector<float> a(4 * cols), b(4 * cols);
      Embed(table.ref, ids, 4, 48.0f, a.data());
      ref::Embed(table.ref, ids, 4, 48.0f, b.data());
      EXPECT_EQ(a, b) << Name(f) << " cols=" << cols;
      EXPECT_EQ(a[2 * cols], ref::WeightAt(table.ref, 3, 0) * 48.0f);  // ids[2] = 3
    }
  }
}

TEST(OpsEmbed, EqualsReferenceBitForBit) { CheckEmbed(); }

TEST(OpsEmbed, DequantizesBlockFormats) {
  const int64_t cols = 64;
  const std::vector<float> src = Random(3 * cols, 12);
  const int64_t rb = RowBytes(WeightFormat::kQ8_0, cols);
  std::vector<uint8_t> q(3 * rb);
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(QuantizeRowRef(WeightFormat::kQ8_0, src.data() + r * cols, q.data() + r * rb, cols).ok());
  }
  const WeightRef table{q.data(), WeightFormat::kQ8_0, 3, cols};
  const int32_t id = 2;
  std::vector<float> got(cols), row(cols);
  Embed(table, &id, 1, 2.0f, got.data());
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ8_0, q.data() + 2 * rb, row.data(), cols).ok());
  for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(got[c], row[c] * 2.0f);
}

void CheckRmsNorm() {
  // Σx² has only positive terms (≤ γ_dim relative); /dim, +eps, sqrt, 1/,
  // ·x, ·w and 1 + w add one rounding each, and sqrt halves the error of its
  // argument: |y − y_exact| ≤ (γ_dim / 2 + 8u)·|y_exact| (+u for the reference).
  for (int64_t dim : {1, 3, 17, 67, 129, 256}) {
    const int64_t rows = 5;
    const std::vector<float> x = Random(rows * dim, 20 + dim, -3.0f, 3.0f);
    const std::vector<float> w = Random(dim, 30 + dim, -0.5f, 1.5f);
    for (int variant = 0; variant < 3; ++variant) {
      const float* wp = variant == 0 ? nullptr : w.data();
      const bool plus_one = variant == 2;
      std::vector<float> fast(rows * dim), want(rows * dim);
      RmsNorm(x.data(), wp, fast.data(), rows, dim, 1e-6f, plus_one);
      ref::RmsNorm(x.data(), wp, want.data(), rows, dim, 1e-6f, plus_one);
      for (int64_t i = 0; i < rows * dim; ++i) {
        const double tol = (Gamma(dim) / 2 + 9 * kU) * std::fabs(want[i]) + 1e-30;
        ASSERT_NEAR(fast[i], want[i], tol) << "dim=" << dim << " variant=" << variant << " i=" << i;
      }
      // In place gives the same bits as out of place.
      std::vector<float> inplace = x;
      RmsNorm(inplace.data(), wp, inplace.data(), rows, dim, 1e-6f, plus_one);
      ASSERT_EQ(inplace, fast);
    }
  }
}

TEST(OpsRmsNorm, MatchesReference) { CheckRmsNorm(); }

TEST(OpsRmsNorm, HandChecked) {
  // x = (3, 4): mean(x²) = 12.5, so y = x / sqrt(12.5) · w.
  const float x[2] = {3.0f, 4.0f};
  const float w[2] = {2.0f, 0.5f};
  float y[2];
  RmsNorm(x, w, y, 1, 2, 0.0f, false);
  EXPECT_FLOAT_EQ(y[0], 3.0f / std::sqrt(12.5f) * 2.0f);
  EXPECT_FLOAT_EQ(y[1], 4.0f / std::sqrt(12.5f) * 0.5f);
  RmsNorm(x, w, y, 1, 2, 0.0f, true);  // Gemma 2/3: · (1 + w)
  EXPECT_FLOAT_EQ(y[0], 3.0f / std::sqrt(12.5f) * 3.0f);
  EXPECT_FLOAT_EQ(y[1], 4.0f / std::sqrt(12.5f) * 1.5f);
}

// gelu_tanh(g)·up evaluated in fp32: the inner polynomial carries ≤ 5u
// relative error (no cancellation: x and κx³ share a sign), Highway's Tanh is
// within 4 ulp (≤ 8u·|t|) and passes the argument error on with slope 1 − t²;
// 1 + t, ·0.5x, ·up round once each.
double GeGluBound(double g, double up) {
  const double inner = double(float(0.79788456080286535587989211986876)) *
                       (g + double(0.044715f) * g * g * g);
  const double t = std::tanh(inner);
  const double dt = 8 * kU * std::fabs(t) + (1 - t * t) * 5 * kU * std::fabs(inner);
  const double gelu = 0.5 * g * (1 + t);
  const double dgelu = 0.5 * std::fabs(g) * (dt + kU * std::fabs(1 + t)) + 2 * kU * std::fabs(gelu);
  return std::fabs(up) * dgelu + 2 * kU * std::fabs(gelu * up) + 1e-30;
}

void CheckGeGlu() {
  for (int64_t inter : {1, 3, 17, 67, 129}) {
    const int64_t m = 3;
    const std::vector<float> gu = Random(m * 2 * inter, 40 + inter, -6.0f, 6.0f);
    std::vector<float> fast(m * inter), want(m * inter);
    GeGlu(gu.data(), m, inter, fast.data());
    ref::GeGlu(gu.data(), m, inter, want.data());
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < inter; ++i) {
        const float g = gu[r * 2 * inter + i], up = gu[r * 2 * inter + inter + i];
        ASSERT_NEAR(fast[r * inter + i], want[r * inter + i], GeGluBound(g, up))
            << "inter=" << inter << " g=" << g << " up=" << up;
      }
    }
  }
}

TEST(OpsGeGlu, MatchesReference) { CheckGeGlu(); }

TEST(OpsGeGlu, HandChecked) {
  // gelu(0) = 0; gelu(x) → x for large x, → 0 for very negative x.
  const float gu[6] = {0.0f, 20.0f, -20.0f, 5.0f, 3.0f, 7.0f};
  float out[3];
  GeGlu(gu, 1, 3, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_FLOAT_EQ(out[1], 20.0f * 3.0f);
  EXPECT_NEAR(out[2], 0.0f, 1e-30);
}

void CheckSoftcap() {
  // z = x / cap rounds (u·|z|, passed on with slope 1 − t²), tanh ≤ 8u·|t|,
  // ·cap rounds once: |Δy| ≤ cap·(8u|t| + (1 − t²)·u|z|) + u|y|.
  for (int64_t n : {1, 3, 17, 67, 1000}) {
    const float cap = 30.0f;
    const std::vector<float> x = Random(n, 50 + n, -200.0f, 200.0f);
    std::vector<float> fast = x, want = x;
    Softcap(fast.data(), n, cap);
    ref::Softcap(want.data(), n, cap);
    for (int64_t i = 0; i < n; ++i) {
      const double z = double(x[i]) / cap, t = std::tanh(z);
      const double tol = cap * (8 * kU * std::fabs(t) + (1 - t * t) * kU * std::fabs(z)) +
                         kU * std::fabs(want[i]) + 1e-30;
      ASSERT_NEAR(fast[i], want[i], tol) << "x=" << x[i];
      ASSERT_LE(std::fabs(fast[i]), cap);
      ASSERT_EQ(std::signbit(fast[i]), std::signbit(x[i]));
    }
  }
  float small = 1e-3f;
  Softcap(&small, 1, 30.0f);
  EXPECT_FLOAT_EQ(small, 1e-3f);  // tanh(z) ≈ z near 0
}

TEST(OpsSoftcap, MatchesReferenceAndBounds) { CheckSoftcap(); }

TEST(OpsElementwise, AddAndScaleExact) {
  for (int64_t n : {1, 3, 17, 67}) {
    const std::vector<float> a = Random(n, 60 + n), b = Random(n, 70 + n);
    std::vector<float> y = a;
    AddInPlace(y.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], a[i] + b[i]);
    y = a;
    Scale(y.data(), n, -1.75f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], a[i] * -1.75f);
  }
}

// ---------------------------------------------------------------------------
// RoPE

TEST(OpsRopeInvFreq, DefaultLinearAndProportional) {
  const std::vector<float> d = RopeInvFreq(256, 10000.0f, 1.0f, 1.0f, false);
  ASSERT_EQ(d.size(), 128u);
  EXPECT_EQ(d[0], 1.0f);
  EXPECT_FLOAT_EQ(d[64], 0.01f);  // 10000^(-128/256)
  for (size_t i = 1; i < d.size(); ++i) ASSERT_LT(d[i], d[i - 1]);

  // Gemma 3 global: θ = 1e6 and linear factor 8 divides every frequency.
  const std::vector<float> g = RopeInvFreq(256, 1e6f, 1.0f, 1.0f, false);
  const std::vector<float> lin = RopeInvFreq(256, 1e6f, 8.0f, 1.0f, false);
  for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(lin[i], g[i] / 8.0f);

  // Gemma 4 global: 64 of 256 pairs turn, with the full head dim (512) as
  // the exponent denominator; the rest are zero.
  const std::vector<float> p = RopeInvFreq(512, 1e6f, 1.0f, 0.25f, true);
  ASSERT_EQ(p.size(), 256u);
  for (int i = 0; i < 64; ++i) {
    ASSERT_FLOAT_EQ(p[i], float(std::pow(1e6, -2.0 * i / 512))) << i;
  }
  for (int i = 64; i < 256; ++i) ASSERT_EQ(p[i], 0.0f) << i;
}

void CheckRope() {
  // Same fp32 cos/sin and the same multiply/add order as HF: no rounding
  // difference is allowed.
  for (int64_t head_dim : {2, 6, 34, 128, 256}) {
    const int64_t tokens = 3, heads = 2;
    const std::vector<float> inv = RopeInvFreq(head_dim, 10000.0f, 1.0f, 1.0f, false);
    const int32_t pos[3] = {0, 7, 4097};
    std::vector<float> fast = Random(tokens * heads * head_dim, 80 + head_dim);
    std::vector<float> want = fast;
    Rope(fast.data(), pos, tokens, heads, head_dim, inv.data());
    ref::Rope(want.data(), pos, tokens, heads, head_dim, inv.data());
    ASSERT_EQ(fast, want) << "head_dim=" << head_dim;
  }
}

TEST(OpsRope, MatchesReferenceBitForBit) { CheckRope(); }

TEST(OpsRope, PositionZeroIsIdentity) {
  const std::vector<float> inv = RopeInvFreq(64, 10000.0f, 1.0f, 1.0f, false);
  const std::vector<float> x = Random(2 * 64, 90);
  std::vector<float> y = x;
  const int32_t pos = 0;
  Rope(y.data(), &pos, 1, 2, 64, inv.data());
  EXPECT_EQ(x, y);
}

TEST(OpsRope, ProportionalLeavesUnrotatedDims) {
  const int64_t D = 512;
  const std::vector<float> inv = RopeInvFreq(D, 1e6f, 1.0f, 0.25f, true);
  const std::vector<float> x = Random(D, 91);
  std::vector<float> y = x;
  const int32_t pos = 1234;
  Rope(y.data(), &pos, 1, 1, D, inv.data());
  for (int64_t i = 0; i < D; ++i) {
    const bool rotated = i < 64 || (i >= 256 && i < 256 + 64);
    if (rotated) {
      // Pair (i, i+256) keeps its length.
      if (i < 64) {
        const double before = std::hypot(x[i], x[i + 256]), after = std::hypot(y[i], y[i + 256]);
        ASSERT_NEAR(after, before, 4 * kU * before) << i;
      }
    } else {
      ASSERT_EQ(y[i], x[i]) << "dim " << i << " must pass through";
    }
  }
  EXPECT_NE(y[0], x[0]);  // pair 0 turns by 1234 rad
}

TEST(OpsRope, ScoresDependOnRelativePosition) {
  // <R(p)q, R(p')k> depends on p − p' only: compare (p, p') = (9, 4), (1009, 1004).
  const int64_t D = 64;
  const std::vector<float> inv = RopeInvFreq(D, 10000.0f, 1.0f, 1.0f, false);
  const std::vector<float> q = Random(D, 92), k = Random(D, 93);
  auto score = [&](int32_t pq, int32_t pk) {
    std::vector<float> a = q, b = k;
    Rope(a.data(), &pq, 1, 1, D, inv.data());
    Rope(b.data(), &pk, 1, 1, D, inv.data());
    double s = 0;
    for (int64_t i = 0; i < D; ++i) s += double(a[i]) * b[i];
    return s;
  };
  // fp32 angles p·θ_i carry ≤ u·p·θ_i error (p = 1009: ≈ 6e-5 rad), which
  // moves each of the D/2 pair products by at most that angle times |q||k|.
  double qk = 0;
  for (int64_t i = 0; i < D; ++i) qk += std::fabs(q[i]) * std::fabs(k[i]);
  EXPECT_NEAR(score(9, 4), score(1009, 1004), 2 * 1009 * 8 * kU * qk + 1e-6);
}

// ---------------------------------------------------------------------------
// Attention

// Per output element: the fast kernel's scores carry δs_j ≤ scale·γ_D·Σ|q k_j|
// (+ softcap rounding), the exponent argument s_j − m adds u·|s_j − m|, Exp
// is within 1 ulp; each becomes a relative error of p_j. The running sums of
// p and p·v add ≤ γ_n, each online rescale and split merge a few u:
//   |Δo_d| ≤ Σ_j p_j |v_jd| · (2·max_j arg_err_j + (2n + n/8 + 3·splits + 12)·u).
struct AttnCase {
  int64_t T, Nq, Nkv, D, S, window;
  float scale, softcap;
  int64_t kv_pos0 = 0;
};

void CheckAttentionAgainstReference(const AttnCase& c, ThreadPool* pool, uint32_t seed) {
  AttentionParams p;
  p.num_q_tokens = c.T;
  p.num_heads = c.Nq;
  p.num_kv_heads = c.Nkv;
  p.head_dim = c.D;
  p.scale = c.scale;
  p.softcap = c.softcap;
  p.window = c.window;
  const std::vector<float> q = Random(c.T * c.Nq * c.D, seed, -2.0f, 2.0f);
  const std::vector<float> k = Random(c.S * c.Nkv * c.D, seed + 1, -2.0f, 2.0f);
  const std::vector<float> v = Random(c.S * c.Nkv * c.D, seed + 2);
  // The last T cached rows are this step's tokens.
  std::vector<int32_t> pos(c.T);
  for (int64_t t = 0; t < c.T; ++t) pos[t] = int32_t(c.kv_pos0 + c.S - c.T + t);
  std::vector<float> fast(q.size(), NAN), want(q.size(), NAN);
  ASSERT_TRUE(ref::Attention(p, q.data(), pos.data(), k.data(), v.data(), c.S, c.kv_pos0,
                             want.data(), nullptr).ok());
  ASSERT_TRUE(Attention(p, q.data(), pos.data(), k.data(), v.data(), c.S, c.kv_pos0, fast.data(),
                        pool).ok());
  const int64_t group = c.Nq / c.Nkv;
  const int64_t threads = pool ? pool->num_threads() : 1;
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(2 * threads, c.S / 256));
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t h = 0; h < c.Nq; ++h) {
      const int64_t kvh = h / group;
      const float* qv = q.data() + (t * c.Nq + h) * c.D;
      std::vector<double> s(c.S, -INFINITY), serr(c.S, 0.0);
      double m = -INFINITY;
      int64_t n = 0;
      for (int64_t j = 0; j < c.S; ++j) {
        const int64_t dist = pos[t] - (c.kv_pos0 + j);
        if (dist < 0 || (c.window > 0 && dist >= c.window)) continue;
        ++n;
        double dot = 0, abs_dot = 0;
        for (int64_t d = 0; d < c.D; ++d) {
          dot += double(qv[d]) * k[(j * c.Nkv + kvh) * c.D + d];
          abs_dot += std::fabs(double(qv[d]) * k[(j * c.Nkv + kvh) * c.D + d]);
        }
        double sj = dot * c.scale;
        double ej = c.scale * Gamma(c.D + 1) * abs_dot;
        if (c.softcap > 0) {
          const double z = sj / c.softcap, th = std::tanh(z);
          ej = (1 - th * th) * (ej + kU * std::fabs(sj)) + c.softcap * 8 * kU * std::fabs(th) +
               kU * c.softcap * std::fabs(th);
          sj = c.softcap * th;
        }
        s[j] = sj;
        serr[j] = ej;
        m = std::max(m, sj);
      }
      double max_arg_err = 0, denom = 0;
      for (int64_t j = 0; j < c.S; ++j) {
        if (s[j] == -INFINITY) continue;
        max_arg_err = std::max(max_arg_err, serr[j] + kU * std::fabs(s[j] - m) + 2 * kU);
        denom += std::exp(s[j] - m);
      }
      const double max_serr = *std::max_element(serr.begin(), serr.end());
      const double rel = 2 * (max_arg_err + max_serr) + (2.0 * n + n / 8.0 + 3.0 * splits + 12) * kU;
      for (int64_t d = 0; d < c.D; ++d) {
        double pv = 0;
        for (int64_t j = 0; j < c.S; ++j) {
          if (s[j] == -INFINITY) continue;
          pv += std::exp(s[j] - m) / denom * std::fabs(v[(j * c.Nkv + kvh) * c.D + d]);
        }
        const size_t i = (t * c.Nq + h) * c.D + d;
        ASSERT_NEAR(fast[i], want[i], pv * rel + kU * std::fabs(want[i]) + 1e-30)
            << "T=" << c.T << " Nq=" << c.Nq << " Nkv=" << c.Nkv << " D=" << c.D << " S=" << c.S
            << " window=" << c.window << " softcap=" << c.softcap << " t=" << t << " h=" << h
            << " d=" << d;
      }
    }
  }
}

TEST(OpsAttention, MatchesReference) {
  ThreadPool pool(2);
  const AttnCase cases[] = {
      {1, 1, 1, 3, 1, 0, 1.0f, 0.0f},          {1, 4, 2, 16, 7, 0, 0.25f, 0.0f},
      {5, 4, 2, 67, 40, 0, 0.125f, 0.0f},      {5, 8, 1, 17, 40, 4, 1.0f, 0.0f},
      {3, 2, 2, 128, 70, 16, 0.0625f, 50.0f},  {9, 2, 1, 64, 9, 0, 0.125f, 0.0f, 100},
      {4, 4, 4, 32, 33, 0, 0.5f, 50.0f, 7},
  };
  uint32_t seed = 200;
  for (const AttnCase& c : cases) {
    CheckAttentionAgainstReference(c, &pool, seed);
    CheckAttentionAgainstReference(c, nullptr, seed);
    seed += 10;
  }
}

TEST(OpsAttention, LongDecodeSplitsKeys) {
  // One token, one kv head, 2000 keys: the key range is split over threads
  // and merged; a sliding variant only visits the window.
  ThreadPool pool(2);
  CheckAttentionAgainstReference({1, 4, 1, 64, 2000, 0, 0.125f, 0.0f}, &pool, 300);
  CheckAttentionAgainstReference({1, 2, 1, 32, 2000, 700, 0.125f, 0.0f}, &pool, 310);
  CheckAttentionAgainstReference({2, 2, 2, 16, 1500, 0, 0.25f, 50.0f}, &pool, 320);
}

TEST(OpsAttention, SlidingWindowAttendsExactlyWKeys) {
  // q = 0 gives every visible key the same score, and v_j = e_j marks which
  // keys contributed: output = 1/W on exactly the W newest keys.
  const int64_t S = 10, D = 10, W = 4;
  AttentionParams p{1, 1, 1, D, 1.0f, 0.0f, W};
  std::vector<float> q(D, 0.0f), k = Random(S * D, 400), v(S * D, 0.0f), out(D);
  for (int64_t j = 0; j < S; ++j) v[j * D + j] = 1.0f;
  const int32_t pos = 8;  // sees keys 5, 6, 7, 8
  ASSERT_TRUE(Attention(p, q.data(), &pos, k.data(), v.data(), S, 0, out.data(), nullptr).ok());
  for (int64_t j = 0; j < S; ++j) {
    const float want = (j >= 5 && j <= 8) ? 0.25f : 0.0f;
    EXPECT_FLOAT_EQ(out[j], want) << "key " << j;
  }
  p.window = 0;  // global: keys 0..8 (9 is in the future)
  ASSERT_TRUE(Attention(p, q.data(), &pos, k.data(), v.data(), S, 0, out.data(), nullptr).ok());
  for (int64_t j = 0; j < S; ++j) EXPECT_FLOAT_EQ(out[j], j <= 8 ? 1.0f / 9 : 0.0f) << j;
}

TEST(OpsAttention, GqaMapsQueryHeadsToKvHeads) {
  // Nq = 4, Nkv = 2: heads 0,1 read kv head 0 (v = 1), heads 2,3 kv head 1 (v = 2).
  const int64_t D = 8, S = 3;
  AttentionParams p{1, 4, 2, D, 1.0f, 0.0f, 0};
  const std::vector<float> q = Random(4 * D, 410), k = Random(S * 2 * D, 411);
  std::vector<float> v(S * 2 * D), out(4 * D);
  for (int64_t j = 0; j < S; ++j) {
    for (int64_t d = 0; d < D; ++d) {
      v[(j * 2 + 0) * D + d] = 1.0f;
      v[(j * 2 + 1) * D + d] = 2.0f;
    }
  }
  const int32_t pos = 2;
  ASSERT_TRUE(Attention(p, q.data(), &pos, k.data(), v.data(), S, 0, out.data(), nullptr).ok());
  for (int64_t h = 0; h < 4; ++h) {
    for (int64_t d = 0; d < D; ++d) EXPECT_FLOAT_EQ(out[h * D + d], h < 2 ? 1.0f : 2.0f);
  }
}

TEST(OpsAttention, RejectsBadArguments) {
  const int64_t D = 4;
  std::vector<float> q(2 * D), k(2 * D), v(2 * D), out(2 * D);
  const int32_t pos = 5;
  AttentionParams p{1, 3, 2, D, 1.0f, 0.0f, 0};  // 3 heads over 2 kv heads
  EXPECT_EQ(Attention(p, q.data(), &pos, k.data(), v.data(), 2, 0, out.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  p = {1, 1, 1, D, 1.0f, 0.0f, 2};
  // Keys at positions 0..1, query at 5 with window 2 sees 4..5: nothing cached.
  EXPECT_EQ(Attention(p, q.data(), &pos, k.data(), v.data(), 2, 0, out.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  p.window = 0;
  EXPECT_TRUE(Attention(p, q.data(), &pos, k.data(), v.data(), 2, 0, out.data(), nullptr).ok());
}

// ---------------------------------------------------------------------------
// Mixture of experts

struct MoeSetup {
  int64_t T, H, E, F, top_k;
};

TEST(OpsMoeRoute, MatchesReference) {
  ThreadPool pool(2);
  for (const MoeSetup& s : {MoeSetup{5, 67, 16, 0, 4}, MoeSetup{40, 128, 128, 0, 8}}) {
    const std::vector<float> x = Random(s.T * s.H, 500, -3.0f, 3.0f);
    const std::vector<float> scale = Random(s.H, 501, 0.5f, 1.5f);
    const std::vector<float> pes = Random(s.E, 502, 0.5f, 2.0f);
    const TestWeight proj = MakeWeight(WeightFormat::kBF16, s.E, s.H, 503);
    std::vector<int32_t> ids(s.T * s.top_k), want_ids(s.T * s.top_k);
    std::vector<float> w(s.T * s.top_k), want_w(s.T * s.top_k);
    ASSERT_TRUE(MoeRoute(x.data(), s.T, s.H, scale.data(), proj.ref, pes.data(), s.top_k, 1e-6f,
                         ids.data(), w.data(), &pool).ok());
    ASSERT_TRUE(ref::MoeRoute(x.data(), s.T, s.H, scale.data(), proj.ref, pes.data(), s.top_k,
                              1e-6f, want_ids.data(), want_w.data(), nullptr).ok());
    // Probabilities of random routers are far apart compared to fp32 error,
    // so the choice must agree exactly. Weights: softmax and renormalisation
    // in fp32 put ≤ ~(E + k + 10)·u relative error on top of the logit
    // error, which exp turns into relative error: logits carry
    // ≤ γ_H·Σ|z w| (+ RmsNorm's (H/2 + 10)·u·|z| per input).
    EXPECT_EQ(ids, want_ids);
    for (int64_t t = 0; t < s.T; ++t) {
      std::vector<float> z(s.H);
      ref::RmsNorm(x.data() + t * s.H, nullptr, z.data(), 1, s.H, 1e-6f, false);
      double max_logit_err = 0, lo = INFINITY, hi = -INFINITY;
      for (int64_t e = 0; e < s.E; ++e) {
        double logit = 0, abs_sum = 0;
        for (int64_t i = 0; i < s.H; ++i) {
          const double term = z[i] * scale[i] / std::sqrt(double(s.H)) * ref::WeightAt(proj.ref, e, i);
          logit += term;
          abs_sum += std::fabs(term);
        }
        lo = std::min(lo, logit);
        hi = std::max(hi, logit);
        max_logit_err = std::max(max_logit_err, (Gamma(s.H) + (s.H / 2.0 + 14) * kU) * abs_sum);
      }
      for (int64_t j = 0; j < s.top_k; ++j) {
        const size_t i = t * s.top_k + j;
        // exp(l − max) also sees the rounding of l − max (u·(hi − lo)) and its own ulp.
        const double rel = 4 * (max_logit_err + kU * (hi - lo) + 2 * kU) + (s.E + s.top_k + 12) * kU;
        ASSERT_NEAR(w[i], want_w[i], rel * std::fabs(want_w[i])) << "t=" << t << " j=" << j;
      }
    }
    // Undoing per_expert_scale leaves a distribution over the k picks.
    for (int64_t t = 0; t < s.T; ++t) {
      double sum = 0;
      for (int64_t j = 0; j < s.top_k; ++j) {
        sum += double(w[t * s.top_k + j]) / pes[ids[t * s.top_k + j]];
        if (j > 0) ASSERT_GE(w[t * s.top_k + j - 1] / pes[ids[t * s.top_k + j - 1]],
                             w[t * s.top_k + j] / pes[ids[t * s.top_k + j]]);
      }
      EXPECT_NEAR(sum, 1.0, (3 * s.top_k + 6) * kU);
    }
  }
}

TEST(OpsMoeRoute, TiesGoToTheLowerExpertId) {
  // Router rows 5 and 2 are identical and give the largest logit; rows 1, 4,
  // 6 tie below them; the rest are zero.
  const int64_t H = 4, E = 8, K = 4;
  std::vector<float> proj(E * H, 0.0f);
  for (int64_t i = 0; i < H; ++i) {
    proj[2 * H + i] = proj[5 * H + i] = 1.0f;
    proj[1 * H + i] = proj[4 * H + i] = proj[6 * H + i] = 0.5f;
  }
  const WeightRef w{proj.data(), WeightFormat::kF32, E, H};
  const std::vector<float> x = {1.0f, 1.0f, 1.0f, 1.0f}, scale(H, 1.0f), pes(E, 1.0f);
  int32_t ids[K];
  float weights[K];
  ASSERT_TRUE(MoeRoute(x.data(), 1, H, scale.data(), w, pes.data(), K, 1e-6f, ids, weights,
                       nullptr).ok());
  EXPECT_EQ(std::vector<int32_t>(ids, ids + K), (std::vector<int32_t>{2, 5, 1, 4}));
  EXPECT_EQ(weights[0], weights[1]);
  EXPECT_EQ(weights[2], weights[3]);
  EXPECT_GT(weights[0], weights[2]);
}

// Error bound of one MoeExperts output, built up through its three stages
// (see the file comment for γ): gate/up rows are dots of length H, GeGLU adds
// GeGluBound and passes dot errors on with |gelu'| ≤ 1.13, the down row is a
// dot of length F, and the k weighted rows are summed.
std::vector<double> MoeExpertsBound(const std::vector<float>& x, int64_t T, int64_t H, int64_t F,
                                    const int32_t* ids, const float* ws, int64_t k,
                                    const WeightRef& gate_up, const WeightRef& down) {
  std::vector<double> bound(T * H, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> sum_abs(H, 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ids[t * k + j];
      std::vector<double> act(F), dact(F);
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0, ag = 0, au = 0;
        for (int64_t i = 0; i < H; ++i) {
          const double xi = x[t * H + i];
          const double wg = ref::WeightAt(gate_up, e * 2 * F + f, i);
          const double wu = ref::WeightAt(gate_up, e * 2 * F + F + f, i);
          g += xi * wg;
          u += xi * wu;
          ag += std::fabs(xi * wg);
          au += std::fabs(xi * wu);
        }
        const double eg = Gamma(H) * ag + kU * std::fabs(g), eu = Gamma(H) * au + kU * std::fabs(u);
        const double gelu = 0.5 * g * (1 + std::tanh(0.7978845608 * (g + 0.044715 * g * g * g)));
        act[f] = gelu * u;
        dact[f] = 1.13 * eg * (std::fabs(u) + eu) + std::fabs(gelu) * eu + GeGluBound(g, u) +
                  kU * std::fabs(act[f]);
      }
      for (int64_t h = 0; h < H; ++h) {
        double y = 0, ay = 0, prop = 0;
        for (int64_t f = 0; f < F; ++f) {
          const double wd = ref::WeightAt(down, e * H + h, f);
          y += act[f] * wd;
          ay += std::fabs(act[f] * wd);
          prop += dact[f] * std::fabs(wd);
        }
        const double ey = Gamma(F) * ay + prop + kU * std::fabs(y);
        bound[t * H + h] += std::fabs(ws[t * k + j]) * ey;
        sum_abs[h] += std::fabs(ws[t * k + j] * y);
      }
    }
    for (int64_t h = 0; h < H; ++h) bound[t * H + h] += Gamma(2 * k + 2) * sum_abs[h] + 1e-30;
  }
  return bound;
}

void CheckMoeExperts() {
  ThreadPool pool(2);
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kF32}) {
    for (const MoeSetup& s : {MoeSetup{1, 32, 8, 24, 2}, MoeSetup{7, 67, 6, 17, 3},
                              MoeSetup{40, 64, 4, 32, 2}}) {
      const std::vector<float> x = Random(s.T * s.H, 600, -2.0f, 2.0f);
      const TestWeight gu = MakeWeight(f, s.E * 2 * s.F, s.H, 601, -0.3f, 0.3f);
      const TestWeight down = MakeWeight(f, s.E * s.H, s.F, 602, -0.3f, 0.3f);
      // Random distinct experts per token with random weights.
      std::mt19937 rng(603);
      std::vector<int32_t> ids(s.T * s.top_k);
      for (int64_t t = 0; t < s.T; ++t) {
        std::vector<int32_t> perm(s.E);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        std::copy(perm.begin(), perm.begin() + s.top_k, ids.begin() + t * s.top_k);
      }
      const std::vector<float> ws = Random(s.T * s.top_k, 604, 0.1f, 1.0f);
      std::vector<float> fast(s.T * s.H, NAN), want(s.T * s.H, NAN);
      std::vector<float> workspace(MoeExpertsWorkspaceFloats(s.T, s.H, s.F, s.top_k));
      ASSERT_TRUE(MoeExperts(x.data(), s.T, ids.data(), ws.data(), s.top_k, gu.ref, down.ref,
                             s.E, fast.data(), workspace.data(), &pool).ok());
      ASSERT_TRUE(ref::MoeExperts(x.data(), s.T, ids.data(), ws.data(), s.top_k, gu.ref,
                                  down.ref, s.E, want.data(), nullptr, nullptr).ok());
      const std::vector<double> bound = MoeExpertsBound(x, s.T, s.H, s.F, ids.data(), ws.data(),
                                                        s.top_k, gu.ref, down.ref);
      for (size_t i = 0; i < fast.size(); ++i) {
        ASSERT_NEAR(fast[i], want[i], bound[i]) << Name(f) << " T=" << s.T << " i=" << i;
      }
    }
  }
}

TEST(OpsMoeExperts, MatchesReference) { CheckMoeExperts(); }

TEST(OpsMoeExperts, RepeatedExpertAndOneHotExperts) {
  // Expert e computes gelu(gate·x)·(up·x) with gate/up rows picking x[e] and
  // down = identity-like: easy to predict. Token 0 takes expert 1 twice
  // (weights add), token 1 takes experts 0 and 1.
  const int64_t H = 4, F = 1, E = 2, T = 2, K = 2;
  std::vector<float> gu(E * 2 * F * H, 0.0f), down(E * H * F, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    gu[(e * 2 + 0) * H + e] = 1.0f;  // gate = x[e]
    gu[(e * 2 + 1) * H + e] = 1.0f;  // up = x[e]
    down[(e * H + e) * F] = 1.0f;    // writes into output channel e
  }
  const WeightRef wgu{gu.data(), WeightFormat::kF32, E * 2 * F, H};
  const WeightRef wdown{down.data(), WeightFormat::kF32, E * H, F};
  const std::vector<float> x = {3.0f, 2.0f, 0.0f, 0.0f, 4.0f, 5.0f, 0.0f, 0.0f};
  const int32_t ids[T * K] = {1, 1, 0, 1};
  const float ws[T * K] = {0.25f, 0.5f, 1.0f, 2.0f};
  std::vector<float> out(T * H), workspace(MoeExpertsWorkspaceFloats(T, H, F, K));
  ASSERT_TRUE(MoeExperts(x.data(), T, ids, ws, K, wgu, wdown, E, out.data(), workspace.data(),
                         nullptr).ok());
  float act[2];
  const float g[2] = {2.0f, 2.0f};  // gate = up = x[1] for token 0, both slots
  const float gate_up0[2] = {g[0], g[1]};
  GeGlu(gate_up0, 1, 1, act);
  EXPECT_FLOAT_EQ(out[0 * H + 1], act[0] * 0.25f + act[0] * 0.5f);
  EXPECT_EQ(out[0 * H + 0], 0.0f);
  const float gate_up1[4] = {4.0f, 4.0f, 5.0f, 5.0f};
  GeGlu(gate_up1, 1, 1, act);
  GeGlu(gate_up1 + 2, 1, 1, act + 1);
  EXPECT_FLOAT_EQ(out[1 * H + 0], act[0] * 1.0f);
  EXPECT_FLOAT_EQ(out[1 * H + 1], act[1] * 2.0f);
  EXPECT_EQ(out[1 * H + 2], 0.0f);
}

TEST(OpsMoeExperts, RejectsBadArguments) {
  const int64_t H = 4, F = 2, E = 2;
  std::vector<float> gu(E * 2 * F * H), down(E * H * F), x(H), out(H);
  std::vector<float> workspace(MoeExpertsWorkspaceFloats(1, H, F, 1));
  const WeightRef wgu{gu.data(), WeightFormat::kF32, E * 2 * F, H};
  const WeightRef wdown{down.data(), WeightFormat::kF32, E * H, F};
  const int32_t bad_id = 2;
  const float w = 1.0f;
  EXPECT_EQ(MoeExperts(x.data(), 1, &bad_id, &w, 1, wgu, wdown, E, out.data(), workspace.data(),
                       nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  const WeightRef wrong_down{down.data(), WeightFormat::kF32, E * H, F + 1};
  const int32_t id = 1;
  EXPECT_EQ(MoeExperts(x.data(), 1, &id, &w, 1, wgu, wrong_down, E, out.data(), workspace.data(),
                       nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Every SIMD target compiled in (AVX-512, AVX2, portable) must be right, not
// just the one this machine picks: force each in turn and rerun the checks.

TEST(OpsSimdTargets, EveryCompiledTargetMatchesReference) {
  const int64_t supported = hwy::SupportedTargets();
  int tested = 0;
  for (int64_t target : {int64_t(HWY_AVX3), int64_t(HWY_AVX2), int64_t(HWY_EMU128),
                         int64_t(HWY_SCALAR)}) {
    if ((supported & target) == 0) continue;
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    std::printf("checking SIMD target %s\n", hwy::TargetName(target));
    ++tested;
    CheckMatMul({3, 67, 300}, {5, 33, 140}, {1, 5, 40});
    CheckEmbed();
    CheckRmsNorm();
    CheckGeGlu();
    CheckSoftcap();
    CheckRope();
    CheckAttentionAgainstReference({5, 4, 2, 67, 40, 4, 0.125f, 0.0f}, nullptr, 700);
    CheckAttentionAgainstReference({1, 2, 1, 32, 700, 0, 0.125f, 50.0f}, nullptr, 710);
    CheckMoeExperts();
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(tested, 2) << "expected the native target plus the portable fallback";
}

}  // namespace
}  // namespace facet::cpu
