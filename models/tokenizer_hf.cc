// Loads a Hugging Face tokenizer.json (+ optional tokenizer_config.json) into
// the tokenizer model. Only the components Gemma's files use are accepted:
// model BPE; normalizer Replace/Prepend/Sequence with literal patterns;
// pre_tokenizer Split (literal)/Sequence; post_processor TemplateProcessing;
// decoder Replace/ByteFallback/Fuse/Strip. Anything else is rejected by name
// rather than silently tokenized differently from HF.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/mmap.h"
#include "core/status.h"
#include "models/tokenizer.h"
#include "models/tokenizer_model.h"

namespace facet {
namespace {

using nlohmann::json;
using tokenizer_internal::AddedTokenMatcher;
using tokenizer_internal::DecoderSpec;
using tokenizer_internal::NormalizerStep;
using tokenizer_internal::SplitRule;
using tokenizer_internal::TokenizerModel;

// tokenizer.json is large (Gemma 3: 33 MB, 262k vocab entries, 515k merges).
// Building a DOM for the vocab and merges costs more than the rest of loading
// together, so this SAX handler streams those two into flat vectors and builds
// an ordinary DOM for everything else (all small).
class TokenizerJsonReader : public nlohmann::json_sax<json> {
 public:
  json root;                                                 // without model.vocab / model.merges
  std::vector<std::pair<std::string, int64_t>> vocab;        // model.vocab in file order
  std::vector<std::pair<std::string, std::string>> merges;   // model.merges
  bool saw_vocab = false;
  bool saw_merges = false;
  std::string error;  // set when parsing stops

