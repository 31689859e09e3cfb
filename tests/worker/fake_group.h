// In-process stand-ins for a group communicator (only Broadcast is real):
//  - RecordingComm: rank 0 of a group of `size`; every broadcast payload is
//    kept, so a test can replay the leader's messages into a Follower.
//  - ThreadGroup: `size` communicators for threads of one process; a
//    broadcast blocks until every rank has joined (or Abort).
#pragma once

#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace facet::testing {

class StubComm : public parallel::Communicator {
 public:
  absl::string_view backend() const override { return "fake"; }
  absl::Status AllReduce(const void*, void*, size_t, parallel::DType, parallel::ReduceOp) override { return No(); }
  absl::Status AllGather(const void*, void*, size_t, parallel::DType) override { return No(); }
  absl::Status ReduceScatter(const void*, void*, size_t, parallel::DType, parallel::ReduceOp) override { return No(); }
  absl::Status AllToAllV(const void*, std::span<const size_t>, void*, std::span<const size_t>,
                         parallel::DType) override {
    return No();
  }
  absl::Status Barrier() override { return No(); }
  absl::StatusOr<std::unique_ptr<parallel::Communicator>> Split(int, int) override { return No(); }

 private:
  static absl::Status No() { return absl::UnimplementedError("fake communicator"); }
};

class RecordingComm : public StubComm {
 public:
  explicit RecordingComm(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  absl::Status Broadcast(void* buf, size_t count, parallel::DType dtype, int root) override {
    std::lock_guard<std::mutex> l(mu_);
    if (block_) {
      // A peer that never joins: hang until aborted.
      std::unique_lock<std::mutex> ul(mu_, std::adopt_lock);
      cv_.wait(ul, [&] { return aborted_; });
      ul.release();
      return absl::AbortedError("aborted");
    }
    const size_t n = count * parallel::DTypeSize(dtype);
    // Size broadcasts are 8 bytes of kI64; keep only the payloads.
    if (dtype == parallel::DType::kBytes) payloads_.emplace_back(static_cast<const char*>(buf), n);
    return absl::OkStatus();
  }
  void Abort(int) override {
    std::lock_guard<std::mutex> l(mu_);
    aborted_ = true;
    cv_.notify_all();
  }
  void set_block(bool b) {
    std::lock_guard<std::mutex> l(mu_);
    block_ = b;
  }
  std::vector<std::string> payloads() {
    std::lock_guard<std::mutex> l(mu_);
    return payloads_;
  }

 private:
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool block_ = false;
  bool aborted_ = false;
  std::vector<std::string> payloads_;
};

// Shared state of a ThreadGroup.
struct ThreadGroupState {
  std::mutex mu;
  std::condition_variable cv;
  int size = 0;
  int64_t generation = 0;  // completed broadcasts
  int arrived = 0;
  std::map<int64_t, std::string> data;  // the root's payload of each broadcast (a test sends few)
  bool aborted = false;
};

class ThreadComm : public StubComm {
 public:
  ThreadComm(std::shared_ptr<ThreadGroupState> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->size; }
  absl::Status Broadcast(void* buf, size_t count, parallel::DType dtype, int root) override {
    const size_t n = count * parallel::DTypeSize(dtype);
    std::unique_lock<std::mutex> l(s_->mu);
    if (s_->aborted) return absl::AbortedError("aborted");
    const int64_t gen = s_->generation;
    if (rank_ == root) s_->data[gen].assign(static_cast<const char*>(buf), n);
    if (++s_->arrived == s_->size) {
      s_->arrived = 0;
      ++s_->generation;
      s_->cv.notify_all();
    } else {
      s_->cv.wait(l, [&] { return s_->generation != gen || s_->aborted; });
      if (s_->generation == gen) return absl::AbortedError("aborted");
    }
    if (rank_ != root) {
      const std::string& d = s_->data[gen];
      if (d.size() != n) return absl::InvalidArgumentError("broadcast size mismatch");
      std::memcpy(buf, d.data(), n);
    }
    return absl::OkStatus();
  }
  void Abort(int) override {
    std::lock_guard<std::mutex> l(s_->mu);
    s_->aborted = true;
    s_->cv.notify_all();
  }

 private:
  std::shared_ptr<ThreadGroupState> s_;
  int rank_;
};

inline std::vector<std::unique_ptr<ThreadComm>> ThreadGroup(int size) {
  auto s = std::make_shared<ThreadGroupState>();
  s->size = size;
  std::vector<std::unique_ptr<ThreadComm>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<ThreadComm>(s, r));
  return out;
}

}  // namespace facet::testing
