#include "kernels/backend.h"

#include <map>
#include <mutex>

namespace facet {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, BackendFactory> factories;
};

// Function-local, so registrations from other translation units' static
// initialisers find it constructed.
Registry& TheRegistry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

size_t DTypeBytes(DType t) { return t == DType::kF32 ? 4 : 2; }

bool RegisterBackend(const std::string& name, BackendFactory factory) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[name] = std::move(factory);
  return true;
}

std::vector<std::string> RegisteredBackends() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& name) {
  BackendFactory f;
  {
    Registry& r = TheRegistry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.factories.find(name);
    if (it == r.factories.end()) {
      std::string known;
      for (const auto& [n, unused] : r.factories) known += (known.empty() ? "" : ", ") + n;
      return absl::NotFoundError(absl::StrCat("backend \"", name,
                                              "\" is not built into this binary (built: ", known,
                                              ")"));
    }
    f = it->second;
  }
  return f();
}

}  // namespace facet