  bool null() override { return Value(json(nullptr)); }
  bool boolean(bool v) override { return Value(json(v)); }
  bool number_integer(number_integer_t v) override { return Number(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return Number(v > static_cast<number_unsigned_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
  }
  bool number_float(number_float_t v, const string_t&) override {
    if (section_ == Section::kVocab) return Fail("a vocab id is not an integer");
    return Value(json(v));
  }
  bool string(string_t& v) override {
    if (section_ == Section::kMerges) {
      if (merge_depth_ == 1) {
        merge_parts_.push_back(std::move(v));
        return true;
      }
      // The older "left right" form.
      const size_t sep = v.find(' ');
      if (sep == std::string::npos || v.find(' ', sep + 1) != std::string::npos) {
        return Fail(absl::StrCat("merge ", merges.size(), " \"", v, "\" is not \"left right\""));
      }
      merges.emplace_back(v.substr(0, sep), v.substr(sep + 1));
      return true;
    }
    if (section_ == Section::kVocab) return Fail("a vocab id is not an integer");
    return Value(json(std::move(v)));
  }
  bool binary(binary_t&) override { return Fail("unexpected binary value"); }
  bool start_object(std::size_t) override {
    if (section_ != Section::kNone) return Fail("unexpected object inside model.vocab or model.merges");
    if (AtModelKey("vocab")) {
      section_ = Section::kVocab;
      saw_vocab = true;
      return true;
    }
    return Open(json::object());
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    if (section_ == Section::kVocab) {
      section_ = Section::kNone;
      return true;
    }
    stack_.pop_back();
    path_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (section_ == Section::kMerges) {
      if (++merge_depth_ > 1) return Fail("model.merges entries must be [left, right] or \"left right\"");
      merge_parts_.clear();
      return true;
    }
    if (section_ != Section::kNone) return Fail("unexpected array inside model.vocab");
    if (AtModelKey("merges")) {
      section_ = Section::kMerges;
      saw_merges = true;
      return true;
    }
    return Open(json::array());
  }
  bool end_array() override {
    if (section_ == Section::kMerges) {
      if (merge_depth_ == 0) {
        section_ = Section::kNone;
        return true;
      }
      --merge_depth_;
      if (merge_parts_.size() != 2) {
        return Fail(absl::StrCat("merge ", merges.size(), " does not have exactly two parts"));
      }
      merges.emplace_back(std::move(merge_parts_[0]), std::move(merge_parts_[1]));
      return true;
    }
    stack_.pop_back();
    path_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    return Fail(absl::StrCat("malformed JSON: ", e.what()));
  }

 private:
  enum class Section { kNone, kVocab, kMerges };

  // Whether the container about to open is root.model.<key>.
  bool AtModelKey(std::string_view key) const {
    return path_.size() == 2 && path_[1] == "model" && key_ == key && stack_.back()->is_object();
  }

  bool Fail(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }
  bool Number(int64_t v) {
    if (section_ == Section::kVocab) {
      vocab.emplace_back(key_, v);
      return true;
    }
    if (section_ == Section::kMerges) return Fail("a merge is not made of strings");
    return Value(json(v));
  }
  // Places `v` in the current container and returns where it went.
  json* Put(json v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    json* top = stack_.back();
    if (top->is_array()) {
      top->push_back(std::move(v));
      return &top->back();  // stable: nothing else is appended while it is open
    }
    json& slot = (*top)[key_];
    slot = std::move(v);
    return &slot;
  }
  bool Value(json v) {
    if (section_ != Section::kNone) return Fail("unexpected value inside model.vocab or model.merges");
    Put(std::move(v));
    return true;
  }
  bool Open(json container) {
    path_.push_back(!stack_.empty() && stack_.back()->is_object() ? key_ : std::string());
    stack_.push_back(Put(std::move(container)));
    return true;
  }

  std::vector<json*> stack_;       // open containers in the DOM
  std::vector<std::string> path_;  // the key each of them was opened under
  std::string key_;
  Section section_ = Section::kNone;
  int merge_depth_ = 0;
  std::vector<std::string> merge_parts_;
};

// Builds one model from the JSON; every error names `src_` and the field.
class HfLoader {
 public:
  HfLoader(TokenizerModel& m, std::string src) : m_(m), src_(std::move(src)) {}

  absl::Status Load(const TokenizerJsonReader& file) {
    const json& root = file.root;
    if (!root.is_object()) return Error("the top level is not a JSON object");
    auto model = root.find("model");
    if (model == root.end() || !model->is_object()) {
      return Error("tokenizer.json has no \"model\" object");
    }
    RETURN_IF_ERROR(LoadNormalizer(Field(root, "normalizer")));
    RETURN_IF_ERROR(LoadBpe(*model, file));
    RETURN_IF_ERROR(LoadAddedTokens(Field(root, "added_tokens")));
    RETURN_IF_ERROR(LoadPreTokenizer(Field(root, "pre_tokenizer")));
    RETURN_IF_ERROR(LoadPostProcessor(Field(root, "post_processor")));
    RETURN_IF_ERROR(LoadDecoder(Field(root, "decoder")));
    return absl::OkStatus();
  }

  // transformers' GemmaTokenizerFast: named special tokens, and
  // add_bos_token / add_eos_token rebuild the post-processor template.
  absl::Status ApplyConfig(const json& config, const std::string& config_src) {
    auto Error = [&](std::string_view what) {
      return absl::InvalidArgumentError(std::string(what));
    };
    if (!config.is_object()) return Error(absl::StrCat(config_src, " is not a JSON object"));
    for (auto [key, target] : {std::pair{"bos_token", &m_.bos_id}, std::pair{"eos_token", &m_.eos_id},
                               std::pair{"pad_token", &m_.pad_id}, std::pair{"unk_token", &m_.unk_id}}) {
      const json& v = Field(config, key);
      if (v.is_null()) continue;
      const json& content = v.is_object() ? Field(v, "content") : v;
      if (!content.is_string()) return Error(absl::StrCat(config_src, ": ", key, " is not a string"));
      auto id = m_.Lookup(content.get<std::string>());
      if (!id) {
        return Error(absl::StrCat(config_src, ": ", key, " \"", content.get<std::string>(),
                                  "\" is not in the vocabulary"));
      }
      *target = *id;
    }
    const json& add_bos = Field(config, "add_bos_token");
    const json& add_eos = Field(config, "add_eos_token");
    if (add_bos.is_boolean() || add_eos.is_boolean()) {
      m_.prefix_ids.clear();
      m_.suffix_ids.clear();
      if (add_bos.is_boolean() && add_bos.get<bool>()) {
        if (m_.bos_id < 0) return Error(absl::StrCat(config_src, ": add_bos_token without a bos_token"));
        m_.prefix_ids.push_back(m_.bos_id);
      }
      if (add_eos.is_boolean() && add_eos.get<bool>()) {
        if (m_.eos_id < 0) return Error(absl::StrCat(config_src, ": add_eos_token without an eos_token"));
        m_.suffix_ids.push_back(m_.eos_id);
      }
    }
    return absl::OkStatus();
  }

  // Conventional names when no tokenizer_config.json says otherwise.
  void DefaultSpecialTokens() {
    auto by_name = [&](const char* name) { return m_.Lookup(name).value_or(-1); };
    m_.bos_id = by_name("<bos>");
    m_.eos_id = by_name("<eos>");
    m_.pad_id = by_name("<pad>");
    if (m_.bos_id < 0 && m_.prefix_ids.size() == 1) m_.bos_id = m_.prefix_ids[0];
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(src_, ": ", std::string(what)));
  }
  absl::Status Unsupported(std::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(src_, ": ", std::string(what)));
  }

