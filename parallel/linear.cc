#include "parallel/linear.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"

namespace facet::parallel {
namespace {

// Whole matrices stay zero-copy views (the single-rank path copies nothing).
absl::StatusOr<WeightRef> Cols(ShardReader& rd, const std::string& name, int64_t rows,
                               int64_t cols, Range c) {
  if (c.begin == 0 && c.size == cols) return rd.ReadRows(name, rows, cols, Range{0, rows});
  return rd.ReadCols(name, rows, cols, c);
}

}  // namespace

absl::StatusOr<WeightRef> LoadColumnParallel(ShardReader& rd, const std::string& name,
                                             int64_t out, int64_t in, int tp, int rank) {
  ASSIGN_OR_RETURN(Range r, EvenShard(out, tp, rank, name));
  return rd.ReadRows(name, out, in, r);
}

absl::StatusOr<WeightRef> LoadRowParallel(ShardReader& rd, const std::string& name, int64_t out,
                                          int64_t in, int tp, int rank) {
  ASSIGN_OR_RETURN(Range c, EvenShard(in, tp, rank, name));
  return Cols(rd, name, out, in, c);
}

absl::StatusOr<AttentionWeights> LoadAttentionParallel(ShardReader& rd, const AttentionNames& n,
                                                       int nq, int nkv, int D, int64_t H,
                                                       bool has_kv, bool k_eq_v, int tp,
                                                       int rank) {
  AttentionWeights a;
  ASSIGN_OR_RETURN(a.heads, ShardHeads(nq, nkv, tp, rank));
  const Range q{a.heads.q_heads.begin * D, a.heads.q_heads.size * D};
  const Range kv{a.heads.kv_heads.begin * D, a.heads.kv_heads.size * D};
  ASSIGN_OR_RETURN(a.q, rd.ReadRows(n.q, int64_t(nq) * D, H, q));
  ASSIGN_OR_RETURN(a.o, Cols(rd, n.o, H, int64_t(nq) * D, q));
  if (has_kv) {
    ASSIGN_OR_RETURN(a.k, rd.ReadRows(n.k, int64_t(nkv) * D, H, kv));
    if (!k_eq_v) {
      ASSIGN_OR_RETURN(a.v, rd.ReadRows(n.v, int64_t(nkv) * D, H, kv));
    }
  }
  return a;
}

absl::StatusOr<VocabShard> LoadVocabParallel(ShardReader& rd, const std::string& name,
                                             int64_t vocab, int64_t hidden, int tp, int rank) {
  VocabShard s;
  ASSIGN_OR_RETURN(s.vocab, EvenShard(vocab, tp, rank, name + " (vocabulary)"));
  ASSIGN_OR_RETURN(s.table, rd.ReadRows(name, vocab, hidden, s.vocab));
  return s;
}

absl::StatusOr<ExpertShard> LoadExpertParallel(ShardReader& rd, const std::string& name,
                                               int64_t num_experts, int64_t rows_per_expert,
                                               int64_t cols, int ep, int rank) {
  ExpertShard s;
  ASSIGN_OR_RETURN(s.experts, EvenShard(num_experts, ep, rank, name + " (experts)"));
  ASSIGN_OR_RETURN(s.w, rd.ReadRows(name, num_experts * rows_per_expert, cols,
                                    Range{s.experts.begin * rows_per_expert,
                                          s.experts.size * rows_per_expert}));
  return s;
}

absl::Status RowParallelReduce(Communicator* comm, float* x, int64_t n) {
  if (comm == nullptr || comm->size() == 1) return absl::OkStatus();
  return comm->AllReduce(x, x, size_t(n), DType::kF32, ReduceOp::kSum);
}

absl::Status VocabParallelEmbed(Communicator* comm, const VocabShard& shard, const int32_t* ids,
                                int64_t n, float scale, float* out) {
  const int64_t H = shard.table.cols;
  if (comm == nullptr || comm->size() == 1) {
    cpu::Embed(shard.table, ids, n, scale, out);
    return absl::OkStatus();
  }
  for (int64_t t = 0; t < n; ++t) {
    if (shard.vocab.Contains(ids[t])) {
      const int32_t local = int32_t(ids[t] - shard.vocab.begin);
      cpu::Embed(shard.table, &local, 1, scale, out + t * H);
    } else {
      std::memset(out + t * H, 0, sizeof(float) * H);
    }
  }
  // Exactly one rank holds each row, so the sum adds zeros: bit-exact.
  return comm->AllReduce(out, out, size_t(n * H), DType::kF32, ReduceOp::kSum);
}

absl::Status GatherLogits(Communicator* comm, const float* local, int64_t rows, int64_t Vl,
                          float* full) {
  if (comm == nullptr || comm->size() == 1) {
    if (local != full) std::memcpy(full, local, sizeof(float) * rows * Vl);
    return absl::OkStatus();
  }
  const int n = comm->size();
  std::vector<float> all(size_t(n) * rows * Vl);  // [tp, rows, V/tp]
  RETURN_IF_ERROR(comm->AllGather(local, all.data(), size_t(rows * Vl), DType::kF32));
  const int64_t V = Vl * n;
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(full + i * V + r * Vl, all.data() + (size_t(r) * rows + i) * Vl,
                  sizeof(float) * Vl);
  return absl::OkStatus();
}

}  // namespace facet::parallel
