// The BPE core shared by both loaders, and the pre-tokenizer in front of it.
// Follows HF `tokenizers` models/bpe/{model,word}.rs for ranked merges and
// SentencePiece bpe_model.cc (as llama.cpp's SPM tokenizer) for scored merges.
#include <queue>
#include <string_view>
#include <vector>

#include "models/tokenizer_model.h"

namespace facet::tokenizer_internal {
namespace {

// Byte length of the character at `s[i]`; a byte that does not start a valid
// character counts as one character (HF only ever sees valid UTF-8; such bytes
// then go to byte fallback).
size_t CharLength(std::string_view s, size_t i) {
  const int n = Utf8SequenceLength(s, i);
  return n > 0 ? static_cast<size_t>(n) : 1;
}

// Pre-tokenizer: HF normalizer.rs `split` with a literal pattern.

void SplitByRule(const SplitRule& rule, std::string_view text,
                 std::vector<std::string_view>& out) {
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t prev = 0;
  if (!rule.pattern.empty()) {
    for (size_t hit; (hit = text.find(rule.pattern, prev)) != std::string_view::npos;) {
      if (hit > prev) spans.push_back({prev, hit, false});
      spans.push_back({hit, hit + rule.pattern.size(), true});
      prev = hit + rule.pattern.size();
    }
  }
  if (prev < text.size()) spans.push_back({prev, text.size(), false});

  using B = SplitRule::Behavior;
  std::vector<Span> merged;
  switch (rule.behavior) {
    case B::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) merged.push_back(s);
      }
      break;
    case B::kIsolated:
      merged = spans;
      break;
    case B::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match && !merged.empty() && merged.back().is_match) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
      }
      break;
    case B::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case B::kMergedWithNext: {
      bool next_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !next_match && !merged.empty()) {
          merged.back().begin = it->begin;
        } else {
          merged.push_back(*it);
        }
        next_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
  }
  for (const Span& s : merged) {
    if (s.end > s.begin) out.push_back(text.substr(s.begin, s.end - s.begin));
  }
}

// BPE over one pre-tokenized word. Symbols form a linked list; candidate merges
// sit in a heap ordered by (priority, position), so a word of n characters costs
// O(n log n) however long it is (Gemma's pre-tokenizer never splits, so a whole
// paragraph is one word).

struct Symbol {
  uint32_t start;
  uint32_t len;  // 0 once merged into its left neighbour
  int32_t id;    // -1: not a piece (kScored, resolved by byte fallback at the end)
  int32_t prev;
  int32_t next;
};

struct Candidate {
  float priority;  // lower merges first: the rank (exact below 2^24), or minus the score
  uint32_t pos;    // index of the left symbol; ties go to the leftmost
  int32_t result;
  uint32_t size;   // byte length of the merged piece
  int32_t left_id;  // the pair when pushed, to skip re-looking it up
  int32_t right_id;
};

struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.pos > b.pos;
  }
};

class BpeWord {
 public:
  BpeWord(const TokenizerModel& m, std::string_view word) : m_(m), word_(word) {}

