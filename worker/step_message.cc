#include "worker/step_message.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace facet {
namespace {

constexpr char kMagic[4] = {'F', 'S', 'T', 'P'};
constexpr uint8_t kVersion = 2;
// A step never schedules more tokens than this; guards allocations on garbage.
constexpr uint64_t kMaxCount = uint64_t(1) << 26;

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(char(v)); }
  void I64(int64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(char((uint64_t(v) >> (8 * i)) & 0xff));
  }
  void I32(int32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(char((uint32_t(v) >> (8 * i)) & 0xff));
  }
  void F32(float v) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v, 4);
    I32(int32_t(bits));
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (pos_ + 1 > in_.size()) return false;
    *v = uint8_t(in_[pos_++]);
    return true;
  }
  bool I64(int64_t* v) {
    if (pos_ + 8 > in_.size()) return false;
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x |= uint64_t(uint8_t(in_[pos_ + i])) << (8 * i);
    pos_ += 8;
    *v = int64_t(x);
    return true;
  }
  bool I32(int32_t* v) {
    if (pos_ + 4 > in_.size()) return false;
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x |= uint32_t(uint8_t(in_[pos_ + i])) << (8 * i);
    pos_ += 4;
    *v = int32_t(x);
    return true;
  }
  bool F32(float* v) {
    int32_t bits = 0;
    if (!I32(&bits)) return false;
    std::memcpy(v, &bits, 4);
    return true;
  }
  // A count whose elements (each at least `elem_bytes`) fit in what is left.
  bool Count(size_t elem_bytes, size_t* n) {
    int64_t v = 0;
    if (!I64(&v) || v < 0 || uint64_t(v) > kMaxCount) return false;
    if (uint64_t(v) * elem_bytes > in_.size() - pos_) return false;
    *n = size_t(v);
    return true;
  }
  bool done() const { return pos_ == in_.size(); }
  size_t pos() const { return pos_; }

 private:
  absl::string_view in_;
  size_t pos_ = 0;
};

absl::Status Bad(const Reader& r, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat("step message: ", what, " (at byte ", r.pos(), ")"));
}

}  // namespace

std::string EncodeStepMessage(const StepMessage& m) {
  Writer w;
  for (char c : kMagic) w.U8(uint8_t(c));
  w.U8(kVersion);
  w.U8(uint8_t(m.kind));
  w.I64(m.step);
  w.I64(int64_t(m.ops.size()));
  for (const SchedulerOp& op : m.ops) {
    w.U8(uint8_t(op.kind));
    switch (op.kind) {
      case SchedulerOp::Kind::kAdd:
        w.I64(op.id);
        w.I64(op.prompt_len);
        w.I64(op.max_new_tokens);
        break;
      case SchedulerOp::Kind::kAbort:
        w.I64(op.id);
        break;
      case SchedulerOp::Kind::kSchedule:
        break;
      case SchedulerOp::Kind::kStepDone:
        w.I64(int64_t(op.finished.size()));
        for (SeqId id : op.finished) w.I64(id);
        break;
    }
  }
  const StepBatch& b = m.batch;
  w.I64(int64_t(b.tokens.size()));
  for (size_t i = 0; i < b.tokens.size(); ++i) {
    w.I32(b.tokens[i]);
    w.I32(b.positions[i]);
  }
  w.I64(int64_t(b.segments.size()));
  for (const SeqSegment& s : b.segments) {
    w.I64(s.seq);
    w.I64(s.token_begin);
    w.I64(s.num_tokens);
    w.I64(s.pos0);
  }
  w.I64(int64_t(b.logit_rows.size()));
  for (int64_t r : b.logit_rows) w.I64(r);
  w.I64(int64_t(b.sampling.size()));
  for (const RowSampling& rs : b.sampling) {
    const SamplingParams& p = rs.params;
    w.F32(p.temperature);
    w.I32(p.top_k);
    w.F32(p.top_p);
    w.F32(p.min_p);
    w.F32(p.repetition_penalty);
    w.I64(int64_t(p.seed));
    w.I64(rs.step);
    w.I64(int64_t(rs.history.size()));
    for (int32_t id : rs.history) w.I32(id);
  }
  return std::move(w.out());
}

