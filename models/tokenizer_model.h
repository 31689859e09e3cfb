// Internal to the tokenizer: the immutable model both loaders fill
// (tokenizer_hf.cc from tokenizer.json, tokenizer_vocab.cc from a GGUF
// vocabulary) and Tokenizer::Encode / Decode run on. Not part of the public API.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace facet::tokenizer_internal {

// Tokens matched verbatim in the text before BPE (HF "added tokens", GGUF
// control / user-defined pieces). A byte trie gives leftmost-longest matches in
// one pass, which is what HF's Aho-Corasick with LeftmostLongest produces.
class AddedTokenMatcher {
 public:
  struct Options {
    bool lstrip = false;
    bool rstrip = false;
    bool single_word = false;
  };
  struct Match {
    size_t begin;  // including whitespace absorbed by lstrip/rstrip
    size_t end;
    int32_t id;
  };

  void Add(std::string_view content, int32_t id, Options options);
  bool empty() const { return entries_.empty(); }
  // The leftmost-longest match starting at or after `from`.
  std::optional<Match> FindNext(std::string_view text, size_t from) const;

 private:
  struct Entry {
    int32_t id;
    Options options;
  };
  // Longest match starting exactly at `pos`, as (end, entry index).
  std::optional<std::pair<size_t, int32_t>> LongestAt(std::string_view text,
                                                      size_t pos) const;

  absl::flat_hash_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child
  std::vector<int32_t> terminal_{-1};              // node -> entry index or -1
  std::vector<Entry> entries_;
  std::bitset<256> first_bytes_;
};

struct NormalizerStep {
  enum class Kind { kReplace, kPrepend };
  Kind kind;
  std::string pattern;  // kReplace only
  std::string content;
};

// HF pre_tokenizer "Split" with a literal pattern and invert=false.
struct SplitRule {
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  std::string pattern;
  Behavior behavior;
};

// The decoder chains we support, in the order HF applies them:
//   per-token Replace/Strip steps, ByteFallback, Fuse, then a leading Strip
//   on the joined text. (Gemma: Replace "▁"->" ", ByteFallback, Fuse.)
struct DecoderSpec {
  struct TokenStep {
    enum class Kind { kReplace, kStrip };
    Kind kind;
    std::string pattern;  // kReplace
    std::string content;  // kReplace: replacement; kStrip: the character
    int start = 0;        // kStrip
    int stop = 0;
  };
  std::vector<TokenStep> token_steps;
  bool byte_fallback = false;
  std::string strip_content;  // one UTF-8 character, stripped after Fuse
  int strip_start = 0;        // how many of them, at most
};

enum class MergeMode {
  kRanked,  // explicit merge list (HF BPE, GGUF merges)
  kScored,  // SentencePiece: merge if the concatenation is a piece, best score first
};

struct MergeTarget {
  int32_t rank;
  int32_t result;
};

inline uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

inline constexpr uint8_t kFlagSpecial = 1;    // dropped by Decode(skip_special)
inline constexpr uint8_t kFlagMergeable = 2;  // a valid BPE result in kScored mode
inline constexpr uint8_t kFlagPresent = 4;    // the id has a piece (not a hole)

struct TokenizerModel {
  std::string source;  // file name or GGUF name, for error messages

  // Per id.
  std::vector<std::string> pieces;
  std::vector<uint8_t> flags;
  std::vector<std::string> decoded;  // piece after the decoder's per-token steps
  std::vector<int16_t> byte_value;   // byte of a "<0xXX>" token after those steps, or -1

  // Pieces the BPE may produce (HF: the model vocab, without added tokens).
  absl::flat_hash_map<std::string, int32_t> vocab;
  // Added tokens, consulted first by TokenToId as HF does.
  absl::flat_hash_map<std::string, int32_t> added;

  MergeMode mode = MergeMode::kRanked;
  absl::flat_hash_map<uint64_t, MergeTarget> merges;  // PairKey -> target
  std::vector<float> scores;                          // kScored
  std::array<int32_t, 256> byte_ids;                  // "<0xXX>" ids, -1 if absent
  std::array<int32_t, 128> ascii_ids;                 // vocab id of each ASCII character
  bool byte_fallback = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;

  std::vector<NormalizerStep> normalizer;
  std::vector<SplitRule> pre_tokenizer;
  AddedTokenMatcher raw_added;         // matched in the text before normalizing
  AddedTokenMatcher normalized_added;  // matched in the normalized text
  std::vector<int32_t> prefix_ids;     // added by Encode(..., add_bos=true)
  std::vector<int32_t> suffix_ids;
  DecoderSpec decoder;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t pad_id = -1;

  TokenizerModel() {
    byte_ids.fill(-1);
    ascii_ids.fill(-1);
  }

  // Sets pieces[id] (growing the tables), for use by the loaders.
  void SetPiece(int32_t id, std::string piece, uint8_t flags);
  std::optional<int32_t> Lookup(std::string_view piece) const;
};

// Length of the UTF-8 sequence starting at `s[i]` if it is complete and valid
// (Rust's rules: no overlongs, surrogates or code points above U+10FFFF); 0 if it
// is a valid but truncated prefix; -1 if it is invalid.
int Utf8SequenceLength(std::string_view s, size_t i);

// Appends the ids of normalized text that holds no added tokens:
// pre-tokenizer, then BPE with byte fallback on each word (tokenizer_bpe.cc).
void EncodeNormalizedPiece(const TokenizerModel& m, std::string_view text,
                           std::vector<int32_t>& out);

// Applies the normalizer steps to `text`.
std::string Normalize(const std::vector<NormalizerStep>& steps, std::string_view text);

// Parses "<0xXX>" (as HF's ByteFallback decoder does); -1 if not of that form.
int ParseByteToken(std::string_view piece);

}  // namespace facet::tokenizer_internal
