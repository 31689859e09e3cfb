// The serving engine's paged KV cache: fixed-size blocks in one pool per
// layer kind (global, sliding), block tables from KvBlockManager. A physical
// block id addresses the same slot in every layer of its kind, so one table
// per pool serves all of that pool's layers.
#pragma once

#include <cstdint>
#include <vector>

#include "models/config.h"
#include "models/kv_store.h"
#include "worker/kv_blocks.h"

namespace facet {

class PagedKvStore : public KvStore {
 public:
  // Pool sizes for `config` within `kv_bytes`: the sliding pool gets what
  // `max_running` sequences need to hold a window plus a prefill chunk each
  // (capped at half the budget), the global pool the rest.
  static std::vector<PoolSpec> PlanPools(const ModelConfig& config, int64_t block_size,
                                         int64_t kv_bytes, int64_t max_running, int64_t max_chunk);
  // Bytes one block of pool `p` occupies across all of that pool's layers (K and V, f32).
  static int64_t BytesPerBlock(const ModelConfig& config, int64_t block_size, bool sliding);

  // `blocks` must have been built from PlanPools(config, ...) (same order).
  PagedKvStore(const ModelConfig& config, KvBlockManager* blocks);

  void Write(int layer, const SeqSegment& s, const float* k, const float* v) override;
  void Read(int layer, const SeqSegment& s, int64_t begin, int64_t end, const float** k,
            const float** v) override;

  int PoolOf(int layer) const { return pool_of_[layer]; }
  size_t bytes() const;

 private:
  struct LayerStore {
    std::vector<float> k, v;  // [num_blocks, block_size, Nkv·D]
  };
  KvBlockManager* blocks_;
  int64_t block_size_;
  std::vector<int> pool_of_;   // layer -> pool index
  std::vector<int> store_of_;  // layer -> index into stores_ (KV-sharing layers alias)
  std::vector<int64_t> row_;   // layer -> Nkv·D
  std::vector<LayerStore> stores_;
  std::vector<float> scratch_k_, scratch_v_;  // gathered keys/values of the last Read
};

}  // namespace facet
