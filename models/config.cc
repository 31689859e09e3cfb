#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/mmap.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace facet {
namespace {

// Debian's abseil has its own string_view; StrCat does not take std's.
absl::string_view Av(std::string_view v) { return absl::string_view(v.data(), v.size()); }

}  // namespace

std::string_view ModelFamilyName(ModelFamily f) {
  switch (f) {
    case ModelFamily::kGemma2:
      return "gemma2";
    case ModelFamily::kGemma3:
      return "gemma3";
    case ModelFamily::kGemma4:
      return "gemma4";
  }
  return "?";
}

std::string_view AttentionKindName(AttentionKind k) { return k == AttentionKind::kSliding ? "sliding" : "global"; }

std::string_view RopeTypeName(RopeType t) {
  switch (t) {
    case RopeType::kDefault:
      return "default";
    case RopeType::kLinear:
      return "linear";
    case RopeType::kProportional:
      return "proportional";
  }
  return "?";
}

int RopeConfig::RotatedPairs(int head_dim) const {
  if (type != RopeType::kProportional) return head_dim / 2;
  return int(partial_rotary_factor * float(head_dim) / 2.0f);
}

int ModelConfig::NumGlobalLayers() const {
  int n = 0;
  for (const LayerConfig& l : layers) n += l.attention == AttentionKind::kGlobal;
  return n;
}

int ModelConfig::NumSlidingLayers() const { return int(layers.size()) - NumGlobalLayers(); }

int ModelConfig::NumKvLayers() const {
  int n = 0;
  for (const LayerConfig& l : layers) n += l.owns_kv();
  return n;
}

int ModelConfig::FirstKvSharedLayer() const {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].owns_kv()) return int(i);
  }
  return int(layers.size());
}

float ModelConfig::EmbeddingScale() const { return std::sqrt(float(hidden_size)); }

bool ModelConfig::IsEos(int token) const {
  for (int e : eos_token_ids) {
    if (e == token) return true;
  }
  return false;
}

namespace {

using json = nlohmann::json;

// A config with more layers than this is garbage; checked before the per-layer
// vector is allocated so a hostile file cannot ask for billions of entries.
constexpr int kMaxLayers = 4096;

// The first error wins; later reads become no-ops that return defaults. This
// keeps the per-family parsers reading like the HF config classes they mirror
// instead of a ladder of ASSIGN_OR_RETURNs.
struct ErrorSink {
  std::string source;
  absl::Status status;
};

// Typed access to one JSON object, with error messages that name the file and
// the dotted key path. A JSON null counts as absent, as it does for the HF
// config classes (which then fall back to their defaults), except where a
// caller asks IsNull (softcaps: null means "off", absent means "default").
class Fields {
 public:
  Fields(const json* obj, ErrorSink* sink, std::string prefix) : obj_(obj), sink_(sink), prefix_(std::move(prefix)) {}

  bool ok() const { return sink_->status.ok(); }
  // A Fields with no object behind it, sharing this one's error sink.
  Fields Absent() const { return Fields(nullptr, sink_, prefix_); }
  const std::string& prefix() const { return prefix_; }
  bool Exists() const { return obj_ != nullptr; }

  bool Has(const char* key) const {
    const json* v = Raw(key);
    return v != nullptr && !v->is_null();
  }
  bool IsNull(const char* key) const {
    const json* v = Raw(key);
    return v != nullptr && v->is_null();
  }

  void Fail(const std::string& key, const std::string& what) {
    if (!ok()) return;
    std::string where = key.empty() ? prefix_ : absl::StrCat(prefix_, key);
    if (!where.empty() && where.back() == '.') where.pop_back();
    sink_->status = absl::InvalidArgumentError(where.empty() ? absl::StrCat(sink_->source, ": ", what)
                                                             : absl::StrCat(sink_->source, ": ", where, ": ", what));
  }

