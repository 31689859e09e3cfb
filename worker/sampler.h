// Token sampling: repetition penalty, temperature, top-k, top-p and min-p,
// then a draw by Gumbel-max.
//
// The randomness is a pure function of (seed, step, token id), not a stream
// consumed in order: token i at step s gets the key
//   logit_i / temperature + GumbelNoise(seed, s, i)
// and the sample is the kept token with the largest key (ties -> lowest id).
// argmax of logit/T + Gumbel noise is an exact draw from softmax(logit/T), and
// because each token's noise depends only on its own id, a vocabulary split
// across ranks yields the same token: each rank takes its local best key and
// the merge keeps the largest (lowest id on a tie). The same seed and step
// reproduce the same token on any machine that computes the same float keys.
// (A sharded sampler still needs global values for the filters: the k-th
// largest logit, the top-p cut and the maximum for min-p.)
//
// Filters run in HF transformers' order and with its semantics: repetition
// penalty, temperature, top-k (ties with the k-th value kept), top-p (the
// token that crosses top_p kept), min-p. temperature 0 is greedy after the
// repetition penalty, with the other filters ignored, as do_sample=False.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "parallel/communicator.h"
#include "parallel/shard.h"

namespace facet {

struct SamplingParams {
  float temperature = 0;  // 0 => greedy (argmax, ties -> lowest id)
  int32_t top_k = 0;      // 0 => off
  float top_p = 1.0f;     // 1 => off
  float min_p = 0.0f;     // 0 => off; keep tokens with p >= min_p * p_max
  // HF semantics: for ids in the history, logit > 0 ? logit / penalty : logit * penalty.
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;
  int32_t max_tokens = 256;
};

// INVALID_ARGUMENT naming the field when a value is out of range:
// temperature < 0 or not finite, top_p outside (0, 1], min_p outside [0, 1),
// top_k < 0, repetition_penalty <= 0 or not finite, max_tokens < 1, a stop id
// outside [0, vocab_size).
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

// Gumbel(0, 1) noise for one token, a pure function of its arguments: a
// counter-based hash of (seed, step, id) gives u in (0, 1), and the noise is
// -log(-log(u)). Bounded by about 36.7 (u is at most 1 - 2^-53).
float GumbelNoise(uint64_t seed, int64_t step, int32_t id);

namespace internal {
struct SampleEntry {
  float value;   // logit after the repetition penalty
  int32_t id;
  float weight;  // exp((value - max) / T) where top-p needs it, else unset
};
}  // namespace internal

class Sampler {
 public:
  // `params` must have passed ValidateSamplingParams (the constructor checks
  // the vocabulary-independent fields and aborts on a violation).
  explicit Sampler(SamplingParams params);

  // Picks the next token from logits[vocab]. `history` = prompt + generated
  // ids, for the repetition penalty (ids outside [0, vocab) are ignored);
  // `step` = index of the token being generated (0 for the first). `logits` is
  // not modified. A NaN logit is picked only when all are NaN.
  int32_t Sample(const float* logits, int64_t vocab, std::span<const int32_t> history,
                 int64_t step);

  // The same draw when the vocabulary is split across `comm` (tensor-
  // parallel LM head) without gathering the logits: `local` holds logits for
  // ids [vocab.begin, vocab.end) of `full_vocab`. Collective: every rank
  // calls it with its own slice and all return the same token, the one
  // Sample() returns on the gathered row (top-p masses are summed in a
  // different order, so a token whose cumulative mass lands within ~1e-15
  // of the cut could differ). Traffic per call: argmax, one (value, id) pair
  // per rank; temperature/min-p, one key per rank; top-k, each rank's k
  // candidates; top-p, a 256-bucket histogram plus the candidates above the
  // cut (the whole slice only when the distribution is that flat).
  absl::StatusOr<int32_t> SampleSharded(parallel::Communicator& comm, const float* local,
                                        parallel::Range vocab, int64_t full_vocab,
                                        std::span<const int32_t> history, int64_t step);

  bool IsStop(int32_t id) const;

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::vector<float> scratch_;       // [vocab] logits after the repetition penalty, when it applies
  std::vector<internal::SampleEntry> pool_;  // tokens kept by top-k / top-p, in no particular order
};

}  // namespace facet
