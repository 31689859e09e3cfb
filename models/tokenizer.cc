// Encoding, decoding and the GGUF-vocabulary loader. The tokenizer.json loader
// is in tokenizer_hf.cc; both fill tokenizer_internal::TokenizerModel.
//
// Semantics follow Hugging Face `tokenizers` (tokenizer/added_vocabulary.rs,
// models/bpe/{model,word}.rs, decoders/byte_fallback.rs) so that ids match HF
// exactly; the SentencePiece-score merge follows SentencePiece's bpe_model.cc
// as llama.cpp's SPM tokenizer does.
#include "models/tokenizer.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "models/tokenizer_model.h"

namespace facet {
namespace tokenizer_internal {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsAsciiWordChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         c == '_' || static_cast<unsigned char>(c) >= 0x80;
}

// Length of the UTF-8 sequence starting at `s[i]` if it is complete and valid
// (Rust's rules: no overlongs, surrogates or code points above U+10FFFF); 0 if it
// is a valid but truncated prefix; -1 if it is invalid.
int Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return 0;
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
  }
  return n;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = Utf8SequenceLength(s, i);
    if (n <= 0) return false;
    i += n;
  }
  return true;
}

// Byte length of the character at `s[i]`; a byte that does not start a valid
// character counts as one character (HF only ever sees valid UTF-8; such bytes
// then go to byte fallback).
size_t CharLength(std::string_view s, size_t i) {
  const int n = Utf8SequenceLength(s, i);
  return n > 0 ? static_cast<size_t>(n) : 1;
}

void ReplaceAll(std::string& s, std::string_view pattern, std::string_view content) {
  if (pattern.empty() || s.find(pattern) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(pattern, pos)) != std::string::npos; pos = hit + pattern.size()) {
    out.append(s, pos, hit - pos);
    out.append(content);
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// HF decoders/strip.rs: removes up to `start` leading and `stop` trailing copies
// of the character `content`.
std::string StripChars(std::string_view s, std::string_view content, int start, int stop) {
  if (content.empty()) return std::string(s);
  for (int k = 0; k < start && s.substr(0, content.size()) == content; ++k) {
    s.remove_prefix(content.size());
  }
  for (int k = 0; k < stop && s.size() >= content.size() &&
                  s.substr(s.size() - content.size()) == content;
       ++k) {
    s.remove_suffix(content.size());
  }
  return std::string(s);
}

}  // namespace

int ParseByteToken(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

std::string Normalize(const std::vector<NormalizerStep>& steps, std::string_view text) {
  std::string s(text);
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kReplace:
        ReplaceAll(s, step.pattern, step.content);
        break;
      case NormalizerStep::Kind::kPrepend:
        // HF prepends only to non-empty strings.
        if (!s.empty()) s.insert(0, step.content);
        break;
    }
  }
  return s;
}

void TokenizerModel::SetPiece(int32_t id, std::string piece, uint8_t piece_flags) {
  const size_t n = static_cast<size_t>(id) + 1;
  if (pieces.size() < n) {
    pieces.resize(n);
    flags.resize(n, 0);
  }
  pieces[id] = std::move(piece);
  flags[id] = piece_flags | kFlagPresent;
}

std::optional<int32_t> TokenizerModel::Lookup(std::string_view piece) const {
  if (auto it = added.find(absl::string_view(piece.data(), piece.size())); it != added.end()) {
    return it->second;
  }
  if (auto it = vocab.find(absl::string_view(piece.data(), piece.size())); it != vocab.end()) {
    return it->second;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Added tokens.

void AddedTokenMatcher::Add(std::string_view content, int32_t id, Options options) {
  if (content.empty()) return;
  int32_t node = 0;
  for (char c : content) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
    auto [it, inserted] = edges_.try_emplace(key, static_cast<int32_t>(terminal_.size()));
    if (inserted) terminal_.push_back(-1);
    node = it->second;
  }
  terminal_[node] = static_cast<int32_t>(entries_.size());
  entries_.push_back({id, options});
  first_bytes_.set(static_cast<unsigned char>(content[0]));
}

std::optional<std::pair<size_t, int32_t>> AddedTokenMatcher::LongestAt(std::string_view text,
                                                                       size_t pos) const {
  std::optional<std::pair<size_t, int32_t>> best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]);
    auto it = edges_.find(key);
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) best = std::make_pair(i + 1, terminal_[node]);
  }
  return best;
}

