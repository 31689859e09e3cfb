#include "parallel/shard.h"

#include "absl/strings/str_cat.h"

namespace facet::parallel {

absl::StatusOr<Range> EvenShard(int64_t n, int parts, int index, absl::string_view what) {
  if (parts < 1 || index < 0 || index >= parts) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": part ", index, " of ", parts));
  }
  if (n % parts != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", n, " does not split evenly over ", parts, " ranks"));
  }
  const int64_t s = n / parts;
  return Range{s * index, s};
}

absl::StatusOr<HeadShard> ShardHeads(int nq, int nkv, int tp, int rank) {
  if (nq < 1 || nkv < 1 || nq % nkv != 0 || tp < 1 || rank < 0 || rank >= tp) {
    return absl::InvalidArgumentError(absl::StrCat("attention shard: ", nq, " query heads, ", nkv,
                                                   " KV heads, rank ", rank, " of ", tp));
  }
  if (nq % tp != 0 && tp % nq != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention shard: tp=", tp, " neither divides nor is a multiple of ", nq, " query heads"));
  }
  const int group = nq / nkv;                // query heads per KV head
  const int q_rep = tp > nq ? tp / nq : 1;   // ranks sharing one query head
  const int nq_local = tp > nq ? 1 : nq / tp;
  HeadShard s;
  s.q_heads = Range{int64_t(rank / q_rep) * nq_local, nq_local};
  s.reduces_output = rank % q_rep == 0;
  if (nq_local % group != 0 && group % nq_local != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention shard: ", nq_local,
                                                   " local query heads cut a group of ", group));
  }
  s.kv_heads = Range{s.q_heads.begin / group, nq_local >= group ? nq_local / group : 1};
  return s;
}

}  // namespace facet::parallel
