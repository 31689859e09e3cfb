// Tensor- and expert-parallel weight loaders and the collectives that go
// with them (STYLE.md §13). A loader reads only its rank's slice through a
// ShardReader, which models/ implements over safetensors (zero-copy rows,
// copied columns) and GGUF (whole quant blocks). The model passes the rank;
// the offsets come from shard.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/weight.h"
#include "parallel/communicator.h"
#include "parallel/shard.h"

namespace facet::parallel {

class ShardReader {
 public:
  virtual ~ShardReader() = default;
  // Rows r of the 2-D matrix `name` ([rows, cols] in the checkpoint; a 3-D
  // expert tensor counts as [E·R, C]). Zero-copy where the format allows.
  virtual absl::StatusOr<WeightRef> ReadRows(const std::string& name, int64_t rows, int64_t cols,
                                             Range r) = 0;
  // Columns c of every row, copied into storage the reader keeps alive.
  virtual absl::StatusOr<WeightRef> ReadCols(const std::string& name, int64_t rows, int64_t cols,
                                             Range c) = 0;
};

// Column-parallel linear: the output features (rows) are split; no
// communication. `out` must divide by tp.
absl::StatusOr<WeightRef> LoadColumnParallel(ShardReader& rd, const std::string& name,
                                             int64_t out, int64_t in, int tp, int rank);
// Row-parallel linear: the input features (columns) are split; the partial
// outputs are summed with RowParallelReduce.
absl::StatusOr<WeightRef> LoadRowParallel(ShardReader& rd, const std::string& name, int64_t out,
                                          int64_t in, int tp, int rank);

// QKV-parallel: the rows of q/k/v for this rank's heads, and o_proj's
// columns for its query heads.
struct AttentionWeights {
  WeightRef q, k, v, o;  // q [nq·D, H], k/v [nkv·D, H] (v empty when k_eq_v), o [H, nq·D]
  HeadShard heads;
};
// The checkpoint's names for the four projections (HF: "...q_proj.weight",
// GGUF: "...attn_q.weight").
struct AttentionNames {
  std::string q, k, v, o;
};
absl::StatusOr<AttentionWeights> LoadAttentionParallel(ShardReader& rd, const AttentionNames& names,
                                                       int num_heads, int num_kv_heads,
                                                       int head_dim, int64_t hidden, bool has_kv,
                                                       bool k_eq_v, int tp, int rank);

// Vocabulary-parallel embedding / LM head: rows [vocab.begin, vocab.end).
struct VocabShard {
  WeightRef table;  // [V/tp, H]
  Range vocab;
};
absl::StatusOr<VocabShard> LoadVocabParallel(ShardReader& rd, const std::string& name,
                                             int64_t vocab, int64_t hidden, int tp, int rank);

// Expert-parallel: whole experts [experts.begin, experts.end) of a 3-D
// tensor [E, R, C] (rows e·R ... of the flattened view).
struct ExpertShard {
  WeightRef w;  // [E/ep · R, C]
  Range experts;
};
absl::StatusOr<ExpertShard> LoadExpertParallel(ShardReader& rd, const std::string& name,
                                               int64_t num_experts, int64_t rows_per_expert,
                                               int64_t cols, int ep, int rank);

// x [n] f32 summed over the group in place; nothing when comm is null or a
// world of one (the single-rank path makes no call at all).
absl::Status RowParallelReduce(Communicator* comm, float* x, int64_t n);

// out [n, H] = scale · table[ids] for ids in this rank's vocabulary slice,
// zero for the rest, then summed over the group: every rank ends with the
// full embedding.
absl::Status VocabParallelEmbed(Communicator* comm, const VocabShard& shard, const int32_t* ids,
                                int64_t n, float scale, float* out);

// full [rows, V] from every rank's local [rows, V/tp] (rank order = vocab
// order). For tests, logprobs and the compatibility path; the engine samples
// with Sampler::SampleSharded (worker/sampler.h) and never gathers.
absl::Status GatherLogits(Communicator* comm, const float* local, int64_t rows, int64_t local_vocab,
                          float* full);

}  // namespace facet::parallel
