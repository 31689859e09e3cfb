// Paged KV cache bookkeeping (DESIGN.md §4): which physical blocks of which
// pool hold which positions of which sequence. No tensors live here; the
// engine turns block tables into addresses.
//
// One pool per layer kind. A global pool keeps every position of a sequence.
// A sliding pool (window w) only needs the last w positions behind each
// query: a query at position q reads keys [q - (w - 1), q]. So when a step
// computes positions [begin, end), the sequence needs keys from
// begin - (w - 1) on, and every block wholly below that is handed back to the
// pool before new blocks are taken. A sliding sequence therefore never holds
// more than ceil((w - 1 + chunk) / block_size) + 1 blocks, however long it runs.
//
// Free lists are LIFO stacks, so the same calls always give the same block ids.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace facet {

using SeqId = int64_t;

struct PoolSpec {
  std::string name;    // "global" / "sliding", for messages and stats
  int64_t num_blocks;  // physical blocks in the pool
  int64_t window;      // 0: keeps every position; > 0: only the last `window` positions
};

class KvBlockManager {
 public:
  KvBlockManager(int64_t block_size, std::vector<PoolSpec> pools);

  int64_t block_size() const { return block_size_; }
  int num_pools() const { return static_cast<int>(pools_.size()); }
  const PoolSpec& pool(int p) const { return pools_[p].spec; }

  // Blocks pool p must newly take so that `seq` holds KV for positions
  // [0, end) (a sliding pool: [begin - (window - 1), end)) while computing
  // [begin, end). Blocks the step releases first are not subtracted.
  // `begin` must not go backwards for a sequence (Free it to restart).
  int64_t BlocksNeeded(SeqId seq, int p, int64_t begin, int64_t end) const;
  // True when every pool has enough free blocks, counting the sliding blocks
  // this same step would release.
  bool CanAllocate(SeqId seq, int64_t begin, int64_t end) const;
  // Releases out-of-window sliding blocks, then allocates. RESOURCE_EXHAUSTED,
  // with nothing changed, when a pool lacks blocks.
  absl::Status Allocate(SeqId seq, int64_t begin, int64_t end);
  // Returns every block of `seq` in every pool; unknown ids are ignored.
  void Free(SeqId seq);

  // Logical block i holds positions [i * block_size, (i + 1) * block_size);
  // an entry is a physical block id in [0, num_blocks), or -1 once released.
  const std::vector<int32_t>& Table(SeqId seq, int p) const;
  // Physical (block, offset) of `pos`, which must be allocated.
  std::pair<int32_t, int32_t> Slot(SeqId seq, int p, int64_t pos) const;

  int64_t free_blocks(int p) const { return static_cast<int64_t>(pools_[p].free.size()); }
  int64_t total_blocks(int p) const { return pools_[p].spec.num_blocks; }
  int64_t used_blocks(SeqId seq, int p) const;
  bool Has(SeqId seq) const { return seqs_.count(seq) != 0; }

  // The most blocks pool p ever holds at once for one sequence whose KV grows
  // to `num_positions` positions, one token per step: what the pool must have
  // for that sequence to run alone. Larger chunks only help when they fit.
  int64_t PeakBlocks(int p, int64_t num_positions) const;

 private:
  struct Pool {
    PoolSpec spec;
    std::vector<int32_t> free;  // stack of physical block ids
  };
  struct SeqTables {
    std::vector<std::vector<int32_t>> table;  // [pool][logical block]
    std::vector<int64_t> released;            // [pool] leading logical blocks set to -1
    std::vector<int64_t> used;                // [pool] entries != -1
  };

  // First logical block pool p needs while computing from `begin`.
  int64_t FirstNeeded(int p, int64_t begin) const;
  // Blocks of `seq` in pool p that a step starting at `begin` hands back.
  int64_t Releasable(const SeqTables* s, int p, int64_t begin) const;
  int64_t Needed(const SeqTables* s, int p, int64_t begin, int64_t end) const;
  const SeqTables* Find(SeqId seq) const;

  int64_t block_size_;
  std::vector<Pool> pools_;
  std::unordered_map<SeqId, SeqTables> seqs_;
};

}  // namespace facet
