// Gemma 3 decoder layer (spec §3.1, §4.2): Gemma 2's sandwich norms with
// per-head q/k RMSNorm inside attention (SelfAttention applies them when the
// weights are present) and no attention softcap.
#include "models/layer.h"

#include "kernels/cpu/ops.h"

namespace facet {

absl::Status Gemma3Layer(LayerContext& c, float* x) {
  // The order of operations is Gemma 2's; what differs (q/k norms, 5:1
  // local/global, RoPE per layer kind) lives in LayerConfig and the weights.
  return Gemma2Layer(c, x);
}

}  // namespace facet
