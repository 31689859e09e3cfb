// Error handling for every Facet layer: absl::Status / absl::StatusOr plus the
// two propagation macros. Debian's abseil (20220623) predates abseil's own
// status macros, so they live here, once (STYLE.md §11).
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define FACET_STATUS_CONCAT_INNER_(a, b) a##b
#define FACET_STATUS_CONCAT_(a, b) FACET_STATUS_CONCAT_INNER_(a, b)

// RETURN_IF_ERROR(expr): returns the status of `expr` from the enclosing
// function when it is not OK.
#define RETURN_IF_ERROR(expr)                                 \
  do {                                                        \
    ::absl::Status facet_status_ = (expr);                    \
    if (!facet_status_.ok()) return facet_status_;            \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates a StatusOr expression; on error
// returns its status, otherwise moves the value into `lhs` (which may be a
// declaration such as `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  FACET_ASSIGN_OR_RETURN_IMPL_(FACET_STATUS_CONCAT_(facet_statusor_, __LINE__), lhs, expr)

#define FACET_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

namespace facet {

// Note: Debian's abseil has its own absl::string_view (not an alias of
// std::string_view), so absl::StrCat takes std::string / const char* /
// absl::string_view, not std::string_view.
//
// Prefixes a status message with context (a file name, a tensor name), keeping
// the code. Used so an error names what was being read when it failed.
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace facet
