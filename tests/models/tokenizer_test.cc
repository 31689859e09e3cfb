// Tokenizer tests. Gemma 3 expectations come from files HF `tokenizers` wrote
// (shared/data/tokenizers/gemma3/golden-encodings.jsonl); the small-vocabulary
// expectations are worked out by hand in the comments next to them.
#include "models/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <unistd.h>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/chat_template.h"

namespace facet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kGemma3Dir = std::string(FACET_SHARED_DIR) + "/data/tokenizers/gemma3";

struct GoldenLine {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::vector<GoldenLine> ReadGolden() {
  std::vector<GoldenLine> lines;
  std::ifstream in(kGemma3Dir + "/golden-encodings.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    lines.push_back({j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>(),
                     j["decoded"].get<std::string>()});
  }
  return lines;
}

bool IsValidUtf8(const std::string& s) {
  // Independent of the tokenizer's own validator: round-trip through
  // std::mbrtowc is locale dependent, so check the structure directly.
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

std::string Streamed(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special,
                     bool* all_valid = nullptr) {
  IncrementalDetokenizer detok(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = detok.Push(id);
    if (all_valid && !IsValidUtf8(piece)) *all_valid = false;
    out += piece;
  }
  return out + detok.Flush();
}

class TokenizerGemma3 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kGemma3Dir + "/tokenizer.json")) return;
    const auto t0 = std::chrono::steady_clock::now();
    auto tok = Tokenizer::FromJsonFile(kGemma3Dir + "/tokenizer.json");
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(tok.ok()) << tok.status();
    std::printf("[ info ] loaded Gemma 3 tokenizer.json in %.2f s\n", s);
    tok_ = new Tokenizer(*std::move(tok));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << "no Gemma 3 tokenizer under " << kGemma3Dir;
  }
  static const Tokenizer& tok() { return *tok_; }

  static Tokenizer* tok_;
};
Tokenizer* TokenizerGemma3::tok_ = nullptr;

TEST_F(TokenizerGemma3, EveryGoldenLineEncodesAndDecodesExactly) {
  const auto golden = ReadGolden();
  ASSERT_EQ(golden.size(), 172u);
  int failures = 0;
  for (size_t i = 0; i < golden.size(); ++i) {
    const GoldenLine& g = golden[i];
    const auto ids = tok().Encode(g.text, /*add_bos=*/true);
    EXPECT_EQ(ids, g.ids) << "line " << i << ": " << nlohmann::json(g.text).dump();
    EXPECT_EQ(tok().Decode(g.ids, /*skip_special=*/false), g.decoded) << "line " << i;
    // Skipping special tokens drops exactly the leading "<bos>".
    ASSERT_EQ(g.decoded.rfind("<bos>", 0), 0u) << "line " << i;
    EXPECT_EQ(tok().Decode(g.ids, /*skip_special=*/true), g.decoded.substr(5)) << "line " << i;
    if (ids != g.ids && ++failures > 5) break;
  }
}

