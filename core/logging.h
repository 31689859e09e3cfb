// Minimal logging and invariant checks. CHECK is for programmer errors only;
// anything a caller or user can cause returns a Status instead.
#pragma once

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace facet::internal {

class LogMessage {
 public:
  LogMessage(const char* file, int line, const char* severity, bool fatal)
      : fatal_(fatal) {
    stream_ << "[" << severity << " " << file << ":" << line << "] ";
  }
  ~LogMessage() {
    stream_ << "\n";
    std::cerr << stream_.str();
    if (fatal_) std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
  bool fatal_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace facet::internal

#define FACET_LOG(severity) \
  ::facet::internal::LogMessage(__FILE__, __LINE__, #severity, false).stream()

#define FACET_CHECK(cond)                                                \
  (cond) ? (void)0                                                       \
         : ::facet::internal::Voidify() &                                \
               ::facet::internal::LogMessage(__FILE__, __LINE__, "FATAL", \
                                             true)                       \
                       .stream()                                         \
                   << "Check failed: " #cond " "
