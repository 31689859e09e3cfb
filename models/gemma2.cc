// Gemma 2 decoder layer (spec §3.1). Attention softcap, the query scale and
// the alternating sliding/global pattern are all in the config.
#include "models/layer.h"

#include "kernels/cpu/ops.h"

namespace facet {

absl::Status Gemma2Layer(LayerContext& c, float* x) {
  RETURN_IF_ERROR(AttentionResidual(c, x));
  float* f = c.a.o.data();
  RETURN_IF_ERROR(DenseFeedForward(c, x, f));
  cpu::AddInPlace(x, f, c.T * c.config.hidden_size);
  return absl::OkStatus();
}

}  // namespace facet