// The GGUF path on a real vocabulary: Gemma 3's pieces and merges as a
// converter would write them ("left right" merges, token types from the added
// tokens) must reproduce HF's ids too.
TEST_F(TokenizerGemma3, FromVocabWithTheSameMergesMatchesGolden) {
  std::ifstream in(kGemma3Dir + "/tokenizer.json");
  const auto j = nlohmann::json::parse(in);
  VocabSpec spec;
  spec.source_name = "gemma3 as GGUF";
  spec.tokens.resize(tok().vocab_size());
  spec.token_types.assign(spec.tokens.size(), TokenType::kNormal);
  for (const auto& [piece, id] : j["model"]["vocab"].items()) {
    spec.tokens[id.get<int32_t>()] = piece;
    if (piece.size() == 6 && piece.rfind("<0x", 0) == 0) spec.token_types[id.get<int32_t>()] = TokenType::kByte;
  }
  for (const auto& t : j["added_tokens"]) {
    const auto id = t["id"].get<int32_t>();
    spec.tokens[id] = t["content"].get<std::string>();
    spec.token_types[id] = !t["special"].get<bool>()           ? TokenType::kUserDefined
                           : spec.tokens[id] == "<unk>"       ? TokenType::kUnknown
                                                              : TokenType::kControl;
  }
  for (const auto& m : j["model"]["merges"]) {
    spec.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  spec.bos_id = 2;
  spec.eos_id = 1;
  spec.pad_id = 0;
  spec.unk_id = 3;
  spec.add_bos = true;
  auto gguf = Tokenizer::FromVocab(spec);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  for (const GoldenLine& g : ReadGolden()) {
    EXPECT_EQ(gguf->Encode(g.text, true), g.ids) << nlohmann::json(g.text).dump();
    EXPECT_EQ(gguf->Decode(g.ids, false), g.decoded);
  }
}

TEST_F(TokenizerGemma3, DetokenizerEqualsDecodeOnEveryGoldenLine) {
  for (const GoldenLine& g : ReadGolden()) {
    bool valid = true;
    EXPECT_EQ(Streamed(tok(), g.ids, false, &valid), tok().Decode(g.ids, false));
    EXPECT_EQ(Streamed(tok(), g.ids, true, &valid), tok().Decode(g.ids, true));
    EXPECT_TRUE(valid) << "a Push() returned part of a character for "
                       << nlohmann::json(g.text).dump();
  }
}

TEST_F(TokenizerGemma3, SpecialTokensFollowSpecAndConfig) {
  // Spec §8.1 ids; eos is tokenizer_config.json's eos_token (<end_of_turn>).
  EXPECT_EQ(tok().bos_id(), 2);
  EXPECT_EQ(tok().pad_id(), 0);
  EXPECT_EQ(tok().eos_id(), 106);
  EXPECT_TRUE(tok().adds_bos());
  EXPECT_EQ(tok().vocab_size(), 262145);  // 262144 pieces + <image_soft_token>
  EXPECT_EQ(tok().TokenText(2), "<bos>");
  EXPECT_EQ(tok().TokenToId("<start_of_turn>"), 105);
  EXPECT_EQ(tok().TokenToId("<end_of_turn>"), 106);
  EXPECT_EQ(tok().TokenToId("<image_soft_token>"), 262144);
  EXPECT_EQ(tok().TokenToId("no such piece"), std::nullopt);
  EXPECT_TRUE(tok().IsSpecial(105));
  EXPECT_TRUE(tok().IsSpecial(262144));
  EXPECT_FALSE(tok().IsSpecial(*tok().TokenToId("<unused0>")));  // added but not special
  EXPECT_FALSE(tok().IsSpecial(*tok().TokenToId("the")));
}

TEST_F(TokenizerGemma3, AddedTokensAreMatchedLeftmostLongestInRawText) {
  const int32_t a = *tok().TokenToId("a"), b = *tok().TokenToId("b");
  const int32_t nl3 = *tok().TokenToId("\n\n\n");
  EXPECT_THAT(tok().Encode("a\n\n\nb", false), ElementsAre(a, nl3, b));
  // The longest newline token is 31 newlines; 32 leave one over.
  const int32_t nl31 = *tok().TokenToId(std::string(31, '\n'));
  const int32_t nl1 = *tok().TokenToId("\n");
  EXPECT_THAT(tok().Encode(std::string(32, '\n'), false), ElementsAre(nl31, nl1));
  // Special tokens inside text, with no space around them.
  const auto ids = tok().Encode("<start_of_turn>user\nHi<end_of_turn>", false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 105);
  EXPECT_EQ(ids.back(), 106);
  EXPECT_EQ(tok().Decode(ids, true), "user\nHi");
  EXPECT_EQ(tok().Decode(ids, false), "<start_of_turn>user\nHi<end_of_turn>");
}

TEST_F(TokenizerGemma3, EncodesARenderedChatWithOneBos) {
  const std::vector<ChatMessage> chat = {ChatMessage::Text("user", "Hello!")};
  auto text = RenderChat(ChatFormat::kGemma3, chat, /*add_generation_prompt=*/true);
  ASSERT_TRUE(text.ok()) << text.status();
  const auto ids = tok().Encode(*text, /*add_bos=*/false);
  // <bos> <start_of_turn> user \n Hello ! <end_of_turn> \n <start_of_turn> model \n
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 105);
  EXPECT_EQ(ids[2], *tok().TokenToId("user"));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 105), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 106), 1);
  EXPECT_EQ(tok().Decode(ids, false), *text);
}

