// Randomly initialised weights of any config's exact shape, held in memory.
// For benchmarks of real model shapes without the real checkpoint (`facet
// bench --config ... `) and for tests.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/weight.h"
#include "models/config.h"
#include "models/weights.h"

namespace facet {

// Matrices in `format` (f32, f16 or bf16) with values ~ U(-a, a), a chosen so
// activations stay O(1) (a = sqrt(3 / fan_in)); norms near 1 (x·w form) or 0
// ("1+w" form, already folded). Deterministic in `seed`.
absl::StatusOr<ModelWeights> MakeRandomWeights(const ModelConfig& config, WeightFormat format,
                                               uint64_t seed, ThreadPool* pool);

}  // namespace facet