  std::optional<int64_t> OptInt(const char* key) {
    const json* v = Raw(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
        Fail(key, "integer out of range");
        return std::nullopt;
      }
      return v->get<int64_t>();
    }
    // HF writes some integers as 256.0 (e.g. query_pre_attn_scalar); accept
    // whole-valued floats, reject 1.5.
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return int64_t(d);
      Fail(key, absl::StrCat("expected an integer, got ", d));
      return std::nullopt;
    }
    Fail(key, absl::StrCat("expected an integer, got ", v->type_name()));
    return std::nullopt;
  }

  // An int-sized integer, `dflt` when absent.
  int Int(const char* key, int dflt) {
    std::optional<int64_t> v = OptInt(key);
    if (!v) return dflt;
    if (*v < std::numeric_limits<int>::min() || *v > std::numeric_limits<int>::max()) {
      Fail(key, absl::StrCat("value ", *v, " is out of range"));
      return dflt;
    }
    return int(*v);
  }

  int RequiredInt(const char* key) {
    if (!Has(key)) {
      Fail(key, "missing required key");
      return 0;
    }
    return Int(key, 0);
  }

  // A positive int, `dflt` when absent.
  int PositiveInt(const char* key, int dflt) {
    int v = Int(key, dflt);
    if (ok() && v <= 0) Fail(key, absl::StrCat("must be positive, got ", v));
    return ok() ? v : dflt;
  }

  double Float(const char* key, double dflt) {
    const json* v = Raw(key);
    if (v == nullptr || v->is_null()) return dflt;
    if (!v->is_number()) {
      Fail(key, absl::StrCat("expected a number, got ", v->type_name()));
      return dflt;
    }
    double d = v->get<double>();
    if (!std::isfinite(d)) {
      Fail(key, "expected a finite number");
      return dflt;
    }
    return d;
  }

  bool Bool(const char* key, bool dflt) {
    const json* v = Raw(key);
    if (v == nullptr || v->is_null()) return dflt;
    if (!v->is_boolean()) {
      Fail(key, absl::StrCat("expected true or false, got ", v->type_name()));
      return dflt;
    }
    return v->get<bool>();
  }

  std::string String(const char* key, const std::string& dflt) {
    const json* v = Raw(key);
    if (v == nullptr || v->is_null()) return dflt;
    if (!v->is_string()) {
      Fail(key, absl::StrCat("expected a string, got ", v->type_name()));
      return dflt;
    }
    return v->get<std::string>();
  }

  // A nested object; an absent Fields (Exists() false) when missing or null.
  Fields Object(const char* key) {
    const json* v = Raw(key);
    if (v != nullptr && !v->is_null() && !v->is_object()) {
      Fail(key, absl::StrCat("expected an object, got ", v->type_name()));
      v = nullptr;
    }
    if (v != nullptr && v->is_null()) v = nullptr;
    return Fields(v, sink_, absl::StrCat(prefix_, key, "."));
  }

  // A list of strings (layer_types).
  std::vector<std::string> StringList(const char* key) {
    std::vector<std::string> out;
    const json* v = Raw(key);
    if (v == nullptr || v->is_null()) return out;
    if (!v->is_array()) {
      Fail(key, absl::StrCat("expected a list, got ", v->type_name()));
      return out;
    }
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_string()) {
        Fail(key, absl::StrCat("entry ", i, " is a ", e.type_name(), ", expected a string"));
        return {};
      }
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  // eos_token_id: an int or a list of ints.
  std::optional<std::vector<int>> IntOrIntList(const char* key) {
    const json* v = Raw(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_null()) return std::vector<int>{};
    std::vector<int> out;
    auto take = [&](const json& e) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > std::numeric_limits<int>::max()) {
        Fail(key, "expected a non-negative integer or a list of them");
        return false;
      }
      out.push_back(int(e.get<int64_t>()));
      return true;
    };
    if (v->is_array()) {
      for (const json& e : *v) {
        if (!take(e)) return std::nullopt;
      }
    } else if (!take(*v)) {
      return std::nullopt;
    }
    return out;
  }

 private:
  const json* Raw(const char* key) const {
    if (obj_ == nullptr) return nullptr;
    auto it = obj_->find(key);
    return it == obj_->end() ? nullptr : &*it;
  }

  const json* obj_;
  ErrorSink* sink_;
  std::string prefix_;
};

// Softcap keys: absent means the family default, null or 0 means off.
float Softcap(Fields& f, const char* key, float dflt) {
  if (f.IsNull(key)) return 0.0f;
  double v = f.Float(key, dflt);
  if (f.ok() && v < 0) f.Fail(key, absl::StrCat("must not be negative, got ", v));
  return float(v);
}

