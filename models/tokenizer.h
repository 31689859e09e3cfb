// Gemma tokenizer: a byte-fallback BPE that reproduces the Hugging Face
// `tokenizers` library on a tokenizer.json (Gemma 3: ids match HF exactly, see
// tests/models/tokenizer_test.cc) and also loads a GGUF vocabulary.
//
// Both loaders fill one immutable model; encoding is
//   added tokens (matched in the raw text, leftmost-longest, as HF does)
//   -> normalizer (Prepend / Replace " " -> "▁")
//   -> pre-tokenizer (string Split)
//   -> BPE (merge ranks from tokenizer.json or GGUF merges, or SentencePiece
//      piece scores) with byte fallback
//   -> BOS/EOS template.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace facet {

namespace tokenizer_internal {
struct TokenizerModel;
}  // namespace tokenizer_internal

// GGUF `tokenizer.ggml.token_type` values.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// A vocabulary as GGUF stores it. Exactly one of `merges` / `scores` drives the
// BPE: merges (rank = position, lower merges first) take precedence; otherwise
// adjacent pieces merge when their concatenation is a normal or user-defined
// piece, highest score first (SentencePiece BPE).
struct VocabSpec {
  std::vector<std::string> tokens;
  std::vector<float> scores;          // empty or one per token
  std::vector<std::string> merges;    // "left right" as in tokenizer.ggml.merges
  std::vector<TokenType> token_types; // empty (all normal) or one per token
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t pad_id = -1;
  int32_t unk_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool escape_whitespace = true;  // " " -> "▁" before BPE, back when decoding
  bool add_space_prefix = false;  // SentencePiece dummy prefix ("▁" prepended)
  std::string source_name = "vocabulary";  // used in error messages
};

class Tokenizer {
 public:
  // Reads an HF tokenizer.json. A tokenizer_config.json in the same folder, if
  // present, supplies bos/eos/pad tokens and add_bos_token/add_eos_token as
  // transformers applies them; without it, tokens named <bos>/<eos>/<pad> are
  // used and the post_processor template decides what add_bos adds.
  static absl::StatusOr<Tokenizer> FromJsonFile(const std::string& path);
  // `config_json` is the optional tokenizer_config.json text.
  static absl::StatusOr<Tokenizer> FromJsonString(std::string_view json,
                                                  std::string_view source_name,
                                                  std::string_view config_json = {});
  static absl::StatusOr<Tokenizer> FromVocab(const VocabSpec& spec);

  // Thread-safe: encoding and decoding only read the shared, immutable model.
  //
  // add_bos = HF's add_special_tokens: applies the BOS (and EOS, if the
  // template has one) the tokenizer is configured to add.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  // Unknown ids are dropped (as HF does); use CheckIds to reject them.
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;

  // The raw piece ("▁the", "<0x0A>", "<bos>"); empty for an unknown id.
  std::string_view TokenText(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view piece) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the tokenizer has none
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  // Whether Encode(text, true) prepends bos_id().
  bool adds_bos() const;
  // Special tokens are the ones Decode(..., skip_special=true) drops.
  bool IsSpecial(int32_t id) const;
  // INVALID_ARGUMENT naming the first id outside the vocabulary.
  absl::Status CheckIds(std::span<const int32_t> ids) const;

 private:
  friend class IncrementalDetokenizer;
  explicit Tokenizer(std::shared_ptr<const tokenizer_internal::TokenizerModel> m)
      : model_(std::move(m)) {}
  static absl::StatusOr<Tokenizer> Finish(
      std::unique_ptr<tokenizer_internal::TokenizerModel> m);

  // Shared so that copies are cheap; the model never changes after loading.
  std::shared_ptr<const tokenizer_internal::TokenizerModel> model_;
};

// Turns a stream of generated ids into text without ever splitting a UTF-8
// character: bytes of byte-fallback tokens are held until their character is
// complete. Concatenating every Push() and the final Flush() equals
// Decode(ids, skip_special) whenever the byte-fallback runs are valid UTF-8.
// (For an invalid run HF's Decode replaces every byte of the run with U+FFFD;
// this class replaces only the invalid bytes, because characters already
// streamed cannot be taken back.) Keeps the tokenizer's tables alive itself.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = true);

  // Newly completed text for `id` (possibly empty).
  std::string Push(int32_t id);
  // Whatever is still held back; incomplete bytes become U+FFFD, one per byte.
  std::string Flush();

 private:
  std::string Emit(std::string text);

  std::shared_ptr<const tokenizer_internal::TokenizerModel> model_;
  bool skip_special_;
  std::string pending_;  // leading bytes of an incomplete UTF-8 character
  int strip_budget_;     // leading characters the decoder may still strip
};

}  // namespace facet
