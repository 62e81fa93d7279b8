#!/usr/bin/env bash
# One device call (GPU time is scarce): build with CUDA, run the gpu tests, regenerate the
# goldens with transformers and compare them with the committed ones, then the benchmarks.
# Everything comes back as $OUT/results.tgz (the device tool returns at most 8 files).
# Run from the repository root with .deps carried:  bash tools/device_all.sh
set -u
OUT=${OUT:-/tmp/osc_out}
mkdir -p "$OUT/r"
export OSC_COMMIT=${OSC_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
finish() { (cd "$OUT/r" && tar czf "$OUT/results.tgz" .); }
trap finish EXIT
OUT="$OUT/r" bash tools/gpu_test.sh > "$OUT/r/gpu_test.out" 2>&1; echo "gpu tests rc=$?"
build-gpu/tests/gpu_test_kvquant_gpu > "$OUT/r/kvquant.log" 2>&1; echo "kvquant rc=$?"
build-gpu/tests/gpu_test_decoder_gpu > "$OUT/r/decoder_gpu.log" 2>&1; echo "decoder_gpu rc=$?"
timeout 120 python3 tools/golden/make_text_goldens.py --out /tmp/gold > "$OUT/r/golden.log" 2>&1
timeout 60 python3 tools/golden/check_goldens.py /tmp/gold tests/models > "$OUT/r/golden_check.log" 2>&1; echo "goldens rc=$?"
OUT="$OUT/r" timeout 360 bash tools/bench/run_gpu_bench.sh > "$OUT/r/bench.out" 2>&1; echo "bench rc=$?"
tail -3 "$OUT/r/gpu_test.out" "$OUT/r/golden_check.log"