  static const json& Field(const json& obj, const char* key) {
    static const json kNull;
    if (!obj.is_object()) return kNull;
    auto it = obj.find(key);
    return it == obj.end() ? kNull : *it;
  }

  static std::string TypeOf(const json& obj) {
    const json& t = Field(obj, "type");
    return t.is_string() ? t.get<std::string>() : std::string("(no type)");
  }

  // {"String": "..."}; regex patterns are not supported.
  absl::StatusOr<std::string> LiteralPattern(const json& pattern, std::string_view where) const {
    const json& s = Field(pattern, "String");
    if (s.is_string()) return s.get<std::string>();
    return Unsupported(absl::StrCat(std::string(where), " uses a non-literal pattern ",
                                    pattern.dump(), " (only {\"String\": ...} is supported)"));
  }

  absl::Status LoadNormalizer(const json& n) {
    if (n.is_null()) return absl::OkStatus();
    const std::string type = TypeOf(n);
    if (type == "Sequence") {
      const json& list = Field(n, "normalizers");
      if (!list.is_array()) return Error("normalizer Sequence has no \"normalizers\" array");
      for (const json& item : list) RETURN_IF_ERROR(LoadNormalizer(item));
      return absl::OkStatus();
    }
    if (type == "Replace") {
      ASSIGN_OR_RETURN(std::string pattern, LiteralPattern(Field(n, "pattern"), "normalizer Replace"));
      const json& content = Field(n, "content");
      if (!content.is_string()) return Error("normalizer Replace has no string \"content\"");
      m_.normalizer.push_back({NormalizerStep::Kind::kReplace, pattern, content.get<std::string>()});
      return absl::OkStatus();
    }
    if (type == "Prepend") {
      const json& prepend = Field(n, "prepend");
      if (!prepend.is_string()) return Error("normalizer Prepend has no string \"prepend\"");
      m_.normalizer.push_back({NormalizerStep::Kind::kPrepend, "", prepend.get<std::string>()});
      return absl::OkStatus();
    }
    return Unsupported(absl::StrCat("unsupported normalizer type \"", type,
                                    "\" (supported: Sequence, Replace, Prepend)"));
  }

