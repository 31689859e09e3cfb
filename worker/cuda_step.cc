#include "worker/cuda_step.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet {

void MapCudaPools(const KvBlockManager& blocks, int pool_of[kNumCudaPools]) {
  pool_of[kGlobalPool] = pool_of[kSlidingPool] = -1;
  for (int p = 0; p < blocks.num_pools(); ++p) {
    pool_of[blocks.pool(p).window > 0 ? kSlidingPool : kGlobalPool] = p;
  }
}

absl::Status BuildCudaStep(const StepBatch& b, const StepPlan& plan,
                           const KvBlockManager& blocks, int64_t max_blocks, CudaStep* out) {
  const int64_t T = int64_t(b.tokens.size()), S = int64_t(b.segments.size());
  if (S != int64_t(plan.seqs.size()) || int64_t(b.positions.size()) != T) {
    return absl::InternalError(absl::StrCat("cuda step: the batch has ", S, " sequences and ",
                                            b.positions.size(), " positions for ", T,
                                            " tokens; the mirror scheduled ", plan.seqs.size(),
                                            " sequences"));
  }
  int pool_of[kNumCudaPools];
  MapCudaPools(blocks, pool_of);
  const int64_t M = max_blocks, bs = blocks.block_size();
  CudaStep& s = *out;
  s.tokens = b.tokens;
  s.positions = b.positions;
  s.q_start.assign(1, 0);
  s.kv_len.clear();
  s.logit_rows.assign(b.logit_rows.begin(), b.logit_rows.end());
  for (int p = 0; p < kNumCudaPools; ++p) {
    s.slots[p].clear();
    s.tables[p].clear();
    if (pool_of[p] >= 0) {
      s.slots[p].assign(T, -1);
      s.tables[p].assign(S * M, -1);
    }
  }
  for (int64_t i = 0; i < S; ++i) {
    const SeqSegment& seg = b.segments[i];
    const ScheduledSeq& want = plan.seqs[i];
    if (seg.seq != want.id || seg.pos0 != want.begin || seg.num_tokens != want.num_tokens ||
        seg.token_begin != s.q_start.back() || seg.token_begin + seg.num_tokens > T) {
      return absl::InternalError(absl::StrCat(
          "cuda step: segment ", i, " (seq ", seg.seq, ", positions ", seg.pos0, "+",
          seg.num_tokens, ") is not the mirror's (seq ", want.id, ", ", want.begin, "+",
          want.num_tokens, ")"));
    }
    s.q_start.push_back(int32_t(seg.token_begin + seg.num_tokens));
    s.kv_len.push_back(int32_t(seg.pos0 + seg.num_tokens));
    for (int p = 0; p < kNumCudaPools; ++p) {
      const int ep = pool_of[p];
      if (ep < 0) continue;
      const std::vector<int32_t>& table = blocks.Table(seg.seq, ep);
      const int64_t used = (seg.pos0 + seg.num_tokens + bs - 1) / bs;
      if (used > M || int64_t(table.size()) < used) {
        return absl::InternalError(absl::StrCat("cuda step: seq ", seg.seq, " needs ", used,
                                                " blocks of pool ", ep, "; its table has ",
                                                table.size(), ", the model's width is ", M));
      }
      std::copy(table.begin(), table.begin() + std::min<int64_t>(int64_t(table.size()), M),
                s.tables[p].begin() + i * M);
      for (int64_t t = 0; t < seg.num_tokens; ++t) {
        auto [block, off] = blocks.Slot(seg.seq, ep, seg.pos0 + t);
        s.slots[p][seg.token_begin + t] = int64_t(block) * bs + off;
      }
    }
  }
  if (s.q_start.back() != T) {
    return absl::InternalError(absl::StrCat("cuda step: segments cover ", s.q_start.back(),
                                            " of ", T, " tokens"));
  }
  return absl::OkStatus();
}

}  // namespace facet
