#include "coordinator/router.h"

#include <tuple>

namespace facet {

int PickReplica(std::span<const ReplicaLoad> replicas, uint64_t rotation) {
  const size_t n = replicas.size();
  int best = -1;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (k + rotation) % n;  // start point rotates: ties spread out
    const ReplicaLoad& r = replicas[i];
    if (!r.up) continue;
    if (best < 0 || std::make_tuple(r.assigned, r.running + r.waiting) <
                        std::make_tuple(replicas[best].assigned, replicas[best].running + replicas[best].waiting)) {
      best = int(i);
    }
  }
  return best;
}

}  // namespace facet
