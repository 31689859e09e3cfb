// Progress of `facet batch` on stderr: a one-line bar redrawn in place on a
// terminal (requests done, tokens/s, ETA), plain periodic lines otherwise
// (Slurm output files, CI logs), and the end-of-run summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace facet::cli {

struct BatchCounts {
  int64_t done = 0;    // answered this run, failures included
  int64_t failed = 0;  // answered with an error object
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

class BatchProgress {
 public:
  // `total`: lines this process answers this run; `prefix`: "" or "[rank 1/2] ".
  BatchProgress(int64_t total, bool terminal, double interval_s, std::string prefix, std::ostream& out);

  // Redraws when the interval has passed (cheap to call often).
  void Update(const BatchCounts& c);
  // The final line: requests, failures, tokens, throughput, wall time.
  void Finish(const BatchCounts& c, int64_t skipped);
  // As Finish, over `seconds` (a job's wall time across ranks).
  void Finish(const BatchCounts& c, int64_t skipped, double seconds);

  double elapsed_s() const;

 private:
  std::string Line(const BatchCounts& c) const;

  int64_t total_;
  bool terminal_;
  std::chrono::duration<double> interval_;
  std::string prefix_;
  std::ostream& out_;
  std::chrono::steady_clock::time_point start_, last_;
};

// "1h02m", "3m05s", "12s".
std::string FormatDuration(double seconds);

}  // namespace facet::cli
