// Where the forward pass keeps K/V. A batch is a list of segments, each a run
// of consecutive positions of one sequence; the store maps (sequence, layer,
// position) to memory. KvCache (contiguous, one sequence) and the serving
// engine's paged cache (worker/paged_kv.h) implement it.
#pragma once

#include <cstdint>

namespace facet {

struct SeqSegment {
  int64_t seq = 0;          // the store's sequence handle
  int64_t token_begin = 0;  // first row of this segment in the batch's token arrays
  int64_t num_tokens = 0;
  int64_t pos0 = 0;         // absolute position of the first token
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Stores K and V ([num_tokens, Nkv·D] each, rows in position order) of
  // segment `s` at positions pos0 .. pos0 + num_tokens - 1 for `layer`.
  virtual void Write(int layer, const SeqSegment& s, const float* k, const float* v) = 0;
  // K and V of positions [begin, end) of s's sequence for `layer` as
  // contiguous [end - begin, Nkv·D] rows. The pointers stay valid until the
  // next Read or Write.
  virtual void Read(int layer, const SeqSegment& s, int64_t begin, int64_t end, const float** k,
                    const float** v) = 0;
};

}  // namespace facet
