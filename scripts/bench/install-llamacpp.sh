#!/usr/bin/env bash
# Installs llama.cpp's OpenAI-compatible server — the llama-cpp-python
# package, compiled from its source on CPU — into a cached venv, so that
# compare-llamacpp.sh measures a peer on the same machine. Nothing of the
# peer is committed: sources, build and venv live under the cache only.
#
# `pip install llama-cpp-python[server]` also compiles llama.cpp's common,
# chat-parser and multimodal (mtmd) libraries, which the text server never
# loads; on 2 shared cores that is most of an hour. So: pip fetches the sdist
# and the Python dependencies, CMake builds only the `llama` target (with its
# ggml libraries) from the sdist with the same flags pip would use, and the
# package's Python code goes into the venv with those libraries beside it.
# FACET_LLAMACPP_PREBUILT=DIR (DIR/lib/*.so* + DIR/llama_cpp/) reuses an
# earlier build of the same version instead of compiling.
# Idempotent: a venv whose server already imports is reused as is.
set -euo pipefail
CACHE="${FACET_CACHE:-$HOME/.cache/facet}"
VENV="${FACET_LLAMACPP_VENV:-$CACHE/venv-llamacpp}"
VERSION="${FACET_LLAMACPP_VERSION:-0.3.36}"
WORK="$CACHE/llamacpp-$VERSION"
PREBUILT="${FACET_LLAMACPP_PREBUILT:-}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import llama_cpp.server.app' 2>/dev/null; then
  echo "install-llamacpp.sh: reusing $VENV"
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
# The package's runtime and [server] dependencies (its pyproject.toml).
"${PIP[@]}" install -q 'typing-extensions>=4.5.0' 'numpy>=1.20.0' 'diskcache>=5.6.1' 'jinja2>=2.11.3' \
  'uvicorn>=0.22.0' 'fastapi>=0.100.0' 'pydantic-settings>=2.0.1' 'sse-starlette>=1.6.1' \
  'starlette-context>=0.3.6,<0.4' 'PyYAML>=5.1'

if [ -z "$PREBUILT" ]; then
  mkdir -p "$WORK"
  if [ ! -d "$WORK/src" ]; then
    "${PIP[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
    mkdir -p "$WORK/src"
    tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK/src" --strip-components=1
  fi
  # CPU, native SIMD (as Facet's own build), shared libraries as the package loads them.
  cmake -S "$WORK/src/vendor/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_COMMON=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  nice -n 19 cmake --build "$WORK/build" --target llama -j "$(nproc)"
  PREBUILT="$WORK/prebuilt"
  mkdir -p "$PREBUILT/lib"
  cp -a "$WORK"/build/bin/lib*.so* "$PREBUILT/lib/"
  cp -a "$WORK/src/llama_cpp" "$PREBUILT/"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$SITE/llama_cpp"
cp -a "$PREBUILT/llama_cpp" "$SITE/llama_cpp"
mkdir -p "$SITE/llama_cpp/lib"
cp -a "$PREBUILT"/lib/lib*.so* "$SITE/llama_cpp/lib/"
"$VENV/bin/python" -c 'import llama_cpp, llama_cpp.server.app; print("install-llamacpp.sh: llama-cpp-python", llama_cpp.__version__, "(llama.cpp built from source, CPU)")'
