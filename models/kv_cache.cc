#include "models/kv_cache.h"

#include <cstring>

namespace facet {

KvCache::KvCache(const ModelConfig& config, int64_t capacity) : capacity_(capacity) {
  owner_.resize(config.num_layers);
  row_.resize(config.num_layers);
  std::vector<int> store_of_layer(config.num_layers, -1);
  for (int i = 0; i < config.num_layers; ++i) {
    const LayerConfig& lc = config.layers[i];
    row_[i] = int64_t(lc.num_kv_heads) * lc.head_dim;
    if (!lc.owns_kv()) {
      owner_[i] = store_of_layer[lc.kv_source_layer];
      continue;
    }
    const size_t n = size_t(capacity) * lc.num_kv_heads * lc.head_dim;
    store_.push_back(Store{std::vector<float>(n), std::vector<float>(n)});
    store_of_layer[i] = int(store_.size()) - 1;
    owner_[i] = store_of_layer[i];
  }
}

size_t KvCache::bytes() const {
  size_t b = 0;
  for (const Store& s : store_) b += (s.k.size() + s.v.size()) * sizeof(float);
  return b;
}

void KvCache::Write(int layer, const SeqSegment& s, const float* k, const float* v) {
  const int64_t row = row_[layer];
  std::memcpy(this->k(layer) + s.pos0 * row, k, sizeof(float) * s.num_tokens * row);
  std::memcpy(this->v(layer) + s.pos0 * row, v, sizeof(float) * s.num_tokens * row);
}

void KvCache::Read(int layer, const SeqSegment&, int64_t begin, int64_t, const float** k,
                   const float** v) {
  *k = this->k(layer) + begin * row_[layer];
  *v = this->v(layer) + begin * row_[layer];
}

}  // namespace facet
