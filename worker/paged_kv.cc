#include "worker/paged_kv.h"

#include <algorithm>
#include <cstring>

namespace facet {

int64_t PagedKvStore::BytesPerBlock(const ModelConfig& cfg, int64_t block_size, bool sliding) {
  int64_t floats = 0;
  for (const LayerConfig& l : cfg.layers) {
    if (l.owns_kv() && l.is_sliding() == sliding) floats += 2 * int64_t(l.num_kv_heads) * l.head_dim;
  }
  return floats * block_size * int64_t(sizeof(float));
}

std::vector<PoolSpec> PagedKvStore::PlanPools(const ModelConfig& cfg, int64_t block_size,
                                              int64_t kv_bytes, int64_t max_running,
                                              int64_t max_chunk) {
  const int64_t global_bpb = BytesPerBlock(cfg, block_size, false);
  const int64_t sliding_bpb = BytesPerBlock(cfg, block_size, true);
  int64_t window = 0;
  for (const LayerConfig& l : cfg.layers) {
    if (l.is_sliding()) window = std::max<int64_t>(window, l.sliding_window);
  }
  std::vector<PoolSpec> pools;
  int64_t budget = kv_bytes;
  if (sliding_bpb > 0) {
    // A sequence never needs more sliding blocks than its window plus one chunk.
    const int64_t per_seq = (window - 1 + max_chunk + block_size - 1) / block_size + 1;
    int64_t blocks = per_seq * max_running;
    if (global_bpb > 0) blocks = std::min(blocks, kv_bytes / 2 / sliding_bpb);
    else blocks = kv_bytes / sliding_bpb;
    blocks = std::max<int64_t>(blocks, per_seq);
    budget -= blocks * sliding_bpb;
    pools.push_back(PoolSpec{"sliding", blocks, window});
  }
  if (global_bpb > 0) {
    pools.insert(pools.begin(), PoolSpec{"global", std::max<int64_t>(budget / global_bpb, 1), 0});
  }
  return pools;
}

PagedKvStore::PagedKvStore(const ModelConfig& cfg, KvBlockManager* blocks)
    : blocks_(blocks), block_size_(blocks->block_size()) {
  int global_pool = -1, sliding_pool = -1;
  for (int p = 0; p < blocks->num_pools(); ++p) {
    (blocks->pool(p).window > 0 ? sliding_pool : global_pool) = p;
  }
  const int L = cfg.num_layers;
  pool_of_.resize(L);
  store_of_.resize(L);
  row_.resize(L);
  for (int i = 0; i < L; ++i) {
    const LayerConfig& l = cfg.layers[i];
    pool_of_[i] = l.is_sliding() ? sliding_pool : global_pool;
    row_[i] = int64_t(l.num_kv_heads) * l.head_dim;
    if (!l.owns_kv()) {
      store_of_[i] = store_of_[l.kv_source_layer];
      continue;
    }
    const size_t n = size_t(blocks->total_blocks(pool_of_[i]) * block_size_ * row_[i]);
    stores_.push_back(LayerStore{std::vector<float>(n), std::vector<float>(n)});
    store_of_[i] = int(stores_.size()) - 1;
  }
}

size_t PagedKvStore::bytes() const {
  size_t b = 0;
  for (const LayerStore& s : stores_) b += (s.k.size() + s.v.size()) * sizeof(float);
  return b;
}

void PagedKvStore::Write(int layer, const SeqSegment& s, const float* k, const float* v) {
  LayerStore& st = stores_[store_of_[layer]];
  const int64_t row = row_[layer];
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    auto [block, off] = blocks_->Slot(s.seq, pool_of_[layer], s.pos0 + t);
    const int64_t at = (int64_t(block) * block_size_ + off) * row;
    std::memcpy(st.k.data() + at, k + t * row, sizeof(float) * row);
    std::memcpy(st.v.data() + at, v + t * row, sizeof(float) * row);
  }
}

void PagedKvStore::Read(int layer, const SeqSegment& s, int64_t begin, int64_t end, const float** k,
                        const float** v) {
  const LayerStore& st = stores_[store_of_[layer]];
  const int64_t row = row_[layer];
  const int64_t n = end - begin;
  scratch_k_.resize(n * row);
  scratch_v_.resize(n * row);
  // Gather block by block: each block's run of positions is contiguous.
  for (int64_t pos = begin; pos < end;) {
    auto [block, off] = blocks_->Slot(s.seq, pool_of_[layer], pos);
    const int64_t run = std::min(end - pos, block_size_ - off);
    const int64_t from = (int64_t(block) * block_size_ + off) * row;
    std::memcpy(scratch_k_.data() + (pos - begin) * row, st.k.data() + from, sizeof(float) * run * row);
    std::memcpy(scratch_v_.data() + (pos - begin) * row, st.v.data() + from, sizeof(float) * run * row);
    pos += run;
  }
  *k = scratch_k_.data();
  *v = scratch_v_.data();
}

}  // namespace facet