// Per-layer attention kinds: `layer_types` when present, else the family's
// periodic rule (global iff (i+1) % pattern == 0).
std::vector<AttentionKind> LayerKinds(Fields& f, int num_layers, int pattern) {
  std::vector<AttentionKind> kinds(size_t(num_layers), AttentionKind::kSliding);
  if (!f.ok() || pattern <= 0) return kinds;  // an error is already recorded
  if (f.Has("layer_types")) {
    std::vector<std::string> types = f.StringList("layer_types");
    if (!f.ok()) return kinds;
    if (int(types.size()) != num_layers) {
      f.Fail("layer_types", absl::StrCat("has ", types.size(), " entries but num_hidden_layers is ", num_layers));
      return kinds;
    }
    for (int i = 0; i < num_layers; ++i) {
      if (types[i] == "full_attention") {
        kinds[i] = AttentionKind::kGlobal;
      } else if (types[i] != "sliding_attention") {
        f.Fail("layer_types", absl::StrCat("entry ", i, " is \"", types[i],
                                           "\", expected \"sliding_attention\" or \"full_attention\""));
        return kinds;
      }
    }
    return kinds;
  }
  for (int i = 0; i < num_layers; ++i) {
    if ((i + 1) % pattern == 0) kinds[i] = AttentionKind::kGlobal;
  }
  return kinds;
}

// One RoPE dict ({rope_type|type, rope_theta, factor, partial_rotary_factor}).
// As in HF's standardised rope parameters, a dict that does not name a theta
// inherits the legacy key (`base.theta`, e.g. rope_theta next to a Gemma 3
// rope_parameters without one), while type, factor and partial_rotary_factor
// default to "default", 1 and 1. An absent dict leaves `base` unchanged.
RopeConfig ReadRope(Fields d, RopeConfig base) {
  if (!d.Exists()) return base;
  RopeConfig r;
  r.theta = float(d.Float("rope_theta", base.theta));
  const char* type_key = d.Has("rope_type") || !d.Has("type") ? "rope_type" : "type";
  std::string type = d.String(type_key, "default");
  if (type == "default") {
    r.type = RopeType::kDefault;
  } else if (type == "linear") {
    r.type = RopeType::kLinear;
  } else if (type == "proportional") {
    r.type = RopeType::kProportional;
  } else if (d.ok()) {
    d.Fail(type_key, absl::StrCat("unsupported RoPE type \"", type, "\" (supported: default, linear, proportional)"));
  }
  r.factor = float(d.Float("factor", 1.0));
  r.partial_rotary_factor = float(d.Float("partial_rotary_factor", 1.0));
  if (!d.ok()) return r;
  if (r.theta <= 0) d.Fail("rope_theta", absl::StrCat("must be positive, got ", r.theta));
  if (r.factor <= 0) d.Fail("factor", absl::StrCat("must be positive, got ", r.factor));
  if (!(r.partial_rotary_factor > 0 && r.partial_rotary_factor <= 1)) {
    d.Fail("partial_rotary_factor", absl::StrCat("must be in (0, 1], got ", r.partial_rotary_factor));
  } else if (r.partial_rotary_factor != 1.0f && r.type != RopeType::kProportional) {
    // HF's default/linear RoPE would rotate the first dims with a reduced
    // denominator; no Gemma uses that, so refuse rather than guess.
    d.Fail("partial_rotary_factor", "partial rotation is only supported with rope_type \"proportional\"");
  }
  return r;
}

// rope_parameters is either per layer kind ({"full_attention": {...},
// "sliding_attention": {...}}) or one flat dict; returns the dicts to apply to
// global and sliding layers (a flat dict is returned as `flat`).
struct RopeDicts {
  Fields global;
  Fields sliding;
  Fields flat;
};

RopeDicts SplitRopeParameters(Fields& f) {
  Fields rp = f.Object("rope_parameters");
  Fields none = f.Absent();
  if (rp.Exists() && (rp.Has("full_attention") || rp.Has("sliding_attention"))) {
    return {rp.Object("full_attention"), rp.Object("sliding_attention"), none};
  }
  return {none, none, rp};
}

struct Common {
  int hidden = 0;
  int layers = 0;
  int intermediate = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int window = 0;
};