std::optional<AddedTokenMatcher::Match> AddedTokenMatcher::FindNext(std::string_view text,
                                                                    size_t from) const {
  if (entries_.empty()) return std::nullopt;
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!first_bytes_.test(static_cast<unsigned char>(text[pos]))) continue;
    auto hit = LongestAt(text, pos);
    if (!hit) continue;
    const Entry& entry = entries_[hit->second];
    size_t begin = pos, end = hit->first;
    // HF tests word boundaries with Unicode alphanumerics; ASCII plus "any
    // non-ASCII byte is a word character" is the approximation used here.
    if (entry.options.single_word &&
        ((begin > 0 && IsAsciiWordChar(text[begin - 1])) ||
         (end < text.size() && IsAsciiWordChar(text[end])))) {
      continue;
    }
    if (entry.options.lstrip) {
      while (begin > from && IsAsciiSpace(text[begin - 1])) --begin;
    }
    if (entry.options.rstrip) {
      while (end < text.size() && IsAsciiSpace(text[end])) ++end;
    }
    return Match{begin, end, entry.id};
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Pre-tokenizer: HF normalizer.rs `split` with a literal pattern.

namespace {

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

// ---------------------------------------------------------------------------
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

// Calls on_text(segment) for text between matches and on_token(id) for each
// match of `matcher`, in order.
template <typename OnText, typename OnToken>
void SplitOnAddedTokens(const AddedTokenMatcher& matcher, std::string_view text, OnText on_text,
                        OnToken on_token) {
  size_t pos = 0;
  while (pos < text.size()) {
    auto match = matcher.FindNext(text, pos);
    const size_t text_end = match ? match->begin : text.size();
    if (text_end > pos) on_text(text.substr(pos, text_end - pos));
    if (!match) break;
    on_token(match->id);
    pos = match->end;
  }
}

}  // namespace
}  // namespace tokenizer_internal

// ---------------------------------------------------------------------------
// Tokenizer.

using tokenizer_internal::kFlagPresent;
using tokenizer_internal::kFlagSpecial;
using tokenizer_internal::TokenizerModel;

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  const TokenizerModel& m = *model_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos) out.insert(out.end(), m.prefix_ids.begin(), m.prefix_ids.end());
  auto push_id = [&](int32_t id) { out.push_back(id); };
  tokenizer_internal::SplitOnAddedTokens(
      m.raw_added, text,
      [&](std::string_view segment) {
        // HF normalizes each segment between added tokens separately.
        const std::string normalized = tokenizer_internal::Normalize(m.normalizer, segment);
        tokenizer_internal::SplitOnAddedTokens(
            m.normalized_added, normalized,
            [&](std::string_view piece) {
              tokenizer_internal::EncodeNormalizedPiece(m, piece, out);
            },
            push_id);
      },
      push_id);
  if (add_bos) out.insert(out.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  const TokenizerModel& m = *model_;
  std::string out;
  std::string bytes;  // a run of byte-fallback tokens
  auto flush_bytes = [&] {
    if (bytes.empty()) return;
    // HF's ByteFallback decoder: a run that is not valid UTF-8 as a whole
    // becomes one U+FFFD per byte.
    if (tokenizer_internal::IsValidUtf8(bytes)) {
      out += bytes;
    } else {
      for (size_t k = 0; k < bytes.size(); ++k) out += tokenizer_internal::kReplacementChar;
    }
    bytes.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !(m.flags[id] & kFlagPresent)) continue;
    if (skip_special && (m.flags[id] & kFlagSpecial)) continue;
    if (m.byte_value[id] >= 0) {
      bytes.push_back(static_cast<char>(m.byte_value[id]));
      continue;
    }
    flush_bytes();
    out += m.decoded[id];
  }
  flush_bytes();
  if (m.decoder.strip_start > 0) {
    return tokenizer_internal::StripChars(out, m.decoder.strip_content, m.decoder.strip_start, 0);
  }
  return out;
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return model_->pieces[id];
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view piece) const {
  return model_->Lookup(piece);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(model_->pieces.size()); }
int32_t Tokenizer::bos_id() const { return model_->bos_id; }
int32_t Tokenizer::eos_id() const { return model_->eos_id; }
int32_t Tokenizer::pad_id() const { return model_->pad_id; }
int32_t Tokenizer::unk_id() const { return model_->unk_id; }

bool Tokenizer::adds_bos() const {
  return !model_->prefix_ids.empty() && model_->prefix_ids.front() == model_->bos_id;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && (model_->flags[id] & kFlagSpecial);
}

