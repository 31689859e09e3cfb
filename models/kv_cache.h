// A contiguous per-sequence KV cache: for each layer that owns KV, K and V
// of every position so far. Layers that reuse another layer's KV (Gemma 4
// E2B/E4B) alias their source. The paged, pool-backed cache of the serving
// engine replaces this for batched serving; this one backs `facet generate`
// and the golden tests.
#pragma once

#include <cstdint>
#include <vector>

#include "models/config.h"

namespace facet {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  void Advance(int64_t n) { length_ += n; }
  void Clear() { length_ = 0; }

  float* k(int layer) { return store_[owner_[layer]].k.data(); }  // [capacity, Nkv, D]
  float* v(int layer) { return store_[owner_[layer]].v.data(); }  // [capacity, Nkv, D]
  size_t bytes() const;

 private:
  struct Store {
    std::vector<float> k, v;
  };
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<int> owner_;  // layer -> index into store_
  std::vector<Store> store_;
};

}  // namespace facet