// Keys every family reads the same way, with that family's HF defaults.
Common ReadCommon(Fields& f, ModelConfig& c, int default_heads, int default_kv, int default_vocab, int default_max_pos,
                  int default_window) {
  Common k;
  k.hidden = f.RequiredInt("hidden_size");
  k.layers = f.RequiredInt("num_hidden_layers");
  k.intermediate = f.RequiredInt("intermediate_size");
  if (f.ok() && k.hidden <= 0) f.Fail("hidden_size", absl::StrCat("must be positive, got ", k.hidden));
  if (f.ok() && (k.layers <= 0 || k.layers > kMaxLayers)) {
    f.Fail("num_hidden_layers", absl::StrCat("must be in [1, ", kMaxLayers, "], got ", k.layers));
  }
  if (f.ok() && k.intermediate <= 0) {
    f.Fail("intermediate_size", absl::StrCat("must be positive, got ", k.intermediate));
  }
  k.heads = f.PositiveInt("num_attention_heads", default_heads);
  k.kv_heads = f.PositiveInt("num_key_value_heads", default_kv);
  k.head_dim = f.PositiveInt("head_dim", 256);
  k.window = f.PositiveInt("sliding_window", default_window);
  if (f.ok() && k.heads % k.kv_heads != 0) {
    f.Fail("num_key_value_heads", absl::StrCat("num_attention_heads (", k.heads,
                                               ") is not a multiple of num_key_value_heads (", k.kv_heads, ")"));
  }
  c.hidden_size = k.hidden;
  c.num_layers = k.layers;
  c.vocab_size = f.PositiveInt("vocab_size", default_vocab);
  c.max_position_embeddings = f.PositiveInt("max_position_embeddings", default_max_pos);
  c.rms_norm_eps = float(f.Float("rms_norm_eps", 1e-6));
  if (f.ok() && !(c.rms_norm_eps > 0)) f.Fail("rms_norm_eps", "must be positive");
  std::string act = f.String("hidden_activation", "gelu_pytorch_tanh");
  if (f.ok() && act != "gelu_pytorch_tanh" && act != "gelu_tanh") {
    f.Fail("hidden_activation", absl::StrCat("unsupported activation \"", act, "\" (Gemma uses gelu_pytorch_tanh)"));
  }
  return k;
}

void SetQueryScale(Fields& f, ModelConfig& c) {
  double qpas = f.Float("query_pre_attn_scalar", 256.0);
  if (f.ok() && qpas <= 0) f.Fail("query_pre_attn_scalar", absl::StrCat("must be positive, got ", qpas));
  c.query_pre_attn_scalar = float(qpas);
  c.attention_scale = float(1.0 / std::sqrt(qpas > 0 ? qpas : 1.0));
}

// Gemma 2 and 3: every layer has the same heads, head dim and MLP width; only
// the window and the RoPE differ between sliding and global layers.
void AppendUniformLayers(const std::vector<AttentionKind>& kinds, const Common& k,
                         const RopeConfig& sliding, const RopeConfig& global, ModelConfig& c) {
  for (AttentionKind kind : kinds) {
    LayerConfig l;
    l.attention = kind;
    l.num_heads = k.heads;
    l.num_kv_heads = k.kv_heads;
    l.head_dim = k.head_dim;
    l.sliding_window = kind == AttentionKind::kSliding ? k.window : 0;
    l.rope = kind == AttentionKind::kSliding ? sliding : global;
    l.intermediate_size = k.intermediate;
    c.layers.push_back(l);
  }
}

// Gemma 2 (HF Gemma2Config): even layers slide, one RoPE for all layers,
// softcaps 50 / 30, "1 + w" norms, no q/k norm.
void ParseGemma2(Fields& f, ModelConfig& c) {
  c.family = ModelFamily::kGemma2;
  Common k = ReadCommon(f, c, /*heads=*/8, /*kv=*/4, /*vocab=*/256000, /*max_pos=*/8192, /*window=*/4096);
  if (!f.ok()) return;
  c.norm_weight_plus_one = true;
  SetQueryScale(f, c);
  c.attn_logit_softcap = Softcap(f, "attn_logit_softcapping", 50.0f);
  c.final_logit_softcap = Softcap(f, "final_logit_softcapping", 30.0f);

  RopeConfig rope;
  rope.theta = float(f.Float("rope_theta", 10000.0));
  rope = ReadRope(f.Object("rope_scaling"), rope);
  RopeDicts rd = SplitRopeParameters(f);
  RopeConfig global = ReadRope(rd.global, ReadRope(rd.flat, rope));
  RopeConfig sliding = ReadRope(rd.sliding, ReadRope(rd.flat, rope));

  std::vector<AttentionKind> kinds = LayerKinds(f, k.layers, /*pattern=*/2);
  if (!f.ok()) return;
  AppendUniformLayers(kinds, k, sliding, global, c);
}

