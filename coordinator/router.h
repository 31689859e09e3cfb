// Routing across replicas (DESIGN.md §1, §5 data parallel): least loaded
// live replica. A pure function, so the policy is tested on its own; later
// policies (prefix-affine) get their own file.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace facet {

struct ReplicaLoad {
  std::string name;
  bool up = true;
  int64_t assigned = 0;  // requests the coordinator has in flight there
  int64_t running = 0;   // from the replica's last stats
  int64_t waiting = 0;
};

// Index of the live replica with the fewest assigned requests (then the
// fewest running + waiting); ties go round-robin by `rotation`. -1 when none
// is up.
int PickReplica(std::span<const ReplicaLoad> replicas, uint64_t rotation);

}  // namespace facet
