// A contiguous per-sequence KV cache: for each layer that owns KV, K and V
// of every position so far. Layers that reuse another layer's KV (Gemma 4
// E2B/E4B) alias their source. The paged, pool-backed cache of the serving
// engine replaces this for batched serving; this one backs `facet generate`
// and the golden tests.
#pragma once

#include <cstdint>
#include <vector>

#include "models/config.h"
#include "models/kv_store.h"

namespace facet {

class KvCache : public KvStore {
 public:
  KvCache(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  void Advance(int64_t n) { length_ += n; }
  void Clear() { length_ = 0; }

  float* k(int layer) { return store_[owner_[layer]].k.data(); }  // [capacity, Nkv, D]
  float* v(int layer) { return store_[owner_[layer]].v.data(); }  // [capacity, Nkv, D]
  size_t bytes() const;

  void Write(int layer, const SeqSegment& s, const float* k, const float* v) override;
  void Read(int layer, const SeqSegment& s, int64_t begin, int64_t end, const float** k,
            const float** v) override;

 private:
  struct Store {
    std::vector<float> k, v;
  };
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<int> owner_;     // layer -> index into store_
  std::vector<int64_t> row_;   // layer -> floats per position (Nkv·D)
  std::vector<Store> store_;
};

}  // namespace facet