  // `model` is the DOM of "model" without its vocab and merges, which `file`
  // holds.
  absl::Status LoadBpe(const json& model, const TokenizerJsonReader& file) {
    const json& type = Field(model, "type");
    // HF also accepts a model without "type" and infers BPE from "merges".
    const std::string type_name =
        type.is_string() ? type.get<std::string>() : (file.saw_merges ? "BPE" : "");
    if (type_name != "BPE") {
      return Unsupported(absl::StrCat("unsupported tokenizer model type \"", type_name,
                                      "\" (only BPE is supported)"));
    }
    const json& dropout = Field(model, "dropout");
    if (dropout.is_number() && dropout.get<double>() > 0) return Unsupported("BPE dropout is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const json& v = Field(model, key);
      if (v.is_string() && !v.get<std::string>().empty()) {
        return Unsupported(absl::StrCat("BPE ", key, " is not supported"));
      }
    }
    m_.mode = tokenizer_internal::MergeMode::kRanked;
    m_.byte_fallback = Field(model, "byte_fallback").is_boolean() && Field(model, "byte_fallback").get<bool>();
    m_.fuse_unk = Field(model, "fuse_unk").is_boolean() && Field(model, "fuse_unk").get<bool>();
    m_.ignore_merges =
        Field(model, "ignore_merges").is_boolean() && Field(model, "ignore_merges").get<bool>();

    if (!file.saw_vocab) return Error("model has no \"vocab\" object");
    m_.vocab.reserve(file.vocab.size());
    m_.pieces.reserve(file.vocab.size());
    for (const auto& [piece, id64] : file.vocab) {
      if (id64 < 0 || id64 >= (int64_t{1} << 30)) {
        return Error(absl::StrCat("vocab entry \"", piece, "\" has an invalid id ", id64));
      }
      const auto id = static_cast<int32_t>(id64);
      if (id < static_cast<int32_t>(m_.flags.size()) && (m_.flags[id] & tokenizer_internal::kFlagPresent)) {
        return Error(absl::StrCat("vocab id ", id, " is used by both \"", m_.pieces[id], "\" and \"",
                                  piece, "\""));
      }
      m_.SetPiece(id, piece, 0);
      m_.vocab.emplace(piece, id);
    }
    for (int b = 0; b < 256; ++b) {
      static const char kHex[] = "0123456789ABCDEF";
      const std::string name = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      if (auto it = m_.vocab.find(name); it != m_.vocab.end()) m_.byte_ids[b] = it->second;
    }

    const json& unk = Field(model, "unk_token");
    if (unk.is_string()) {
      auto it = m_.vocab.find(unk.get<std::string>());
      if (it == m_.vocab.end()) {
        return Error(absl::StrCat("unk_token \"", unk.get<std::string>(), "\" is not in the vocab"));
      }
      m_.unk_id = it->second;
    }

    if (!file.saw_merges) return Error("model has no \"merges\" array");
    m_.merges.reserve(file.merges.size());
    std::string joined;
    for (size_t rank = 0; rank < file.merges.size(); ++rank) {
      const auto& [left, right] = file.merges[rank];
      joined.assign(left).append(right);
      auto l = m_.vocab.find(left), r = m_.vocab.find(right), res = m_.vocab.find(joined);
      if (l == m_.vocab.end() || r == m_.vocab.end() || res == m_.vocab.end()) {
        return Error(absl::StrCat("merge ", rank, " (\"", left, "\", \"", right,
                                  "\") uses or makes a token that is not in the vocab"));
      }
      // Like HF, a repeated pair keeps its first (best) rank.
      m_.merges.try_emplace(tokenizer_internal::PairKey(l->second, r->second),
                            tokenizer_internal::MergeTarget{static_cast<int32_t>(rank), res->second});
    }
    return absl::OkStatus();
  }

  absl::Status LoadAddedTokens(const json& list) {
    if (list.is_null()) return absl::OkStatus();
    if (!list.is_array()) return Error("\"added_tokens\" is not an array");
    for (const json& t : list) {
      const json& id = Field(t, "id");
      const json& content = Field(t, "content");
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t{1} << 30) ||
          !content.is_string() || content.get_ref<const std::string&>().empty()) {
        return Error(absl::StrCat("added token ", t.dump(), " needs an \"id\" and a non-empty \"content\""));
      }
      auto flag = [&](const char* key, bool fallback) {
        const json& v = Field(t, key);
        return v.is_boolean() ? v.get<bool>() : fallback;
      };
      const bool special = flag("special", false);
      const bool normalized = flag("normalized", !special);  // HF AddedToken default
      const AddedTokenMatcher::Options options{flag("lstrip", false), flag("rstrip", false),
                                               flag("single_word", false)};
      const auto token_id = static_cast<int32_t>(id.get<int64_t>());
      const std::string& text = content.get_ref<const std::string&>();
      m_.SetPiece(token_id, text, special ? tokenizer_internal::kFlagSpecial : 0);
      m_.added.insert_or_assign(text, token_id);
      if (normalized) {
        m_.normalized_added.Add(tokenizer_internal::Normalize(m_.normalizer, text), token_id, options);
      } else {
        m_.raw_added.Add(text, token_id, options);
      }
    }
    return absl::OkStatus();
  }

