// The sampler's counter-based Gumbel noise, as host and device code: a port
// of worker/sampler.cc (Mix64, NoisePrefix, NoiseBits, NoiseFromBits) that
// must stay bit-identical to it, so the device sampler picks the same token
// as the CPU sampler for the same (seed, step). tests/kernels/cuda/
// twins_test.cc checks the port against facet::GumbelNoise.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FACET_HD __host__ __device__ __forceinline__
#else
#define FACET_HD inline
#endif

namespace facet::sample_hash {

// splitmix64 finaliser.
FACET_HD uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

FACET_HD uint64_t NoisePrefix(uint64_t seed, int64_t step) {
  return Mix64(Mix64(seed + 0x9E3779B97F4A7C15ull) + uint64_t(step) * 0xD1B54A32D192ED03ull);
}

FACET_HD uint64_t NoiseBits(uint64_t prefix, int32_t id) {
  return Mix64(prefix + uint64_t(uint32_t(id)) * 0x8CB92BA72F3D8DD7ull) >> 12;
}

// -log(-log(u)) in double, u = (k + 1/2) 2^-52, rounded once to float.
FACET_HD float NoiseFromBits(uint64_t k) {
  const double u = (double(k) + 0.5) * 0x1p-52;
  return float(-log(-log(u)));
}

FACET_HD float Noise(uint64_t seed, int64_t step, int32_t id) {
  return NoiseFromBits(NoiseBits(NoisePrefix(seed, step), id));
}

}  // namespace facet::sample_hash