TEST_F(TokenizerGemma3, CheckIdsNamesTheBadId) {
  const std::vector<int32_t> good = {2, 105, 262144};
  EXPECT_TRUE(tok().CheckIds(good).ok());
  const std::vector<int32_t> bad = {2, 262145};
  absl::Status s = tok().CheckIds(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("262145"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("position 1"));
  const std::vector<int32_t> negative = {-1};
  EXPECT_FALSE(tok().CheckIds(negative).ok());
  // Decode drops unknown ids rather than failing, as HF does.
  const std::vector<int32_t> with_bad = {262145, *tok().TokenToId("a")};
  EXPECT_EQ(tok().Decode(with_bad, false), "a");
}

TEST_F(TokenizerGemma3, StreamsEmojiAndCjkSplitIntoByteTokens) {
  // U+E0DA (private use) is not a Gemma piece, so it is encoded as three byte
  // tokens; the streamer must hold the first two back.
  const auto ids = tok().Encode("\xEE\x83\x9A\xE4\xB8\xAD", false);  // U+E0DA, 中
  ASSERT_GE(ids.size(), 3u);
  IncrementalDetokenizer detok(tok());
  EXPECT_EQ(detok.Push(ids[0]), "");
  EXPECT_EQ(detok.Push(ids[1]), "");
  EXPECT_EQ(detok.Push(ids[2]), "\xEE\x83\x9A");
  std::string rest;
  for (size_t i = 3; i < ids.size(); ++i) rest += detok.Push(ids[i]);
  EXPECT_EQ(rest + detok.Flush(), "\xE4\xB8\xAD");

  // A 4-byte emoji built by hand from byte tokens, then cut short.
  const std::vector<int32_t> emoji = {*tok().TokenToId("<0xF0>"), *tok().TokenToId("<0x9F>"),
                                      *tok().TokenToId("<0x98>"), *tok().TokenToId("<0x80>")};
  EXPECT_EQ(Streamed(tok(), emoji, true), "\xF0\x9F\x98\x80");
  EXPECT_EQ(tok().Decode(emoji, true), "\xF0\x9F\x98\x80");
  IncrementalDetokenizer cut(tok());
  EXPECT_EQ(cut.Push(emoji[0]), "");
  EXPECT_EQ(cut.Push(emoji[1]), "");
  EXPECT_EQ(cut.Flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  const std::vector<int32_t> two(emoji.begin(), emoji.begin() + 2);
  EXPECT_EQ(tok().Decode(two, true), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(TokenizerGemma3, EncodesOneMegabyteQuickly) {
  // Throughput is printed, not asserted; the round trip is.
  std::string prose;
  // Literal "▁" decodes to a space (HF does the same), so leave those lines out
  // of the round trip.
  for (const GoldenLine& g : ReadGolden()) {
    if (g.text.find("\xE2\x96\x81") == std::string::npos) prose += g.text + "\n";
  }
  std::string text;
  while (text.size() < (1 << 20)) text += prose;
  // A 1 MB run with no spaces at all: CJK characters.
  std::mt19937 rng(7);
  std::string cjk;
  while (cjk.size() < (1 << 20)) {
    const uint32_t cp = 0x4E00 + rng() % 0x5000;
    cjk += static_cast<char>(0xE0 | (cp >> 12));
    cjk += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    cjk += static_cast<char>(0x80 | (cp & 0x3F));
  }
  for (const auto& [name, input] : {std::pair{"mixed text", &text}, std::pair{"CJK, no spaces", &cjk}}) {
    // CPU time as well: on a shared machine the wall time says little.
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    const auto ids = tok().Encode(*input, false);
    const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ info ] encode %s: %.2f MB in %.3f s wall (%.1f MB/s), %.3f s CPU (%.1f MB/s), "
                "%zu tokens\n",
                name, input->size() / 1e6, s, input->size() / 1e6 / s, cpu,
                input->size() / 1e6 / std::max(cpu, 1e-9), ids.size());
    EXPECT_EQ(tok().Decode(ids, false), *input) << name;
  }
}

// ---------------------------------------------------------------------------
// Errors.

class TokenizerErrors : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& content) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("facet_tok_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::create_directories(dir);
    const std::string path = (dir / "tokenizer.json").string();
    std::ofstream(path) << content;
    dirs_.push_back(dir);
    return path;
  }
  void TearDown() override {
    for (const auto& d : dirs_) std::filesystem::remove_all(d);
  }
  std::vector<std::filesystem::path> dirs_;
};

