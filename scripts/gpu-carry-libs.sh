#!/usr/bin/env bash
# Prepares the engine's GPU binaries for a GPU machine that has only libc,
# libstdc++, the CUDA driver, cudart, cuBLAS(Lt) and NCCL: copies each binary
# stripped into BUILD/carry/bin and every Debian shared library it resolves
# (per ldd: abseil, Highway, gRPC, Protobuf, OpenMPI, ...) stripped into
# BUILD/carry/lib, and checks that the folder stays under the 64 MiB a
# device run may carry. scripts/gpu-check-engine.sh puts carry/lib on
# LD_LIBRARY_PATH.
#   bash scripts/gpu-carry-libs.sh [build-dir]          (default build/cuda)
# Builds the binaries first when `--build` is given as the second argument:
#   bash scripts/gpu-carry-libs.sh build/gpueng --build
# Then carry BUILD/carry (the device tool's `carry: ["BUILD/carry"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cuda}
BINS=(
  "models/cuda/facet_cuda_model_tests"
  "worker/facet_cuda_executor_tests"
  "cli/facet"
)
OPTIONAL_BINS=("models/cuda/facet_nccl_one_rank_tests")
LIMIT_MIB=60  # the device tool carries 64 MiB in all

if [[ "${2:-}" == "--build" ]]; then
  targets=(facet_cuda_model_tests facet_cuda_executor_tests facet)
  if grep -q "facet_nccl_one_rank_tests" "$BUILD/build.ninja" 2>/dev/null; then
    targets+=(facet_nccl_one_rank_tests)
  fi
  cmake --build "$BUILD" --target "${targets[@]}" -j"$(nproc)"
fi

# What the GPU machine brings itself (or must not be replaced): the C and
# C++ runtimes, the dynamic loader, and the CUDA libraries of its image.
is_system() {
  case "$(basename "$1")" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libstdc++.so*|\
    libgcc_s.so*|libcuda.so*|libcudart.so*|libcublas*.so*|libnccl.so*|libnvidia*) return 0 ;;
  esac
  return 1
}

OUTDIR="$BUILD/carry"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/bin" "$OUTDIR/lib"
bins=()
for b in "${BINS[@]}"; do
  if [[ ! -x "$BUILD/$b" ]]; then
    echo "missing $BUILD/$b (run with --build, or cmake --build $BUILD --target $(basename "$b"))" >&2
    exit 1
  fi
  bins+=("$BUILD/$b")
done
for b in "${OPTIONAL_BINS[@]}"; do
  [[ -x "$BUILD/$b" ]] && bins+=("$BUILD/$b")
done

for b in "${bins[@]}"; do
  strip --strip-unneeded -o "$OUTDIR/bin/$(basename "$b")" "$b"
  # "name => /path (addr)" lines; "not found" is an error here already.
  if ldd "$b" | grep -q "not found"; then
    echo "$b has unresolved libraries on this machine:" >&2
    ldd "$b" | grep "not found" >&2
    exit 1
  fi
  while read -r path; do
    [[ -z "$path" ]] && continue
    is_system "$path" && continue
    dest="$OUTDIR/lib/$(basename "$path")"
    [[ -e "$dest" ]] && continue
    strip --strip-unneeded -o "$dest" "$(readlink -f "$path")" 2>/dev/null || cp -L "$path" "$dest"
  done < <(ldd "$b" | awk '/=> \// {print $3}')
done

size_kib=$(du -sk "$OUTDIR" | awk '{print $1}')
echo "carry folder $OUTDIR: $((size_kib / 1024)) MiB ($(ls "$OUTDIR/lib" | wc -l) libraries, ${#bins[@]} binaries)"
if (( size_kib > LIMIT_MIB * 1024 )); then
  echo "over the ${LIMIT_MIB} MiB budget: build fewer binaries or drop libraries" >&2
  du -sk "$OUTDIR"/bin/* "$OUTDIR"/lib/* | sort -n | tail -8 >&2
  exit 1
fi
