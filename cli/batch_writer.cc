#include "cli/batch_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace facet::cli {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  const int e = errno;
  std::string msg = absl::StrCat(what, " ", path, ": ", strerror(e));
  if (e == ENOENT) return absl::NotFoundError(msg);
  if (e == EACCES || e == EPERM || e == EROFS) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

}  // namespace

absl::Status CheckOutputPath(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("the output path is empty");
  std::filesystem::path p(path);
  std::filesystem::path dir = p.parent_path().empty() ? std::filesystem::path(".") : p.parent_path();
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("the output folder ", dir.string(), " does not exist"));
  }
  if (std::filesystem::is_directory(p, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("the output path ", path, " is a folder"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BatchWriter>> BatchWriter::Open(const std::string& path,
                                                               int64_t keep_bytes,
                                                               int64_t sync_every,
                                                               double sync_seconds) {
  if (auto st = CheckOutputPath(path); !st.ok()) return st;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open", path);
  if (keep_bytes >= 0 && ::ftruncate(fd, keep_bytes) != 0) {
    absl::Status st = Errno("cannot truncate the torn last line of", path);
    ::close(fd);
    return st;
  }
  if (::lseek(fd, 0, SEEK_END) < 0) {
    absl::Status st = Errno("cannot seek in", path);
    ::close(fd);
    return st;
  }
  return std::unique_ptr<BatchWriter>(new BatchWriter(path, fd, sync_every, sync_seconds));
}

BatchWriter::BatchWriter(std::string path, int fd, int64_t sync_every, double sync_seconds)
    : path_(std::move(path)),
      fd_(fd),
      sync_every_(sync_every < 1 ? 1 : sync_every),
      sync_interval_(sync_seconds),
      last_sync_(std::chrono::steady_clock::now()) {}

BatchWriter::~BatchWriter() {
  (void)Sync();
  if (fd_ >= 0) ::close(fd_);
}

absl::Status BatchWriter::Append(const std::string& line) {
  buffer_ += line;
  buffer_ += '\n';
  ++buffered_lines_;
  if (buffered_lines_ >= sync_every_ ||
      std::chrono::steady_clock::now() - last_sync_ >= sync_interval_) {
    return Sync();
  }
  return absl::OkStatus();
}

absl::Status BatchWriter::Sync() {
  last_sync_ = std::chrono::steady_clock::now();
  size_t off = 0;
  while (off < buffer_.size()) {
    ssize_t n = ::write(fd_, buffer_.data() + off, buffer_.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path_);
    }
    off += static_cast<size_t>(n);
  }
  buffer_.clear();
  if (buffered_lines_ > 0 && ::fsync(fd_) != 0) return Errno("cannot fsync", path_);
  synced_lines_ += buffered_lines_;
  buffered_lines_ = 0;
  return absl::OkStatus();
}

}  // namespace facet::cli