TEST_F(TokenizerErrors, MissingFile) {
  auto t = Tokenizer::FromJsonFile("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("/nonexistent/dir/tokenizer.json"));
}

TEST_F(TokenizerErrors, MalformedJson) {
  const std::string path = Write("malformed", "{\"model\": {\"type\": \"BPE\",");
  auto t = Tokenizer::FromJsonFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("malformed JSON"));
}

TEST_F(TokenizerErrors, MissingModel) {
  const std::string path = Write("nomodel", R"({"version": "1.0", "added_tokens": []})");
  auto t = Tokenizer::FromJsonFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("\"model\""));
}

TEST_F(TokenizerErrors, UnsupportedModelType) {
  const std::string path =
      Write("wordpiece", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}, "decoder": null})");
  auto t = Tokenizer::FromJsonFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("WordPiece"));
}

TEST_F(TokenizerErrors, MergeWithUnknownPiece) {
  auto t = Tokenizer::FromJsonString(
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]},
          "decoder": {"type": "Fuse"}})",
      "inline.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("inline.json"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("merge 0"));
}

TEST_F(TokenizerErrors, UnsupportedNormalizerIsNamed) {
  auto t = Tokenizer::FromJsonString(
      R"({"normalizer": {"type": "NFKC"},
          "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
          "decoder": {"type": "Fuse"}})",
      "inline.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("NFKC"));
}

// ---------------------------------------------------------------------------
// A small Llama-style tokenizer.json exercising what Gemma 3's file does not:
// Prepend normalizer, a post-processor with EOS, a Strip decoder, unknown
// characters, a Split pre-tokenizer and tokenizer_config overrides.

std::string SmallJson(const std::string& pre_tokenizer = "null") {
  return R"({
    "added_tokens": [
      {"id": 0, "content": "<unk>", "special": true, "normalized": false},
      {"id": 1, "content": "<s>", "special": true, "normalized": false},
      {"id": 2, "content": "</s>", "special": true, "normalized": false}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": )" + pre_tokenizer + R"(,
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "\u2581a": 6,
                "ab": 7, "\u2581ab": 8, "<0xC3>": 9, "<0xA9>": 10},
      "merges": [["\u2581", "a"], ["a", "b"], ["\u2581a", "b"]]}})";
}

TEST(TokenizerJson, LlamaStylePipeline) {
  auto tok = Tokenizer::FromJsonString(SmallJson(), "small.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "ab a" -> "▁ab▁a": (▁ a) rank 0 at both places -> [▁a] b [▁a]; the stale
  // (a b) is skipped; (▁a b) rank 2 -> [▁ab][▁a]. Template adds <s> ... </s>.
  EXPECT_THAT(tok->Encode("ab a", true), ElementsAre(1, 8, 6, 2));
  EXPECT_EQ(tok->Decode(tok->Encode("ab a", true), false), "<s> ab a</s>");
  EXPECT_EQ(tok->Decode(tok->Encode("ab a", true), true), "ab a");
  EXPECT_EQ(Streamed(*tok, tok->Encode("ab a", true), true), "ab a");
  // Each segment between added tokens is normalized on its own, so "a" after
  // <s> gets its own "▁" (HF's behaviour).
  EXPECT_THAT(tok->Encode("<s>a", false), ElementsAre(1, 6));
  // "é" is not a piece: byte fallback; "q" has no byte token: <unk>, fused.
  EXPECT_THAT(tok->Encode("\xC3\xA9", false), ElementsAre(3, 9, 10));
  EXPECT_EQ(tok->Decode(tok->Encode("\xC3\xA9", false), true), "\xC3\xA9");
  EXPECT_THAT(tok->Encode("qq", false), ElementsAre(3, 0));
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->unk_id(), 0);
}

TEST(TokenizerJson, SplitPreTokenizerRemovesThePattern) {
  auto tok = Tokenizer::FromJsonString(
      SmallJson(R"({"type": "Split", "pattern": {"String": "\u2581"}, "behavior": "Removed",
                    "invert": false})"),
      "split.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "a ab" -> "▁a▁ab" -> words "a", "ab" -> [a] [ab].
  EXPECT_THAT(tok->Encode("a ab", false), ElementsAre(4, 7));
}

