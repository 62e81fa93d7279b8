#!/usr/bin/env bash
# Run on the GPU test machine (torch 2.11 + transformers 5.17, no network) from the repo root:
#   bash tools/golden/run_on_device.sh
# Writes tests/models/{qwen2,qwen3,llama}-tiny/ and returns them through $OUT as goldens.tgz,
# with the full log as golden.log. Unpack here with: tar xzf goldens.tgz   (from the repo root)
set -o pipefail
OUT="${OUT:-/tmp/golden_out}"
mkdir -p "$OUT"
python3 tools/golden/make_text_goldens.py --out tests/models 2>&1 | tee "$OUT/golden.log"
rc=$?
tar czf "$OUT/goldens.tgz" tests/models/*-tiny
ls -l "$OUT"
du -sh tests/models/*-tiny
echo "make_text_goldens.py exit code: $rc"
exit $rc
