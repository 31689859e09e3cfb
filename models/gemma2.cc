// Gemma 2 decoder layer (spec §3.1). Attention softcap, the query scale and
// the alternating sliding/global pattern are all in the config.
#include "models/layer.h"

#include "kernels/cpu/ops.h"

namespace facet {

absl::Status Gemma2Layer(LayerContext& c, float* x) {
  const int64_t n = c.T * c.config.hidden_size;
  float* h = c.a.h.data();
  float* o = c.a.o.data();
  Norm(c, x, c.w.attn_norm, h);
  RETURN_IF_ERROR(SelfAttention(c, h, o));
  Norm(c, o, c.w.post_attn_norm, o);
  cpu::AddInPlace(x, o, n);

  Norm(c, x, c.w.ffn_norm, h);
  RETURN_IF_ERROR(GeGluMlp(c, c.w.gate, c.w.up, c.w.down, h, o));
  Norm(c, o, c.w.post_ffn_norm, o);
  cpu::AddInPlace(x, o, n);
  return absl::OkStatus();
}

}  // namespace facet
