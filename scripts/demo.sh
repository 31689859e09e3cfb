#!/usr/bin/env bash
# The README's "main job": set up, build, and run Facet on the embedded CPU default.
# For now it tokenizes and detokenizes a sentence with the real Gemma 3 tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target facet
TOKENIZER="${FACET_TOKENIZER:-../shared/data/tokenizers/gemma3/tokenizer.json}"
PROMPT="${1:-Gemma runs on Facet: 日本語も大丈夫 🚀}"
echo "prompt: $PROMPT"
build/cpu/cli/facet tokenize --tokenizer "$TOKENIZER" --text "$PROMPT" --decode
