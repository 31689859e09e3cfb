#!/usr/bin/env bash
# Installs every system dependency Facet builds against, from Debian packages.
# Idempotent: packages already present are skipped, so a second run is quick.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git python3
  # RPC and serialization
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # error handling, containers
  libabsl-dev
  # distributed CPU path
  libopenmpi-dev openmpi-bin
  # facet batch on Slurm: the single-host Slurm of tests/slurm (srun --mpi=pmix)
  slurmctld slurmd slurm-client munge
  # SIMD kernels
  libhwy-dev
  # config / tokenizer JSON, command line
  nlohmann-json3-dev libcli11-dev
  # OpenAI-compatible HTTP front
  libcpp-httplib-dev
  # venv for the Python test clients (openai, prometheus_client): scripts/setup-python.sh
  python3-venv
  # gRPC clients of tests/cluster (stubs from protoc + grpc_python_plugin)
  python3-grpcio python3-protobuf
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
