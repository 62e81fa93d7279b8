#!/usr/bin/env bash
# Benchmarks on the GPU machine (docs/PERFORMANCE.md). Run from the repository root after
# build-gpu/ holds a CUDA build (cmake -S . -B build-gpu -DOSC_CUDA=ON ...). Results go to
# $OUT (default ./bench-out): attn.json, torch_sdpa.json, e2e.json and bench.log.
# Each step has a timeout so the whole script stays under 6 minutes; a failing step is
# logged and the next one still runs. Exit status: the number of failed steps.
set -u
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
BIN=${BIN:-build-gpu/oscar}
LOG=$OUT/bench.log
export OSC_COMMIT=${OSC_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
PY=${PYTHON:-python3}
fails=0

step() { # step NAME SECONDS CMD...
    local name=$1 secs=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${secs}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout --kill-after=10 "$secs" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || fails=$((fails + 1))
}

{
    echo "oscar GPU benchmarks, commit $OSC_COMMIT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv 2>/dev/null
} | tee "$LOG"

if [ ! -x "$BIN" ]; then
    echo "run_gpu_bench.sh: $BIN not found: build build-gpu first" | tee -a "$LOG"
    exit 1
fi

# 1. decode attention microbenchmark, the VERIFY.md shapes (32q/8kv, d128), and one decode step
#    of attention through the bf16 and the oscar2 cache at the same shapes
step attn 120 "$BIN" bench --shape qwen2.5-omni-7b --device cuda --attn --kv bf16,oscar2 --json "$OUT/attn.json"
# 2. torch SDPA (flash, cuDNN, efficient, math) on the same shapes + copy bandwidth
step torch_sdpa 110 "$PY" tools/bench/torch_sdpa.py "$OUT/torch_sdpa.json"
# 3. end to end, Qwen2.5-Omni-7B shape with random weights, bf16 vs oscar2 cache. Caches are
#    filled with random K/V (--fill random): prefilling 16 x 32K tokens would not fit the time
#    limit; the prefill throughput column still times a real 2048-token prefill per context.
step e2e 200 "$BIN" bench --shape qwen2.5-omni-7b --device cuda --ctx 4096,32768 --batch 1,16 --gen 8 \
    --kv bf16,oscar2 --fill random --json "$OUT/e2e.json"
# 4. vision encoder (7B shape): images/s at 448 and 1024, time to first token of an image question
step vision 120 "$BIN" bench --vision --device cuda --json "$OUT/vision.json"
# 5. audio encoder real-time factor on 30 s and 10 min (7B shape, random weights)
step audio30 60 "$BIN" listen -m random:7b --audio-seconds 30 --device cuda --json
step audio600 90 "$BIN" listen -m random:7b --audio-seconds 600 --device cuda --json
# 6. batch captioning (needs CLIPS=dir of clips from tools/bench/make_clips.sh and a Qwen
#    tokenizer.json in OSC_QWEN_TOKENIZER)
if [ -n "${CLIPS:-}" ]; then
    step caption 240 bash tools/bench/caption_bench.sh "$(dirname "$BIN")" "$CLIPS" random:omni-7b "${CAPTION_N:-64}"
else # no clips (or no FFmpeg on the GPU machine): synthetic 30 s 720p videos, decoding not timed
    step caption_synth 300 bash tools/bench/caption_synth.sh "$(dirname "$BIN")" "${CAPTION_VIDEOS:-16}" 30 1280x720 \
        "${CAPTION_N:-64}"
fi

echo "=== done: $fails step(s) failed; results in $OUT" | tee -a "$LOG"
exit "$fails"
