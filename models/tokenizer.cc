// Encoding (added tokens, normalizer; the BPE is in tokenizer_bpe.cc),
// decoding and streaming detokenization. Loaders: tokenizer_hf.cc
// (tokenizer.json) and tokenizer_vocab.cc (GGUF vocabulary).
//
// Semantics follow Hugging Face `tokenizers` (tokenizer/added_vocabulary.rs,
// normalizers, decoders/byte_fallback.rs and strip.rs) so that ids and text
// match HF exactly.
#include "models/tokenizer.h"

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

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = Utf8SequenceLength(s, i);
    if (n <= 0) return false;
    i += n;
  }
  return true;
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

namespace {

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
