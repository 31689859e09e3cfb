#!/usr/bin/env bash
# The Python packages the tests drive Facet with (clients no one here wrote):
# the official `openai` client, prometheus_client's text-format parser, and
# matplotlib for the serving benchmark's plot. Installed with pip into a venv
# under the cache (Debian's system Python refuses pip installs).
# Idempotent: a venv that already imports them is reused. Prints the venv's
# python on the last line.
set -euo pipefail
VENV="${FACET_TEST_VENV:-${FACET_CACHE:-$HOME/.cache/facet}/venv-test}"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c 'import openai, prometheus_client, matplotlib' 2>/dev/null; then
  echo "$PY"
  exit 0
fi
python3 -m venv "$VENV" >&2
"$PY" -m pip install -q --upgrade pip >&2
"$PY" -m pip install -q 'openai>=1.40' 'prometheus_client>=0.20' matplotlib >&2
"$PY" -c 'import openai, prometheus_client, matplotlib' >&2
echo "$PY"
