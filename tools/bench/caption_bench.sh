#!/usr/bin/env bash
# Videos/hour of `oscar caption` on the clips of make_clips.sh, with the oscar2 and the bf16 KV
# cache, and the largest batch that fits with each (the automatic --batch: free device memory
# after the weights and scratch / bytes of one KV slot).
# usage: tools/bench/caption_bench.sh BUILD_DIR CLIP_DIR [MODEL] [N_PREDICT] [EXTRA oscar ARGS...]
#   MODEL defaults to random:omni-7b (random weights, Qwen2.5-Omni-7B shapes; needs a Qwen
#   tokenizer.json via --tokenizer or $OSC_QWEN_TOKENIZER). Captions run for exactly N_PREDICT
#   tokens with random weights (no EOS), default 128.
set -euo pipefail
BUILD=${1:?usage: caption_bench.sh BUILD_DIR CLIP_DIR [MODEL] [N_PREDICT] [ARGS...]}
CLIPS=${2:?usage: caption_bench.sh BUILD_DIR CLIP_DIR [MODEL] [N_PREDICT] [ARGS...]}
MODEL=${3:-random:omni-7b}
NP=${4:-128}
shift $(($# < 4 ? $# : 4))
OUT=${OSC_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
n=$(ls "$CLIPS"/*.mp4 | wc -l)
printf '%-8s %8s %8s %8s %10s %12s\n' kv videos batch fits seconds videos/hour
for kv in oscar2 bf16; do
  rm -f "$OUT/caption_$kv.jsonl"
  t0=$(date +%s.%N)
  "$BUILD/oscar" caption -m "$MODEL" --kv "$kv" -n "$NP" --temp 0 --out "$OUT/caption_$kv.jsonl" "$@" "$CLIPS" \
    2> "$OUT/caption_$kv.log" || { echo "$kv: failed (see $OUT/caption_$kv.log)"; tail -3 "$OUT/caption_$kv.log"; continue; }
  t1=$(date +%s.%N)
  ok=$(grep -c '"error":null' "$OUT/caption_$kv.jsonl" || true)
  batch=$(sed -n 's/.* videos, batch \([0-9]*\),.*/\1/p' "$OUT/caption_$kv.log" | head -1)
  fits=$(sed -n 's/.*fits \([0-9]*\) KV slots.*/\1/p' "$OUT/caption_$kv.log" | head -1)
  awk -v kv="$kv" -v n="$ok" -v b="$batch" -v f="${fits:--}" -v t0="$t0" -v t1="$t1" \
    'BEGIN { s = t1 - t0; printf "%-8s %8d %8s %8s %10.1f %12.1f\n", kv, n, b, f, s, (s > 0 ? n / s * 3600 : 0) }'
done
echo "logs and JSONL in $OUT (of $n clips)"