absl::StatusOr<StepMessage> DecodeStepMessage(absl::string_view bytes) {
  Reader r(bytes);
  StepMessage m;
  for (char c : kMagic) {
    uint8_t v = 0;
    if (!r.U8(&v) || v != uint8_t(c)) return Bad(r, "bad magic (not a step message)");
  }
  uint8_t version = 0, kind = 0;
  if (!r.U8(&version) || version != kVersion) return Bad(r, "unsupported version");
  if (!r.U8(&kind) || (kind != uint8_t(StepMessage::Kind::kStep) && kind != uint8_t(StepMessage::Kind::kShutdown))) {
    return Bad(r, "unknown message kind");
  }
  m.kind = StepMessage::Kind(kind);
  if (!r.I64(&m.step)) return Bad(r, "truncated step number");
  size_t n = 0;
  if (!r.Count(1, &n)) return Bad(r, "bad op count");
  m.ops.resize(n);
  for (SchedulerOp& op : m.ops) {
    uint8_t k = 0;
    if (!r.U8(&k)) return Bad(r, "truncated op");
    op.kind = SchedulerOp::Kind(k);
    switch (op.kind) {
      case SchedulerOp::Kind::kAdd:
        if (!r.I64(&op.id) || !r.I64(&op.prompt_len) || !r.I64(&op.max_new_tokens)) return Bad(r, "truncated add");
        break;
      case SchedulerOp::Kind::kAbort:
        if (!r.I64(&op.id)) return Bad(r, "truncated abort");
        break;
      case SchedulerOp::Kind::kSchedule:
        break;
      case SchedulerOp::Kind::kStepDone: {
        size_t f = 0;
        if (!r.Count(8, &f)) return Bad(r, "bad finished count");
        op.finished.resize(f);
        for (SeqId& id : op.finished) r.I64(&id);
        break;
      }
      default:
        return Bad(r, "unknown op kind");
    }
  }
  StepBatch& b = m.batch;
  if (!r.Count(8, &n)) return Bad(r, "bad token count");
  b.tokens.resize(n);
  b.positions.resize(n);
  for (size_t i = 0; i < n; ++i) {
    r.I32(&b.tokens[i]);
    r.I32(&b.positions[i]);
  }
  if (!r.Count(32, &n)) return Bad(r, "bad segment count");
  b.segments.resize(n);
  for (SeqSegment& s : b.segments) {
    r.I64(&s.seq);
    r.I64(&s.token_begin);
    r.I64(&s.num_tokens);
    r.I64(&s.pos0);
    if (s.token_begin < 0 || s.num_tokens < 1 || s.pos0 < 0 ||
        s.token_begin + s.num_tokens > int64_t(b.tokens.size())) {
      return Bad(r, "segment outside the token arrays");
    }
  }
  if (!r.Count(8, &n)) return Bad(r, "bad logit row count");
  b.logit_rows.resize(n);
  for (int64_t& row : b.logit_rows) {
    r.I64(&row);
    if (row < 0 || row >= int64_t(b.tokens.size())) return Bad(r, "logit row outside the batch");
  }
  // Each row: 5 x 4 bytes of filters, seed, step, history count.
  if (!r.Count(44, &n)) return Bad(r, "bad sampling row count");
  if (n != 0 && n != b.logit_rows.size()) return Bad(r, "sampling rows do not match the logit rows");
  b.sampling.resize(n);
  for (RowSampling& rs : b.sampling) {
    SamplingParams& p = rs.params;
    int64_t seed = 0;
    if (!r.F32(&p.temperature) || !r.I32(&p.top_k) || !r.F32(&p.top_p) || !r.F32(&p.min_p) ||
        !r.F32(&p.repetition_penalty) || !r.I64(&seed) || !r.I64(&rs.step)) {
      return Bad(r, "truncated sampling row");
    }
    p.seed = uint64_t(seed);
    // The Sampler constructor CHECKs these; a bad message must not crash a follower.
    if (!ValidateSamplingParams(p, std::numeric_limits<int32_t>::max()).ok()) {
      return Bad(r, "invalid sampling parameters");
    }
    if (rs.step < 0) return Bad(r, "negative sampling step");
    size_t h = 0;
    if (!r.Count(4, &h)) return Bad(r, "bad history count");
    rs.history.resize(h);
    for (int32_t& id : rs.history) r.I32(&id);
  }
  if (!r.done()) return Bad(r, "trailing bytes");
  return m;
}

}  // namespace facet