// Gemma 3 (HF Gemma3TextConfig). Its defaults matter: the 4B/12B/27B VLM
// configs omit most keys (vocab 262208, rope_theta 1e6, max pos 131072...).
// Sliding layers use rope_local_base_freq unscaled; rope_scaling (linear ×8
// on 4B+) applies to global layers only.
void ParseGemma3(Fields& f, ModelConfig& c) {
  c.family = ModelFamily::kGemma3;
  Common k = ReadCommon(f, c, /*heads=*/8, /*kv=*/4, /*vocab=*/262208, /*max_pos=*/131072, /*window=*/4096);
  if (!f.ok()) return;
  c.norm_weight_plus_one = true;
  c.qk_norm = true;
  SetQueryScale(f, c);
  c.attn_logit_softcap = Softcap(f, "attn_logit_softcapping", 0.0f);
  c.final_logit_softcap = Softcap(f, "final_logit_softcapping", 0.0f);
  if (f.Bool("use_bidirectional_attention", false)) {
    f.Fail("use_bidirectional_attention", "bidirectional (embedding) models are not supported");
  }

  RopeConfig global;
  global.theta = float(f.Float("rope_theta", 1.0e6));
  global = ReadRope(f.Object("rope_scaling"), global);
  RopeConfig sliding;
  sliding.theta = float(f.Float("rope_local_base_freq", 10000.0));
  RopeDicts rd = SplitRopeParameters(f);
  global = ReadRope(rd.global, ReadRope(rd.flat, global));
  sliding = ReadRope(rd.sliding, sliding);

  // Older configs say sliding_window_pattern, newer ones _sliding_window_pattern
  // next to an explicit layer_types list.
  const char* pattern_key = f.Has("sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
  int pattern = f.PositiveInt(pattern_key, 6);
  std::vector<AttentionKind> kinds = LayerKinds(f, k.layers, pattern);
  if (!f.ok()) return;
  AppendUniformLayers(kinds, k, sliding, global, c);
}

// Gemma 4 (HF Gemma4TextConfig): global layers have their own head dim,
// optionally their own KV-head count (only with attention_k_eq_v), proportional
// RoPE; the last layer is forced global; E2B/E4B share KV across the tail.
void ParseGemma4(Fields& f, ModelConfig& c) {
  c.family = ModelFamily::kGemma4;
  Common k = ReadCommon(f, c, /*heads=*/8, /*kv=*/4, /*vocab=*/262144, /*max_pos=*/131072, /*window=*/512);
  if (!f.ok()) return;
  c.qk_norm = true;
  c.v_norm = true;
  c.layer_scalar = true;
  // Attention temperature lives in the learned q/k norms; any
  // query_pre_attn_scalar key is ignored (HF `self.scaling = 1.0`).
  c.attention_scale = 1.0f;
  c.final_logit_softcap = Softcap(f, "final_logit_softcapping", 0.0f);
  std::string bidir = f.String("use_bidirectional_attention", "");
  if (f.ok() && bidir == "all") {
    f.Fail("use_bidirectional_attention", "\"all\" (bidirectional embedding models) is not supported");
  }

  int global_head_dim = f.PositiveInt("global_head_dim", 512);
  bool k_eq_v = f.Bool("attention_k_eq_v", false);
  int global_kv = k.kv_heads;
  if (k_eq_v && f.Has("num_global_key_value_heads")) {
    global_kv = f.PositiveInt("num_global_key_value_heads", k.kv_heads);
    if (f.ok() && k.heads % global_kv != 0) {
      f.Fail("num_global_key_value_heads",
             absl::StrCat("num_attention_heads (", k.heads, ") is not a multiple of num_global_key_value_heads (",
                          global_kv, ")"));
    }
  }

  RopeConfig sliding_default;  // {default, 1e4}
  RopeConfig global_default;
  global_default.theta = 1.0e6f;
  global_default.type = RopeType::kProportional;
  global_default.partial_rotary_factor = 0.25f;
  RopeDicts rd = SplitRopeParameters(f);
  if (rd.flat.Exists())
    f.Fail("rope_parameters", "expected per-layer-type entries (full_attention, sliding_attention)");
  RopeConfig sliding = ReadRope(rd.sliding, sliding_default);
  RopeConfig global = ReadRope(rd.global, global_default);

  if (f.Bool("enable_moe_block", false)) {
    for (const char* key : {"num_experts", "top_k_experts", "moe_intermediate_size"}) {
      if (f.ok() && !f.Has(key)) f.Fail(key, "missing (required when enable_moe_block is true)");
    }
    c.num_experts = f.PositiveInt("num_experts", 0);
    c.top_k_experts = f.PositiveInt("top_k_experts", 0);
    c.moe_intermediate_size = f.PositiveInt("moe_intermediate_size", 0);
    if (f.ok() && c.top_k_experts > c.num_experts) {
      f.Fail("top_k_experts",
             absl::StrCat("top_k_experts (", c.top_k_experts, ") exceeds num_experts (", c.num_experts, ")"));
    }
  }

  c.hidden_size_per_layer_input = f.Int("hidden_size_per_layer_input", 256);
  c.vocab_size_per_layer_input = f.Int("vocab_size_per_layer_input", 262144);
  if (f.ok() && c.hidden_size_per_layer_input < 0) f.Fail("hidden_size_per_layer_input", "must not be negative");
  if (c.hidden_size_per_layer_input == 0) c.vocab_size_per_layer_input = 0;

  c.num_kv_shared_layers = f.Int("num_kv_shared_layers", 0);
  if (f.ok() && (c.num_kv_shared_layers < 0 || c.num_kv_shared_layers >= k.layers)) {
    f.Fail("num_kv_shared_layers",
           absl::StrCat("must be in [0, num_hidden_layers) = [0, ", k.layers, "), got ", c.num_kv_shared_layers));
  }
  bool double_wide = f.Bool("use_double_wide_mlp", false);

  std::vector<AttentionKind> kinds = LayerKinds(f, k.layers, /*pattern=*/6);
  if (!f.ok()) return;
  kinds.back() = AttentionKind::kGlobal;  // HF forces the last layer to full attention

  const int first_shared = k.layers - c.num_kv_shared_layers;
  for (int i = 0; i < k.layers; ++i) {
    const AttentionKind kind = kinds[i];
    const bool global_layer = kind == AttentionKind::kGlobal;
    LayerConfig l;
    l.attention = kind;
    l.num_heads = k.heads;
    l.num_kv_heads = global_layer ? global_kv : k.kv_heads;
    l.head_dim = global_layer ? global_head_dim : k.head_dim;
    l.sliding_window = global_layer ? 0 : k.window;
    l.rope = global_layer ? global : sliding;
    l.k_eq_v = global_layer && k_eq_v;
    l.moe = c.num_experts > 0;
    l.intermediate_size = k.intermediate;
    if (i >= first_shared) {
      // Reuse the last non-shared layer of the same kind (HF
      // `shared_kv_states[layer_type]`); E2B: sliding -> 13, global -> 14.
      for (int j = first_shared - 1; j >= 0; --j) {
        if (kinds[j] == kind) {
          l.kv_source_layer = j;
          break;
        }
      }
      if (l.kv_source_layer < 0) {
        f.Fail("num_kv_shared_layers",
               absl::StrCat("layer ", i, " (", Av(AttentionKindName(kind)), ") shares KV but no earlier non-shared ",
                            Av(AttentionKindName(kind)), " layer exists"));
        return;
      }
      if (double_wide) l.intermediate_size = 2 * k.intermediate;
    }
    c.layers.push_back(l);
  }
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source_name) {
  const std::string source(source_name);
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object at the top level, got ", root.type_name()));
  }

  ErrorSink sink{source, absl::OkStatus()};
  Fields top(&root, &sink, "");
  if (!top.Has("model_type")) {
    top.Fail("model_type", "missing required key");
    return sink.status;
  }
  ModelConfig c;
  c.model_type = top.String("model_type", "");
  if (!sink.status.ok()) return sink.status;

  // Multimodal wrappers keep the decoder in text_config.
  std::string inner_type;
  if (c.model_type == "gemma3") {
    inner_type = "gemma3_text";
  } else if (c.model_type == "gemma4") {
    inner_type = "gemma4_text";
  } else if (c.model_type != "gemma2" && c.model_type != "gemma3_text" && c.model_type != "gemma4_text") {
    top.Fail("model_type", absl::StrCat("unsupported model_type \"", c.model_type,
                                        "\" (supported: gemma2, gemma3_text, gemma3, gemma4_text, gemma4)"));
    return sink.status;
  }
  c.nested_text_config = !inner_type.empty();
  Fields text = top;
  if (c.nested_text_config) {
    text = top.Object("text_config");
    if (!sink.status.ok()) return sink.status;
    if (!text.Exists()) {
      top.Fail("text_config", absl::StrCat("missing (required for model_type \"", c.model_type, "\")"));
      return sink.status;
    }
    std::string declared = text.String("model_type", inner_type);
    if (sink.status.ok() && declared != inner_type) {
      text.Fail("model_type", absl::StrCat("is \"", declared, "\", expected \"", inner_type, "\" inside a \"",
                                           c.model_type, "\" config"));
    }
  }
  if (!sink.status.ok()) return sink.status;

  const std::string& family_type = c.nested_text_config ? inner_type : c.model_type;
  if (family_type == "gemma2") {
    ParseGemma2(text, c);
  } else if (family_type == "gemma3_text") {
    ParseGemma3(text, c);
  } else {
    ParseGemma4(text, c);
  }
  if (!sink.status.ok()) return sink.status;

  // Token ids and tying live at the top level of wrapper configs (the inner
  // text_config keeps class defaults), so the outer value wins.
  auto token = [&](const char* key, int dflt) { return top.Has(key) ? top.Int(key, dflt) : text.Int(key, dflt); };
  c.pad_token_id = token("pad_token_id", 0);
  c.bos_token_id = token("bos_token_id", 2);
  std::optional<std::vector<int>> eos = top.IntOrIntList("eos_token_id");
  if (!eos && c.nested_text_config) eos = text.IntOrIntList("eos_token_id");
  c.eos_token_ids = eos.value_or(std::vector<int>{1});
  c.tie_word_embeddings =
      top.Has("tie_word_embeddings") ? top.Bool("tie_word_embeddings", true) : text.Bool("tie_word_embeddings", true);
  if (!sink.status.ok()) return sink.status;

  RETURN_IF_ERROR(Annotate(ValidateModelConfig(c), source));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec)) file = (std::filesystem::path(path) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
  return ParseModelConfig(text, file);
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (c.num_layers <= 0 || c.num_layers > kMaxLayers) return bad("num_layers ", c.num_layers, " out of range");
  if (int(c.layers.size()) != c.num_layers) {
    return bad("num_layers is ", c.num_layers, " but ", c.layers.size(), " layer configs are present");
  }
  if (c.hidden_size <= 0) return bad("hidden_size must be positive, got ", c.hidden_size);
  if (c.vocab_size <= 0) return bad("vocab_size must be positive, got ", c.vocab_size);
  if (c.max_position_embeddings <= 0) {
    return bad("max_position_embeddings must be positive, got ", c.max_position_embeddings);
  }
  if (!(c.rms_norm_eps > 0 && std::isfinite(c.rms_norm_eps))) return bad("rms_norm_eps must be positive");
  if (!(c.attention_scale > 0 && std::isfinite(c.attention_scale))) return bad("attention_scale must be positive");
  if (!(c.attn_logit_softcap >= 0 && std::isfinite(c.attn_logit_softcap))) {
    return bad("attention logit softcap must be >= 0");
  }
  if (!(c.final_logit_softcap >= 0 && std::isfinite(c.final_logit_softcap))) {
    return bad("final logit softcap must be >= 0");
  }

  bool any_moe = false;
  int shared = 0;
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerConfig& l = c.layers[i];
    const std::string at = absl::StrCat("layer ", i, " (", Av(AttentionKindName(l.attention)), "): ");
    if (l.num_heads <= 0 || l.num_kv_heads <= 0) {
      return bad(at, "head counts must be positive (", l.num_heads, " query, ", l.num_kv_heads, " KV)");
    }
    if (l.num_heads % l.num_kv_heads != 0) {
      return bad(at, "num_heads ", l.num_heads, " is not a multiple of num_kv_heads ", l.num_kv_heads);
    }
    if (l.head_dim <= 0 || l.head_dim % 2 != 0) return bad(at, "head_dim must be positive and even, got ", l.head_dim);
    if (l.is_sliding() && l.sliding_window <= 0) return bad(at, "sliding layer needs a positive window");
    if (!l.is_sliding() && l.sliding_window != 0) return bad(at, "global layer has sliding_window ", l.sliding_window);
    if (l.intermediate_size <= 0) return bad(at, "intermediate_size must be positive");
    const RopeConfig& r = l.rope;
    if (!(r.theta > 0 && std::isfinite(r.theta))) return bad(at, "rope theta must be positive");
    if (!(r.factor > 0 && std::isfinite(r.factor))) return bad(at, "rope factor must be positive");
    if (!(r.partial_rotary_factor > 0 && r.partial_rotary_factor <= 1)) {
      return bad(at, "partial_rotary_factor must be in (0, 1]");
    }
    if (r.partial_rotary_factor != 1.0f && r.type != RopeType::kProportional) {
      return bad(at, "partial rotation requires proportional RoPE");
    }
    if (r.RotatedPairs(l.head_dim) < 1) return bad(at, "RoPE rotates no dimensions");
    if (!l.owns_kv()) {
      ++shared;
      const int s = l.kv_source_layer;
      if (s >= i) return bad(at, "kv_source_layer ", s, " is not an earlier layer");
      const LayerConfig& src = c.layers[s];
      if (!src.owns_kv()) return bad(at, "kv_source_layer ", s, " does not own its KV");
      if (src.attention != l.attention) return bad(at, "kv_source_layer ", s, " is a different attention kind");
      if (src.num_kv_heads != l.num_kv_heads || src.head_dim != l.head_dim) {
        return bad(at, "KV shape differs from kv_source_layer ", s);
      }
    }
    any_moe |= l.moe;
  }
  if (shared != c.num_kv_shared_layers) {
    return bad("num_kv_shared_layers is ", c.num_kv_shared_layers, " but ", shared, " layers share KV");
  }
  if (any_moe) {
    if (c.num_experts <= 0 || c.top_k_experts <= 0 || c.top_k_experts > c.num_experts) {
      return bad("MoE layers need 0 < top_k_experts (", c.top_k_experts, ") <= num_experts (", c.num_experts, ")");
    }
    if (c.moe_intermediate_size <= 0) return bad("MoE layers need a positive moe_intermediate_size");
  }
  if (c.hidden_size_per_layer_input < 0) return bad("hidden_size_per_layer_input must not be negative");
  if (c.hidden_size_per_layer_input > 0 && c.vocab_size_per_layer_input <= 0) {
    return bad("per-layer embeddings need a positive vocab_size_per_layer_input");
  }
  for (auto [name, id] :
       {std::pair<const char*, int>{"pad_token_id", c.pad_token_id}, {"bos_token_id", c.bos_token_id}}) {
    if (id < 0 || id >= c.vocab_size) return bad(name, " ", id, " is outside the vocabulary (", c.vocab_size, ")");
  }
  for (int id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size)
      return bad("eos_token_id ", id, " is outside the vocabulary (", c.vocab_size, ")");
  }
  return absl::OkStatus();
}