TEST(TokenizerJson, ConfigOverridesTheTemplate) {
  auto tok = Tokenizer::FromJsonString(
      SmallJson(), "small.json",
      R"({"add_bos_token": false, "add_eos_token": true, "bos_token": {"content": "<s>"},
          "eos_token": "</s>"})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(tok->Encode("a", true), ElementsAre(6, 2));
  EXPECT_FALSE(tok->adds_bos());
  EXPECT_EQ(tok->eos_id(), 2);
  auto bad = Tokenizer::FromJsonString(SmallJson(), "small.json", R"({"eos_token": "<nope>"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("<nope>"));
}

// ---------------------------------------------------------------------------
// A small hand-made vocabulary through FromVocab (the GGUF path).

VocabSpec SmallVocab() {
  VocabSpec spec;
  spec.source_name = "small";
  auto add = [&](std::string piece, TokenType type, float score = 0.f) {
    spec.tokens.push_back(std::move(piece));
    spec.token_types.push_back(type);
    spec.scores.push_back(score);
    return static_cast<int32_t>(spec.tokens.size() - 1);
  };
  spec.pad_id = add("<pad>", TokenType::kControl);  // 0
  spec.eos_id = add("<eos>", TokenType::kControl);  // 1
  spec.bos_id = add("<bos>", TokenType::kControl);  // 2
  spec.unk_id = add("<unk>", TokenType::kUnknown);  // 3
  for (int b = 0; b < 256; ++b) {                   // 4..259
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, TokenType::kByte);
  }
  for (const char* c : {"h", "e", "l", "o", "\xE2\x96\x81"}) add(c, TokenType::kNormal, -1);  // 260..264
  add("ll", TokenType::kNormal, -2);      // 265
  add("he", TokenType::kNormal, -3);      // 266
  add("llo", TokenType::kNormal, -4);     // 267
  add("hell", TokenType::kNormal, -6);    // 268
  add("hello", TokenType::kNormal, -10);  // 269
  add("<x>", TokenType::kUserDefined);    // 270
  add("\xE2\x96\x81h", TokenType::kNormal, -5);  // 271 "▁h"
  spec.add_bos = true;
  return spec;
}

constexpr int32_t kByte0 = 4;

TEST(TokenizerFromVocab, ScoresMergeHighestScoreFirst) {
  VocabSpec spec = SmallVocab();
  auto tok = Tokenizer::FromVocab(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "hello": candidates he(-3), ll(-2): ll first -> h e [ll] o; then he(-3) beats
  // llo(-4) -> [he][ll] o; then llo(-4) beats hell(-6) -> [he][llo]; then
  // he+llo = "hello" (-10) is the only candidate left -> [hello].
  EXPECT_THAT(tok->Encode("hello", false), ElementsAre(269));
  // "hell o" -> "hell▁o": [he][ll] -> "hell"(-6) ; "▁o" is not a piece.
  EXPECT_THAT(tok->Encode("hell o", false), ElementsAre(268, 264, 263));
  // BOS added; a control token and a user-defined token in the raw text are
  // matched as wholes; "é" is not a piece -> bytes C3 A9.
  EXPECT_THAT(tok->Encode("<x>h\xC3\xA9", true),
              ElementsAre(2, 270, 260, kByte0 + 0xC3, kByte0 + 0xA9));
  EXPECT_THAT(tok->Encode("<bos>he", false), ElementsAre(2, 266));
  EXPECT_EQ(tok->Decode(tok->Encode("hell oh\xC3\xA9", true), true), "hell oh\xC3\xA9");
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{2, 269, 264, 271}, false), "<bos>hello  h");
  EXPECT_TRUE(tok->IsSpecial(2));
  EXPECT_TRUE(tok->IsSpecial(3));
  EXPECT_FALSE(tok->IsSpecial(270));
  EXPECT_EQ(tok->vocab_size(), 272);
}

TEST(TokenizerFromVocab, InvalidUtf8InputFallsBackToBytes) {
  auto tok = Tokenizer::FromVocab(SmallVocab());
  ASSERT_TRUE(tok.ok()) << tok.status();
  // 0xFF never starts a character: it becomes its byte token, and decodes to
  // U+FFFD (the byte run is not valid UTF-8).
  EXPECT_THAT(tok->Encode("\xFFh", false), ElementsAre(kByte0 + 0xFF, 260));
  EXPECT_EQ(tok->Decode(tok->Encode("\xFFh", false), true), "\xEF\xBF\xBDh");
}

