// The MPI world (or a world of one without mpirun) for tests that run under
// `mpirun -np N`: created once per process on first use. A test binary cannot
// go on without it, so a failure aborts with the reason.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace facet::parallel {

inline Communicator& TestWorld() {
  static std::unique_ptr<Communicator> world = [] {
    auto w = CreateWorldCommunicator();
    if (!w.ok()) {
      std::fprintf(stderr, "%s\n", std::string(w.status().message()).c_str());
      std::abort();
    }
    return std::move(w).value();
  }();
  return *world;
}

}  // namespace facet::parallel
