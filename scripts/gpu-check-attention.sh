#!/usr/bin/env bash
# Attention kernels on a GPU machine (issue 8): decode GB/s against the HBM
# peak, prefill TFLOP/s against 989, the K = V cache saving in bytes.
#   bash scripts/gpu-check-attention.sh [build-dir]   (default build/cuda)
# scripts/gpu-check.sh calls it last, with its output already going to the
# log; run on its own it appends to $OUT/gpu-check.log (or ./gpu-check.log).
# The correctness tests live in facet_gpu_tests (filter CudaAttention.*); when
# that binary is missing, the attention-only test binary runs here instead.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cuda}
DIR="$BUILD/kernels/cuda/attention"

# Nested under gpu-check.sh (some ancestor runs it)? Then stdout is the log.
nested=0
pid=$PPID
while [[ "$pid" -gt 1 ]]; do
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "gpu-check.sh"; then
    nested=1
    break
  fi
  pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
done
if [[ $nested -eq 0 ]]; then
  LOG=./gpu-check.log
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    LOG="$OUT/gpu-check.log"
  fi
  exec > >(tee -a "$LOG") 2>&1
fi

status=0
if [[ ! -x "$BUILD/kernels/cuda/facet_gpu_tests" && -x "$DIR/facet_gpu_attention_tests" ]]; then
  echo "--- facet_gpu_attention_tests (facet_gpu_tests not built)"
  timeout 60 "$DIR/facet_gpu_attention_tests" --gtest_color=no
  rc=$?
  echo "facet_gpu_attention_tests exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
fi

BENCH="$DIR/facet_gpu_attention_bench"
if [[ ! -x "$BENCH" ]]; then
  echo "missing $BENCH (cmake --build $BUILD --target facet_gpu_attention_bench)"
  exit 1
fi
echo "--- facet_gpu_attention_bench"
# gpu-check.sh gives this whole step 60 s; the full sweep takes well under that.
timeout 55 "$BENCH"
rc=$?
echo "facet_gpu_attention_bench exit code: $rc"
[[ $rc -ne 0 ]] && status=1
exit $status