TEST(TokenizerFromVocab, MergesApplyInRankOrder) {
  VocabSpec spec = SmallVocab();
  spec.scores.clear();
  // Rank order differs from the score order above on purpose.
  spec.merges = {"h e", "l o", "he l", "hel l"};
  // "hel" is needed as a piece for rank 2.
  spec.tokens.push_back("hel");
  spec.token_types.push_back(TokenType::kNormal);
  spec.tokens.push_back("lo");
  spec.token_types.push_back(TokenType::kNormal);
  auto tok = Tokenizer::FromVocab(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const int32_t hel = 272, lo = 273;
  // "hello": h e l l o. Rank 0 (h e) -> [he] l l o; rank 1 (l o) -> [he] l [lo];
  // rank 2 (he l) -> [hel][lo]; "hel lo" is not a merge.
  EXPECT_THAT(tok->Encode("hello", false), ElementsAre(hel, lo));
  // "hell": [he] l l -> [hel] l -> [hell] (rank 3).
  EXPECT_THAT(tok->Encode("hell", false), ElementsAre(268));
  EXPECT_EQ(tok->Decode(tok->Encode("hello hell", true), true), "hello hell");
}

TEST(TokenizerFromVocab, SpacePrefixIsAddedAndStripped) {
  VocabSpec spec = SmallVocab();
  spec.add_space_prefix = true;
  auto tok = Tokenizer::FromVocab(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "he" -> "▁he": ▁h(-5) vs he(-3): he first -> [▁][he]; "▁he" is not a piece.
  EXPECT_THAT(tok->Encode("he", false), ElementsAre(264, 266));
  EXPECT_EQ(tok->Decode(tok->Encode("he", false), true), "he");
  EXPECT_EQ(Streamed(*tok, tok->Encode("he", false), true), "he");
}

TEST(DetokenizerFromVocab, HoldsBackPartialCharacters) {
  auto tok = Tokenizer::FromVocab(SmallVocab());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "h\xF0\x9F\x98\x80\xE4\xB8\xAD" "e";  // h 😀 中 e
  const auto ids = tok->Encode(text, false);
  ASSERT_EQ(ids.size(), 9u);  // h, 4 + 3 byte tokens, e
  IncrementalDetokenizer detok(*tok);
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(detok.Push(id));
  EXPECT_THAT(out, ElementsAre("h", "", "", "", "\xF0\x9F\x98\x80", "", "", "\xE4\xB8\xAD", "e"));
  EXPECT_EQ(detok.Flush(), "");
  // A byte run cut short by a normal token: the held bytes become U+FFFD, as
  // HF's Decode does for the same ids.
  const std::vector<int32_t> cut = {kByte0 + 0xE4, kByte0 + 0xB8, 260};
  EXPECT_EQ(Streamed(*tok, cut, true), "\xEF\xBF\xBD\xEF\xBF\xBDh");
  EXPECT_EQ(tok->Decode(cut, true), "\xEF\xBF\xBD\xEF\xBF\xBDh");
}

TEST(DetokenizerFromVocab, OutlivesTheTokenizerObject) {
  std::unique_ptr<IncrementalDetokenizer> detok;
  std::vector<int32_t> ids;
  {
    auto tok = Tokenizer::FromVocab(SmallVocab());
    ASSERT_TRUE(tok.ok()) << tok.status();
    ids = tok->Encode("hello", false);
    detok = std::make_unique<IncrementalDetokenizer>(*tok);
  }
  std::string out;
  for (int32_t id : ids) out += detok->Push(id);
  EXPECT_EQ(out + detok->Flush(), "hello");
}

TEST(TokenizerFromVocab, RejectsBadSpecs) {
  VocabSpec spec = SmallVocab();
  spec.scores.clear();
  spec.merges = {"h x"};
  auto t = Tokenizer::FromVocab(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("merge 0"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("small"));

  spec = SmallVocab();
  spec.scores.clear();
  EXPECT_FALSE(Tokenizer::FromVocab(spec).ok());  // neither merges nor scores

  spec = SmallVocab();
  spec.token_types[5] = static_cast<TokenType>(9);
  t = Tokenizer::FromVocab(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("token type 9"));

  spec = SmallVocab();
  spec.bos_id = 9999;
  EXPECT_FALSE(Tokenizer::FromVocab(spec).ok());
}

}  // namespace
}  // namespace facet
