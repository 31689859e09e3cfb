// CreateWorldCommunicator: the one place that knows which backends were built.
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "parallel/communicator.h"
#if FACET_HAS_MPI
#include "parallel/mpi_communicator.h"
#endif

namespace facet::parallel {

absl::StatusOr<std::unique_ptr<Communicator>> CreateWorldCommunicator() {
  const int launched = LaunchedWorldSize();
#if FACET_HAS_MPI
  // Launched by mpirun/srun: MPI even for one rank, so `mpirun -np 1` runs the
  // same code path as -np N.
  if (launched > 1 || std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
      std::getenv("PMIX_RANK")) {
    ASSIGN_OR_RETURN(auto world, MpiCommunicator::World());
    return std::unique_ptr<Communicator>(std::move(world));
  }
#else
  if (launched > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "launched with ", launched, " ranks but this build has no MPI (FACET_MPI=OFF)"));
  }
#endif
  return CreateSingleCommunicator();
}

}  // namespace facet::parallel