absl::Status Tokenizer::CheckIds(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size() || !(model_->flags[id] & kFlagPresent)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " at position ", i, " is not in the vocabulary of ",
                       model_->source, " (", vocab_size(), " ids)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tokenizer> Tokenizer::Finish(std::unique_ptr<TokenizerModel> m) {
  const size_t n = m->pieces.size();
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(m->source, ": empty vocabulary"));
  for (int32_t* id : {&m->bos_id, &m->eos_id, &m->pad_id, &m->unk_id}) {
    if (*id >= static_cast<int32_t>(n) || (*id >= 0 && !(m->flags[*id] & kFlagPresent))) {
      return absl::InvalidArgumentError(
          absl::StrCat(m->source, ": special token id ", *id, " is not in the vocabulary"));
    }
  }
  for (int c = 0; c < 128; ++c) {
    auto it = m->vocab.find(std::string(1, static_cast<char>(c)));
    m->ascii_ids[c] = it == m->vocab.end() ? -1 : it->second;
  }
  m->decoded.assign(n, std::string());
  m->byte_value.assign(n, -1);
  for (size_t id = 0; id < n; ++id) {
    if (!(m->flags[id] & kFlagPresent)) continue;
    std::string s = m->pieces[id];
    for (const auto& step : m->decoder.token_steps) {
      if (step.kind == tokenizer_internal::DecoderSpec::TokenStep::Kind::kReplace) {
        tokenizer_internal::ReplaceAll(s, step.pattern, step.content);
      } else {
        s = tokenizer_internal::StripChars(s, step.content, step.start, step.stop);
      }
    }
    if (m->decoder.byte_fallback) {
      m->byte_value[id] = static_cast<int16_t>(tokenizer_internal::ParseByteToken(s));
    }
    m->decoded[id] = std::move(s);
  }
  return Tokenizer(std::shared_ptr<const TokenizerModel>(std::move(m)));
}

// ---------------------------------------------------------------------------
// GGUF vocabulary.

