// Appends result lines to an output file so that a kill loses at most the
// lines not yet synced, and never leaves half a line behind for good: lines
// are buffered, written with whole-buffer write(2) calls and fsynced every
// `sync_every` lines or `sync_seconds`. Resume (ReadBatchDone) drops a torn
// tail; Open truncates the file to its last whole line before appending.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace facet::cli {

class BatchWriter {
 public:
  // Opens `path` for appending (created if missing) after truncating it to
  // `keep_bytes` (the valid prefix from ReadBatchDone; -1 keeps everything).
  // NOT_FOUND / PERMISSION_DENIED naming the path when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<BatchWriter>> Open(const std::string& path,
                                                           int64_t keep_bytes, int64_t sync_every,
                                                           double sync_seconds);
  ~BatchWriter();  // syncs what is buffered (errors are lost: call Sync first)
  BatchWriter(const BatchWriter&) = delete;
  BatchWriter& operator=(const BatchWriter&) = delete;

  // `line` without its newline. Syncs when the batch is full or old enough.
  absl::Status Append(const std::string& line);
  // write(2) everything buffered, then fsync.
  absl::Status Sync();

  int64_t synced_lines() const { return synced_lines_; }
  const std::string& path() const { return path_; }

 private:
  BatchWriter(std::string path, int fd, int64_t sync_every, double sync_seconds);

  std::string path_;
  int fd_ = -1;
  int64_t sync_every_;
  std::chrono::duration<double> sync_interval_;
  std::chrono::steady_clock::time_point last_sync_;
  std::string buffer_;  // whole lines not yet written
  int64_t buffered_lines_ = 0;
  int64_t synced_lines_ = 0;
};

// OK when `path` can be created: its folder exists and is a folder.
absl::Status CheckOutputPath(const std::string& path);

}  // namespace facet::cli
