#!/usr/bin/env bash
# The one prepared check for a GPU machine. Run from the repository root with
# the CUDA build folder carried (default build/cuda; pass another as $1):
#   bash scripts/gpu-check.sh [build-dir]
# Prints the device, driver and libraries the binaries resolve, runs
# facet_gpu_tests (every CUDA kernel against its CPU twin), then
# facet_gpu_bench (GB/s and TFLOP/s against the card's peaks), then
# scripts/gpu-check-attention.sh and scripts/gpu-check-engine.sh if present. Everything goes to
# $OUT/gpu-check.log when OUT is set, else ./gpu-check.log. Each step has its
# own timeout; the whole script stays well inside 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cuda}
LOG=./gpu-check.log
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  LOG="$OUT/gpu-check.log"
fi
exec > >(tee "$LOG") 2>&1
START=$SECONDS
status=0
step() { echo; echo "=== $* ($((SECONDS - START)) s)"; }

step "device"
nvidia-smi -L || echo "nvidia-smi: not available"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
nvidia-smi | grep -m1 "CUDA Version" || true

TESTS="$BUILD/kernels/cuda/facet_gpu_tests"
BENCH="$BUILD/kernels/cuda/facet_gpu_bench"
step "libraries"
for b in "$TESTS" "$BENCH"; do
  if [[ ! -x "$b" ]]; then
    echo "missing $b (build it: cmake --preset cuda && cmake --build build/cuda --target facet_gpu_tests facet_gpu_bench)"
    status=1
    continue
  fi
  echo "$b:"
  ldd "$b" | sed 's/^/  /'
  if ldd "$b" | grep -q "not found"; then
    echo "  ^ unresolved libraries"
    status=1
  fi
done

if [[ -x "$TESTS" ]]; then
  step "facet_gpu_tests"
  timeout 120 "$TESTS" --gtest_brief=0 --gtest_color=no
  rc=$?
  echo "facet_gpu_tests exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
fi

if [[ -x "$BENCH" ]]; then
  step "facet_gpu_bench"
  timeout 120 "$BENCH"
  rc=$?
  echo "facet_gpu_bench exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
fi

if [[ -f scripts/gpu-check-attention.sh ]]; then
  step "attention (scripts/gpu-check-attention.sh)"
  timeout 60 bash scripts/gpu-check-attention.sh "$BUILD"
  rc=$?
  echo "gpu-check-attention exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
fi

# The whole engine on the GPU (issue 8): golden-model logits, CUDA graphs,
# NCCL with one rank, and an end-to-end bench at 27B/31B shapes. Its binaries
# link Debian libraries, carried in $BUILD/carry (scripts/gpu-carry-libs.sh).
if [[ -f scripts/gpu-check-engine.sh ]]; then
  step "engine (scripts/gpu-check-engine.sh)"
  timeout 170 bash scripts/gpu-check-engine.sh "$BUILD"
  rc=$?
  echo "gpu-check-engine exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
fi
step "done: status $status, log $LOG"
exit $status