  absl::Status LoadPreTokenizer(const json& p) {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = TypeOf(p);
    if (type == "Sequence") {
      const json& list = Field(p, "pretokenizers");
      if (!list.is_array()) return Error("pre_tokenizer Sequence has no \"pretokenizers\" array");
      for (const json& item : list) RETURN_IF_ERROR(LoadPreTokenizer(item));
      return absl::OkStatus();
    }
    if (type != "Split") {
      return Unsupported(absl::StrCat("unsupported pre_tokenizer type \"", type,
                                      "\" (supported: Split with a literal pattern, Sequence)"));
    }
    ASSIGN_OR_RETURN(std::string pattern, LiteralPattern(Field(p, "pattern"), "pre_tokenizer Split"));
    if (Field(p, "invert").is_boolean() && Field(p, "invert").get<bool>()) {
      return Unsupported("pre_tokenizer Split with invert=true is not supported");
    }
    const json& behavior = Field(p, "behavior");
    const std::string b = behavior.is_string() ? behavior.get<std::string>() : "";
    using B = SplitRule::Behavior;
    B value;
    if (b == "Removed") {
      value = B::kRemoved;
    } else if (b == "Isolated") {
      value = B::kIsolated;
    } else if (b == "MergedWithPrevious") {
      value = B::kMergedWithPrevious;
    } else if (b == "MergedWithNext") {
      value = B::kMergedWithNext;
    } else if (b == "Contiguous") {
      value = B::kContiguous;
    } else {
      return Error(absl::StrCat("pre_tokenizer Split has an unknown behavior \"", b, "\""));
    }
    m_.pre_tokenizer.push_back({pattern, value});
    return absl::OkStatus();
  }

  absl::Status LoadPostProcessor(const json& p) {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = TypeOf(p);
    if (type != "TemplateProcessing") {
      return Unsupported(absl::StrCat("unsupported post_processor type \"", type,
                                      "\" (only TemplateProcessing is supported)"));
    }
    const json& single = Field(p, "single");
    const json& specials = Field(p, "special_tokens");
    if (!single.is_array()) return Error("post_processor has no \"single\" template");
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const json& name = Field(Field(item, "SpecialToken"), "id");
      if (!name.is_string()) return Error(absl::StrCat("post_processor item ", item.dump(), " is not understood"));
      const json& ids = Field(Field(specials, name.get<std::string>().c_str()), "ids");
      if (!ids.is_array()) {
        return Error(absl::StrCat("post_processor special token \"", name.get<std::string>(),
                                  "\" has no \"ids\""));
      }
      for (const json& id : ids) {
        if (!id.is_number_integer()) return Error("post_processor special token ids must be integers");
        (seen_sequence ? m_.suffix_ids : m_.prefix_ids).push_back(id.get<int32_t>());
      }
    }
    for (int32_t id : m_.prefix_ids) RETURN_IF_ERROR(CheckKnown(id, "post_processor"));
    for (int32_t id : m_.suffix_ids) RETURN_IF_ERROR(CheckKnown(id, "post_processor"));
    return absl::OkStatus();
  }

  absl::Status CheckKnown(int32_t id, std::string_view where) const {
    if (id < 0 || id >= static_cast<int32_t>(m_.flags.size()) ||
        !(m_.flags[id] & tokenizer_internal::kFlagPresent)) {
      return Error(absl::StrCat(std::string(where), " refers to token id ", id, ", which does not exist"));
    }
    return absl::OkStatus();
  }

  // Stages: 0 = per token (before ByteFallback), 1 = after ByteFallback,
  // 2 = after Fuse.
  absl::Status LoadDecoder(const json& d) {
    if (d.is_null()) {
      return Unsupported("a tokenizer without a decoder (HF joins tokens with spaces) is not supported");
    }
    int stage = 0;
    return LoadDecoderStep(d, stage);
  }

  absl::Status LoadDecoderStep(const json& d, int& stage) {
    const std::string type = TypeOf(d);
    DecoderSpec& spec = m_.decoder;
    if (type == "Sequence") {
      const json& list = Field(d, "decoders");
      if (!list.is_array()) return Error("decoder Sequence has no \"decoders\" array");
      for (const json& item : list) RETURN_IF_ERROR(LoadDecoderStep(item, stage));
      return absl::OkStatus();
    }
    if (type == "Replace") {
      if (stage != 0) return Unsupported("decoder Replace after ByteFallback or Fuse is not supported");
      ASSIGN_OR_RETURN(std::string pattern, LiteralPattern(Field(d, "pattern"), "decoder Replace"));
      const json& content = Field(d, "content");
      if (!content.is_string()) return Error("decoder Replace has no string \"content\"");
      spec.token_steps.push_back(
          {DecoderSpec::TokenStep::Kind::kReplace, pattern, content.get<std::string>()});
      return absl::OkStatus();
    }
    if (type == "ByteFallback") {
      if (stage != 0) return Unsupported("decoder ByteFallback must come before Fuse");
      spec.byte_fallback = true;
      stage = 1;
      return absl::OkStatus();
    }
    if (type == "Fuse") {
      stage = 2;
      return absl::OkStatus();
    }
    if (type == "Strip") {
      const json& content = Field(d, "content");
      const json& start = Field(d, "start");
      const json& stop = Field(d, "stop");
      if (!content.is_string() || !start.is_number_integer() || !stop.is_number_integer()) {
        return Error("decoder Strip needs \"content\", \"start\" and \"stop\"");
      }
      if (stage == 0) {
        spec.token_steps.push_back({DecoderSpec::TokenStep::Kind::kStrip, "", content.get<std::string>(),
                                    start.get<int>(), stop.get<int>()});
        return absl::OkStatus();
      }
      if (stage == 2 && stop.get<int>() == 0 && spec.strip_start == 0) {
        spec.strip_content = content.get<std::string>();
        spec.strip_start = start.get<int>();
        return absl::OkStatus();
      }
      return Unsupported("decoder Strip is supported per token, or after Fuse with stop=0 only");
    }
    return Unsupported(absl::StrCat("unsupported decoder type \"", type,
                                    "\" (supported: Sequence, Replace, ByteFallback, Fuse, Strip)"));
  }

  TokenizerModel& m_;
  std::string src_;
};

