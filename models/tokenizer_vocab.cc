// Tokenizer::FromVocab: a vocabulary as GGUF stores it (tokens, scores or
// merges, token types) mapped onto the same model tokenizer.json fills.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "models/tokenizer.h"
#include "models/tokenizer_model.h"

namespace facet {

using tokenizer_internal::TokenizerModel;

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
      // llama.cpp's converter stores Gemma's whitespace pieces with real
      // spaces ("  ") where tokenizer.json has them escaped ("▁▁", matched
      // unnormalized by HF); register the escaped spelling too so literal
      // "▁" runs in the input tokenize as HF does.
      if (spec.escape_whitespace && type == TokenType::kUserDefined &&
          piece.find(' ') != std::string::npos) {
        std::string escaped;
        for (char ch : piece) escaped += ch == ' ' ? std::string("\xe2\x96\x81") : std::string(1, ch);
        m->raw_added.Add(escaped, static_cast<int32_t>(id), AddedTokenMatcher::Options{});
        m->added.try_emplace(escaped, static_cast<int32_t>(id));
      }
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

}  // namespace facet
