#include "worker/kv_blocks.h"

#include <algorithm>
#include <limits>

#include "core/logging.h"

namespace facet {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

KvBlockManager::KvBlockManager(int64_t block_size, std::vector<PoolSpec> pools)
    : block_size_(block_size) {
  FACET_CHECK(block_size > 0) << block_size;
  FACET_CHECK(!pools.empty());
  for (PoolSpec& spec : pools) {
    FACET_CHECK(spec.num_blocks >= 0 && spec.num_blocks <= std::numeric_limits<int32_t>::max())
        << spec.name << " " << spec.num_blocks;
    FACET_CHECK(spec.window >= 0) << spec.name << " " << spec.window;
    Pool pool{std::move(spec), {}};
    // Pushed in reverse so that the first blocks handed out are 0, 1, 2, ...
    pool.free.reserve(pool.spec.num_blocks);
    for (int64_t b = pool.spec.num_blocks - 1; b >= 0; --b) pool.free.push_back(static_cast<int32_t>(b));
    pools_.push_back(std::move(pool));
  }
}

const KvBlockManager::SeqTables* KvBlockManager::Find(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : &it->second;
}

int64_t KvBlockManager::FirstNeeded(int p, int64_t begin) const {
  const int64_t window = pools_[p].spec.window;
  if (window == 0) return 0;
  return std::max<int64_t>(0, begin - (window - 1)) / block_size_;
}

int64_t KvBlockManager::Releasable(const SeqTables* s, int p, int64_t begin) const {
  if (s == nullptr) return 0;
  // Entries in [released, size) are all held: release only ever trims a prefix.
  const int64_t held_below = std::min<int64_t>(FirstNeeded(p, begin), s->table[p].size());
  return std::max<int64_t>(0, held_below - s->released[p]);
}

int64_t KvBlockManager::Needed(const SeqTables* s, int p, int64_t begin, int64_t end) const {
  FACET_CHECK(0 <= begin && begin <= end) << begin << " " << end;
  const int64_t have = s == nullptr ? 0 : static_cast<int64_t>(s->table[p].size());
  const int64_t first = FirstNeeded(p, begin);
  if (s != nullptr) {
    FACET_CHECK(first >= s->released[p]) << "begin went backwards in pool " << pools_[p].spec.name;
  }
  return std::max<int64_t>(0, CeilDiv(end, block_size_) - std::max(have, first));
}

int64_t KvBlockManager::BlocksNeeded(SeqId seq, int p, int64_t begin, int64_t end) const {
  return Needed(Find(seq), p, begin, end);
}

bool KvBlockManager::CanAllocate(SeqId seq, int64_t begin, int64_t end) const {
  const SeqTables* s = Find(seq);
  for (int p = 0; p < num_pools(); ++p) {
    if (Needed(s, p, begin, end) > free_blocks(p) + Releasable(s, p, begin)) return false;
  }
  return true;
}

absl::Status KvBlockManager::Allocate(SeqId seq, int64_t begin, int64_t end) {
  const SeqTables* existing = Find(seq);
  for (int p = 0; p < num_pools(); ++p) {
    const int64_t needed = Needed(existing, p, begin, end);
    const int64_t available = free_blocks(p) + Releasable(existing, p, begin);
    if (needed > available) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV pool '", pools_[p].spec.name, "' has ", available, " free blocks, sequence ", seq,
          " needs ", needed, " for positions [", begin, ", ", end, ")"));
    }
  }
  SeqTables& s = seqs_[seq];
  if (s.table.empty()) {
    s.table.resize(pools_.size());
    s.released.assign(pools_.size(), 0);
    s.used.assign(pools_.size(), 0);
  }
  for (int p = 0; p < num_pools(); ++p) {
    std::vector<int32_t>& table = s.table[p];
    std::vector<int32_t>& free = pools_[p].free;
    const int64_t first = FirstNeeded(p, begin);
    for (int64_t i = s.released[p]; i < std::min<int64_t>(first, table.size()); ++i) {
      free.push_back(table[i]);
      table[i] = -1;
      --s.used[p];
    }
    // A sequence that starts past the window (it never does today) has
    // logical blocks it never needed: they stay -1.
    if (static_cast<int64_t>(table.size()) < first) table.resize(first, -1);
    s.released[p] = std::max(s.released[p], first);
    const int64_t target = CeilDiv(end, block_size_);
    while (static_cast<int64_t>(table.size()) < target) {
      table.push_back(free.back());
      free.pop_back();
      ++s.used[p];
    }
  }
  return absl::OkStatus();
}

void KvBlockManager::Free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (int p = 0; p < num_pools(); ++p) {
    for (int32_t b : it->second.table[p]) {
      if (b >= 0) pools_[p].free.push_back(b);
    }
  }
  seqs_.erase(it);
}

const std::vector<int32_t>& KvBlockManager::Table(SeqId seq, int p) const {
  const SeqTables* s = Find(seq);
  FACET_CHECK(s != nullptr) << "no KV blocks for sequence " << seq;
  return s->table[p];
}

std::pair<int32_t, int32_t> KvBlockManager::Slot(SeqId seq, int p, int64_t pos) const {
  const std::vector<int32_t>& table = Table(seq, p);
  const int64_t i = pos / block_size_;
  FACET_CHECK(pos >= 0 && i < static_cast<int64_t>(table.size()) && table[i] >= 0)
      << "position " << pos << " of sequence " << seq << " not allocated in pool " << pools_[p].spec.name;
  return {table[i], static_cast<int32_t>(pos % block_size_)};
}

int64_t KvBlockManager::used_blocks(SeqId seq, int p) const {
  const SeqTables* s = Find(seq);
  return s == nullptr ? 0 : s->used[p];
}

int64_t KvBlockManager::PeakBlocks(int p, int64_t num_positions) const {
  const int64_t all = CeilDiv(num_positions, block_size_);
  const int64_t window = pools_[p].spec.window;
  if (window == 0) return all;
  // The positions [q - (w - 1), q] span at most this many blocks, reached when
  // the first of them sits in the last slot of a block.
  return std::min(all, CeilDiv(window - 1, block_size_) + 1);
}

}  // namespace facet