absl::StatusOr<json> ParseJson(std::string_view text, const std::string& src) {
  // Small files only (tokenizer_config.json); tokenizer.json goes through the
  // TokenizerJsonReader.
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": malformed JSON: ", e.what()));
  }
}

absl::StatusOr<Tokenizer> LoadHf(std::string_view text, const std::string& src,
                                 std::string_view config_text, const std::string& config_src,
                                 absl::StatusOr<Tokenizer> (*finish)(std::unique_ptr<TokenizerModel>)) {
  auto m = std::make_unique<TokenizerModel>();
  m->source = src;
  HfLoader loader(*m, src);
  try {
    {
      TokenizerJsonReader file;
      if (!json::sax_parse(text.begin(), text.end(), &file)) {
        return absl::InvalidArgumentError(absl::StrCat(
            src, ": ", file.error.empty() ? std::string("malformed JSON") : file.error));
      }
      RETURN_IF_ERROR(loader.Load(file));
    }
    loader.DefaultSpecialTokens();
    if (!config_text.empty()) {
      ASSIGN_OR_RETURN(json config, ParseJson(config_text, config_src));
      RETURN_IF_ERROR(loader.ApplyConfig(config, config_src));
    }
  } catch (const json::exception& e) {
    // Only reachable on a field of an unexpected JSON type that the checks above
    // missed; still reported, never thrown to the caller.
    return absl::InvalidArgumentError(absl::StrCat(src, ": unexpected JSON content: ", e.what()));
  }
  return finish(std::move(m));
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromJsonString(std::string_view json_text,
                                                    std::string_view source_name,
                                                    std::string_view config_json) {
  const std::string src(source_name);
  return LoadHf(json_text, src, config_json, absl::StrCat(src, " (tokenizer_config)"), &Finish);
}

absl::StatusOr<Tokenizer> Tokenizer::FromJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::string config_text;
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config_text, ReadFileToString(config_path.string()));
  }
  return LoadHf(text, path, config_text, config_path.string(), &Finish);
}

}  // namespace facet
