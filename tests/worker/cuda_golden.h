// The golden artifacts (tests/data/golden/*, written by HF transformers in
// fp32, scripts/golden/make_golden.py) as the GPU tests read them, and the
// bf16 tolerance they are held to.
//
// Tolerance. The GPU path rounds every weight and every activation between
// kernels to bf16 (unit roundoff u = 2^-9) and accumulates in fp32. Each
// rounding perturbs its tensor by a relative u·O(1) with a random sign, and
// the normalisations keep every stage O(1), so after the ~10 rounding points
// per layer × at most 7 layers of the golden models the residual stream
// carries a relative error of about sqrt(70)·u ≈ 1.6%; a logit, a dot
// product of that stream with a bf16 LM-head row, inherits about the same
// fraction of the row's logit scale. We allow 4% of max(1, max|logit|) per
// row: ~2.5x the estimate, and still an order of magnitude below what a wrong
// norm, RoPE pair, mask bound or layer order produces (errors of the size of
// the logits themselves).
//
// Greedy tokens are compared while the reference's top-2 margin exceeds twice
// that tolerance; past the first closer call the two may legitimately part.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/safetensors.h"

namespace facet::golden {

inline constexpr float kBf16Tol = 0.04f;

// The build's source tree, or the working directory's when the binary was
// carried to another machine (scripts/gpu-check-engine.sh runs from the
// repository root there).
inline std::string Dir(const std::string& name) {
  const std::string built = std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
  if (std::filesystem::exists(built)) return built;
  return "tests/data/golden/" + name;
}

struct Prompt {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;         // greedy[0] from the prefill, then one per decode step
  std::vector<float> prefill_logits;   // [ids, V]
  std::vector<float> decode_logits;    // [greedy - 1, V]: step k feeds greedy[k]
};

inline std::vector<float> Floats(const WeightCheckpoint& ckpt, const std::string& name) {
  auto t = ckpt.Get(name);
  if (!t.ok() || t->dtype != DType::kF32) return {};
  const float* p = t->as<float>();
  return std::vector<float>(p, p + t->numel());
}

// Empty when the files are missing or malformed (the caller asserts).
inline std::vector<Prompt> Read(const std::string& name) {
  std::vector<Prompt> out;
  std::ifstream in(Dir(name) + "/golden.json");
  if (!in.good()) return out;
  nlohmann::json meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  auto ckpt = WeightCheckpoint::Open(Dir(name) + "/golden.safetensors");
  if (meta.is_discarded() || !ckpt.ok()) return out;
  int p = 0;
  for (const auto& prompt : meta["prompts"]) {
    Prompt g;
    g.ids = prompt["input_ids"].get<std::vector<int32_t>>();
    g.greedy = prompt["greedy_ids"].get<std::vector<int32_t>>();
    g.prefill_logits = Floats(*ckpt, "prompt" + std::to_string(p) + ".prefill_logits");
    g.decode_logits = Floats(*ckpt, "prompt" + std::to_string(p) + ".decode_logits");
    out.push_back(std::move(g));
    ++p;
  }
  return out;
}

// max|a - b| / max(1, max|b|) over one row of n logits.
inline float RowErr(const float* a, const float* b, int64_t n) {
  float diff = 0, scale = 1;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

inline int Argmax(const float* x, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = int(i);
  }
  return best;
}

// True when the reference row's winner leads by more than 2·kBf16Tol of its scale.
inline bool ClearWinner(const float* ref, int64_t n) {
  float top = -INFINITY, second = -INFINITY, scale = 1;
  for (int64_t i = 0; i < n; ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    if (ref[i] > top) {
      second = top;
      top = ref[i];
    } else if (ref[i] > second) {
      second = ref[i];
    }
  }
  return top - second > 2 * kBf16Tol * scale;
}

// How many leading greedy tokens of `g` have clear winners in the reference.
inline size_t ClearGreedyPrefix(const Prompt& g, int64_t V) {
  size_t k = 0;
  for (; k < g.greedy.size(); ++k) {
    const float* row = k == 0 ? &g.prefill_logits[(g.ids.size() - 1) * V]
                              : &g.decode_logits[(k - 1) * V];
    if (!ClearWinner(row, V)) break;
  }
  return k;
}

}  // namespace facet::golden