absl::StatusOr<Tokenizer> Tokenizer::FromVocab(const VocabSpec& spec) {
  using tokenizer_internal::AddedTokenMatcher;
  using tokenizer_internal::NormalizerStep;
  const std::string& src = spec.source_name;
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(src, ": no tokens"));
  if (n > (1u << 30)) return absl::InvalidArgumentError(absl::StrCat(src, ": too many tokens"));
  if (!spec.scores.empty() && spec.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", spec.scores.size(),
                                                   " scores for ", n, " tokens"));
  }
  if (!spec.token_types.empty() && spec.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", spec.token_types.size(),
                                                   " token types for ", n, " tokens"));
  }
  if (spec.merges.empty() && spec.scores.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": a BPE vocabulary needs either merges or scores"));
  }

  auto m = std::make_unique<TokenizerModel>();
  m->source = src;
  m->byte_fallback = true;
  m->fuse_unk = false;
  for (size_t id = 0; id < n; ++id) {
    const TokenType type = spec.token_types.empty() ? TokenType::kNormal : spec.token_types[id];
    const auto type_value = static_cast<int32_t>(type);
    if (type_value < 1 || type_value > 6) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": token ", id, " has token type ",
                                                     type_value, " (expected 1..6)"));
    }
    const std::string& piece = spec.tokens[id];
    uint8_t flags = 0;
    if (type == TokenType::kControl || type == TokenType::kUnknown) {
      flags |= tokenizer_internal::kFlagSpecial;
    }
    // SentencePiece segments text into normal and user-defined pieces only.
    if (type == TokenType::kNormal || type == TokenType::kUserDefined) {
      flags |= tokenizer_internal::kFlagMergeable;
    }
    m->SetPiece(static_cast<int32_t>(id), piece, flags);
    m->vocab.try_emplace(piece, static_cast<int32_t>(id));
    if (type == TokenType::kControl || type == TokenType::kUserDefined ||
        type == TokenType::kUnknown) {
      // Matched in the raw text like HF's added tokens (llama.cpp does the same
      // when parsing special tokens).
      m->raw_added.Add(piece, static_cast<int32_t>(id), AddedTokenMatcher::Options{});
      m->added.try_emplace(piece, static_cast<int32_t>(id));
    }
    if (type == TokenType::kByte) {
      const int b = tokenizer_internal::ParseByteToken(piece);
      if (b < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            src, ": byte token ", id, " is \"", piece, "\", expected the form <0xXX>"));
      }
      m->byte_ids[b] = static_cast<int32_t>(id);
    }
  }

  if (!spec.merges.empty()) {
    m->mode = tokenizer_internal::MergeMode::kRanked;
    m->merges.reserve(spec.merges.size());
    for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
      const std::string& merge = spec.merges[rank];
      // As llama.cpp: the separator is the first space after the first byte, so
      // a left piece may itself be a space.
      const size_t sep = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
      if (sep == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(src, ": merge ", rank, " \"", merge, "\" is not \"left right\""));
      }
      const std::string left = merge.substr(0, sep), right = merge.substr(sep + 1);
      auto l = m->vocab.find(left), r = m->vocab.find(right),
           res = m->vocab.find(left + right);
      if (l == m->vocab.end() || r == m->vocab.end() || res == m->vocab.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            src, ": merge ", rank, " \"", merge, "\" uses or makes a piece not in the vocabulary"));
      }
      m->merges.try_emplace(tokenizer_internal::PairKey(l->second, r->second),
                            tokenizer_internal::MergeTarget{static_cast<int32_t>(rank), res->second});
    }
  } else {
    m->mode = tokenizer_internal::MergeMode::kScored;
    m->scores = spec.scores;
  }

  if (spec.add_space_prefix) {
    m->normalizer.push_back({NormalizerStep::Kind::kPrepend, "", "\xE2\x96\x81"});
  }
  if (spec.escape_whitespace) {
    m->normalizer.push_back({NormalizerStep::Kind::kReplace, " ", "\xE2\x96\x81"});
    m->decoder.token_steps.push_back(
        {tokenizer_internal::DecoderSpec::TokenStep::Kind::kReplace, "\xE2\x96\x81", " "});
  }
  m->decoder.byte_fallback = true;
  if (spec.add_space_prefix) {
    m->decoder.strip_content.assign(1, ' ');  // not = " ": GCC 12 -Wrestrict false positive
    m->decoder.strip_start = 1;
  }

  for (int32_t id : {spec.bos_id, spec.eos_id, spec.pad_id, spec.unk_id}) {
    if (id < -1 || id >= static_cast<int32_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(src, ": special token id ", id, " is outside [0, ", n, ")"));
    }
  }
  m->bos_id = spec.bos_id;
  m->eos_id = spec.eos_id;
  m->pad_id = spec.pad_id;
  m->unk_id = spec.unk_id;
  if (spec.add_bos) {
    if (spec.bos_id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": add_bos is set but there is no BOS"));
    }
    m->prefix_ids.push_back(spec.bos_id);
  }
  if (spec.add_eos) {
    if (spec.eos_id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": add_eos is set but there is no EOS"));
    }
    m->suffix_ids.push_back(spec.eos_id);
  }
  return Finish(std::move(m));
}

// ---------------------------------------------------------------------------
// Streaming detokenization.

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : model_(tokenizer.model_),
      skip_special_(skip_special),
      strip_budget_(model_->decoder.strip_start) {}

std::string IncrementalDetokenizer::Emit(std::string text) {
  const TokenizerModel& m = *model_;
  // The decoder's leading Strip applies to the start of the whole output, so it
  // consumes from the first emitted text until something else appears.
  const std::string& c = m.decoder.strip_content;
  while (strip_budget_ > 0 && !c.empty() && text.compare(0, c.size(), c) == 0) {
    text.erase(0, c.size());
    --strip_budget_;
  }
  if (!text.empty()) strip_budget_ = 0;
  return text;
}

std::string IncrementalDetokenizer::Push(int32_t id) {
  const TokenizerModel& m = *model_;
  if (id < 0 || static_cast<size_t>(id) >= m.pieces.size() || !(m.flags[id] & kFlagPresent)) {
    return {};
  }
  if (skip_special_ && (m.flags[id] & kFlagSpecial)) return {};
  if (m.byte_value[id] < 0) {
    std::string out = Flush();
    out += Emit(m.decoded[id]);
    return out;
  }
  pending_.push_back(static_cast<char>(m.byte_value[id]));
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int n = tokenizer_internal::Utf8SequenceLength(pending_, i);
    if (n == 0) break;  // wait for the rest of this character
    if (n < 0) {
      out += tokenizer_internal::kReplacementChar;
      ++i;
    } else {
      out.append(pending_, i, n);
      i += n;
    }
  }
  pending_.erase(0, i);
  return Emit(std::move(out));
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  for (size_t k = 0; k < pending_.size(); ++k) out += tokenizer_internal::kReplacementChar;
  pending_.clear();
  return Emit(std::move(out));
}

}  // namespace facet