  void Run(std::vector<int32_t>& out) {
    if (m_.ignore_merges) {
      if (auto it = m_.vocab.find(absl::string_view(word_.data(), word_.size()));
          it != m_.vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (m_.mode == MergeMode::kRanked) {
      InitRanked();
    } else {
      InitScored();
    }
    if (symbols_.empty()) return;
    for (size_t i = 0; i + 1 < symbols_.size(); ++i) TryPush(static_cast<int32_t>(i));
    MergeAll();
    Emit(out);
  }

 private:
  void AddSymbol(uint32_t start, uint32_t len, int32_t id) {
    const auto index = static_cast<int32_t>(symbols_.size());
    symbols_.push_back({start, len, id, index - 1, -1});
    if (index > 0) symbols_[index - 1].next = index;
  }

  // HF BPE::merge_word: characters not in the vocab become byte tokens at once,
  // or <unk> (consecutive ones fused when fuse_unk).
  void InitRanked() {
    uint32_t unk_start = 0, unk_len = 0;
    auto flush_unk = [&] {
      if (unk_len > 0) AddSymbol(unk_start, unk_len, m_.unk_id);
      unk_len = 0;
    };
    for (size_t i = 0; i < word_.size();) {
      const size_t n = CharLength(word_, i);
      const std::string_view ch = word_.substr(i, n);
      if (const int32_t id = CharPiece(i, n); id >= 0) {
        flush_unk();
        AddSymbol(static_cast<uint32_t>(i), static_cast<uint32_t>(n), id);
      } else if (m_.byte_fallback && AllBytesKnown(ch)) {
        // HF does not flush a pending <unk> here; it is fused into the next
        // one or emitted at the next known character.
        for (size_t k = 0; k < n; ++k) {
          AddSymbol(static_cast<uint32_t>(i + k), 1,
                    m_.byte_ids[static_cast<unsigned char>(ch[k])]);
        }
      } else if (m_.unk_id >= 0) {
        if (unk_len > 0 && m_.fuse_unk) {
          unk_len += static_cast<uint32_t>(n);
        } else {
          flush_unk();
          unk_start = static_cast<uint32_t>(i);
          unk_len = static_cast<uint32_t>(n);
        }
      }
      i += n;
    }
    flush_unk();
  }

  void InitScored() {
    for (size_t i = 0; i < word_.size();) {
      const size_t n = CharLength(word_, i);
      AddSymbol(static_cast<uint32_t>(i), static_cast<uint32_t>(n), MergeablePiece(i, n));
      i += n;
    }
  }

  // The vocab id of one character, with ASCII from a table.
  int32_t CharPiece(size_t start, size_t len) const {
    const auto c = static_cast<unsigned char>(word_[start]);
    if (c < 0x80) return m_.ascii_ids[c];
    const std::string_view ch = word_.substr(start, len);
    auto it = m_.vocab.find(absl::string_view(ch.data(), ch.size()));
    return it == m_.vocab.end() ? -1 : it->second;
  }

  bool AllBytesKnown(std::string_view s) const {
    for (char c : s) {
      if (m_.byte_ids[static_cast<unsigned char>(c)] < 0) return false;
    }
    return true;
  }

  int32_t MergeablePiece(size_t start, size_t len) const {
    if (len == 1) {
      const int32_t id = CharPiece(start, len);
      return id >= 0 && (m_.flags[id] & kFlagMergeable) ? id : -1;
    }
    const std::string_view piece = word_.substr(start, len);
    auto it = m_.vocab.find(absl::string_view(piece.data(), piece.size()));
    if (it == m_.vocab.end() || !(m_.flags[it->second] & kFlagMergeable)) return -1;
    return it->second;
  }

  std::optional<Candidate> Lookup(int32_t left) const {
    const Symbol& l = symbols_[left];
    const Symbol& r = symbols_[l.next];
    if (m_.mode == MergeMode::kRanked) {
      if (l.id < 0 || r.id < 0) return std::nullopt;
      auto it = m_.merges.find(PairKey(l.id, r.id));
      if (it == m_.merges.end()) return std::nullopt;
      return Candidate{static_cast<float>(it->second.rank), static_cast<uint32_t>(left),
                       it->second.result, l.len + r.len, l.id, r.id};
    }
    const int32_t id = MergeablePiece(l.start, l.len + r.len);
    if (id < 0) return std::nullopt;
    return Candidate{-m_.scores[id], static_cast<uint32_t>(left), id, l.len + r.len, l.id, r.id};
  }

  void TryPush(int32_t left) {
    if (left < 0 || symbols_[left].next < 0) return;
    if (auto c = Lookup(left)) heap_.push(*c);
  }

  // Whether a popped candidate still describes the pair at its position. HF
  // (word.rs) re-looks the pair up and compares the result id; SentencePiece
  // compares the merged length. Both are kept so each mode matches its
  // reference even in corner cases.
  bool StillValid(const Candidate& c) const {
    const Symbol& l = symbols_[c.pos];
    if (l.len == 0 || l.next < 0) return false;
    if (m_.mode == MergeMode::kScored) return l.len + symbols_[l.next].len == c.size;
    // The same pair of ids looks up the same merge; only a changed pair needs
    // HF's re-lookup.
    if (l.id == c.left_id && symbols_[l.next].id == c.right_id) return true;
    auto now = Lookup(static_cast<int32_t>(c.pos));
    return now && now->result == c.result;
  }

  void MergeAll() {
    while (!heap_.empty()) {
      const Candidate c = heap_.top();
      heap_.pop();
      if (!StillValid(c)) continue;
      Symbol& l = symbols_[c.pos];
      Symbol& r = symbols_[l.next];
      l.len += r.len;
      l.id = c.result;
      r.len = 0;
      l.next = r.next;
      if (l.next >= 0) symbols_[l.next].prev = static_cast<int32_t>(c.pos);
      TryPush(l.prev);
      TryPush(static_cast<int32_t>(c.pos));
    }
  }

  void Emit(std::vector<int32_t>& out) const {
    for (int32_t i = 0; i >= 0; i = symbols_[i].next) {
      const Symbol& s = symbols_[i];
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      // kScored: a character that is not a piece.
      const std::string_view text = word_.substr(s.start, s.len);
      if (m_.byte_fallback && AllBytesKnown(text)) {
        for (char c : text) out.push_back(m_.byte_ids[static_cast<unsigned char>(c)]);
      } else if (m_.unk_id >= 0) {
        out.push_back(m_.unk_id);
      }
    }
  }

  const TokenizerModel& m_;
  std::string_view word_;
  std::vector<Symbol> symbols_;
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateAfter> heap_;
};

}  // namespace

// Normalized text with no added tokens left in it -> pre-tokenizer -> BPE.
void EncodeNormalizedPiece(const TokenizerModel& m, std::string_view text,
                           std::vector<int32_t>& out) {
  std::vector<std::string_view> words{text};
  for (const SplitRule& rule : m.pre_tokenizer) {
    std::vector<std::string_view> next;
    for (std::string_view w : words) SplitByRule(rule, w, next);
    words = std::move(next);
  }
  for (std::string_view w : words) {
    if (!w.empty()) BpeWord(m, w).Run(out);
  }
}

}  // namespace facet::tokenizer_internal