namespace {

std::string DescribeLayer(const LayerConfig& l, const ModelConfig& c) {
  std::string s = absl::StrCat(Av(AttentionKindName(l.attention)), ": ", l.num_heads, " q / ", l.num_kv_heads,
                               " kv heads x ", l.head_dim);
  if (l.is_sliding()) absl::StrAppend(&s, ", window ", l.sliding_window);
  absl::StrAppend(&s, ", rope ", Av(RopeTypeName(l.rope.type)), " theta ", l.rope.theta);
  if (l.rope.factor != 1.0f) absl::StrAppend(&s, " /", l.rope.factor);
  if (l.rope.type == RopeType::kProportional) {
    absl::StrAppend(&s, " (", l.rope.RotatedPairs(l.head_dim), " of ", l.head_dim / 2, " pairs)");
  }
  if (l.k_eq_v) absl::StrAppend(&s, ", K=V");
  if (!l.owns_kv()) absl::StrAppend(&s, ", KV from layer ", l.kv_source_layer);
  absl::StrAppend(&s, ", mlp ", l.intermediate_size);
  if (l.moe) {
    absl::StrAppend(&s, " + ", c.num_experts, " experts x ", c.moe_intermediate_size, " top-", c.top_k_experts);
  }
  return s;
}

}  // namespace

