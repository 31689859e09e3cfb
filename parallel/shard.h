// Which slice of each tensor a rank owns: the only place shard offsets are
// computed (STYLE.md §13). Pure arithmetic; the loaders in linear.h apply it.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace facet::parallel {

struct Range {
  int64_t begin = 0;
  int64_t size = 0;
  int64_t end() const { return begin + size; }
  bool Contains(int64_t i) const { return i >= begin && i < end(); }
};

// Part `index` of `n` split into `parts` equal pieces; InvalidArgument (naming
// `what`) when n does not divide.
absl::StatusOr<Range> EvenShard(int64_t n, int parts, int index, absl::string_view what);

// One rank's attention heads under tensor parallelism (vLLM's rule, spec
// distributed.md §2.2): KV heads are split when there are at least tp of
// them, else each is replicated on tp / num_kv_heads ranks. Query heads
// likewise; when tp exceeds the query heads too (tiny test models), the
// ranks that share a query head compute it redundantly and only the first
// (`reduces_output`) adds its o_proj partial sum, so the all-reduce still
// counts every head once.
struct HeadShard {
  Range q_heads;
  Range kv_heads;
  bool reduces_output = true;
};
absl::StatusOr<HeadShard> ShardHeads(int num_heads, int num_kv_heads, int tp, int rank);

}  // namespace facet::parallel
