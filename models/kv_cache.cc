#include "models/kv_cache.h"

namespace facet {

KvCache::KvCache(const ModelConfig& config, int64_t capacity) : capacity_(capacity) {
  owner_.resize(config.num_layers);
  std::vector<int> store_of_layer(config.num_layers, -1);
  for (int i = 0; i < config.num_layers; ++i) {
    const LayerConfig& lc = config.layers[i];
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

}  // namespace facet