std::string DescribeConfig(const ModelConfig& c) {
  std::string out =
      absl::StrCat(c.model_type, " (", Av(ModelFamilyName(c.family)), "): ", c.num_layers, " layers, hidden ",
                   c.hidden_size, ", vocab ", c.vocab_size, ", context ", c.max_position_embeddings);
  absl::StrAppend(&out, ", attention scale ", c.attention_scale);
  if (c.attn_logit_softcap > 0) absl::StrAppend(&out, ", attn softcap ", c.attn_logit_softcap);
  if (c.final_logit_softcap > 0) absl::StrAppend(&out, ", final softcap ", c.final_logit_softcap);
  if (c.HasPerLayerEmbeddings()) absl::StrAppend(&out, ", per-layer embeddings ", c.hidden_size_per_layer_input);
  absl::StrAppend(&out, "\n");
  // Group identical layer descriptions, in order of first appearance.
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (int i = 0; i < int(c.layers.size()); ++i) {
    std::string d = DescribeLayer(c.layers[i], c);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == d; });
    if (it == groups.end()) {
      groups.push_back({d, {i}});
    } else {
      it->second.push_back(i);
    }
  }
  for (const auto& [desc, idx] : groups) {
    absl::StrAppend(&out, "  ", idx.size(), " x ", desc, "\n");
  }
  return out;
}

}  // namespace facet
