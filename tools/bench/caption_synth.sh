#!/usr/bin/env bash
# Videos/hour of `oscar caption` on N synthetic videos ("synthetic:WxH:SECONDS#i", made up by
# encoders/video.c, no FFmpeg needed: for GPU machines without it), with the oscar2 and the bf16
# KV cache, and the batch each ran with / the largest that fits (from free device memory).
# Decoding is not timed here (there is no file); measure it apart with a real clip on a machine
# with FFmpeg. CAPTION_KVS="oscar2" runs one mode only. usage: tools/bench/caption_synth.sh BUILD_DIR N [SECONDS] [WxH] [N_PREDICT] [ARGS...]
set -euo pipefail
BUILD=${1:?usage: caption_synth.sh BUILD_DIR N [SECONDS] [WxH] [N_PREDICT] [ARGS...]}
N=${2:?usage: caption_synth.sh BUILD_DIR N [SECONDS] [WxH] [N_PREDICT] [ARGS...]}
SEC=${3:-30}
SIZE=${4:-1280x720}
NP=${5:-64}
shift $(($# < 5 ? $# : 5))
OUT=${OSC_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for ((i = 0; i < N; i++)); do echo "synthetic:$SIZE:$SEC#$i"; done > "$OUT/list.txt"
printf '%-8s %8s %8s %8s %10s %12s\n' kv videos batch fits seconds videos/hour
for kv in ${CAPTION_KVS:-oscar2 bf16}; do
  rm -f "$OUT/caption_$kv.jsonl"
  t0=$(date +%s.%N)
  "$BUILD/oscar" caption -m random:omni-7b --kv "$kv" -n "$NP" --temp 0 --list "$OUT/list.txt" \
    --out "$OUT/caption_$kv.jsonl" "$@" 2> "$OUT/caption_$kv.log" ||
    { echo "$kv: failed (see $OUT/caption_$kv.log)"; tail -3 "$OUT/caption_$kv.log"; continue; }
  t1=$(date +%s.%N)
  ok=$(grep -c '"error":null' "$OUT/caption_$kv.jsonl" || true)
  batch=$(sed -n 's/.* videos, batch \([0-9]*\),.*/\1/p' "$OUT/caption_$kv.log" | head -1)
  fits=$(sed -n 's/.*fits \([0-9]*\) KV slots.*/\1/p' "$OUT/caption_$kv.log" | head -1)
  awk -v kv="$kv" -v n="$ok" -v b="${batch:--}" -v f="${fits:--}" -v t0="$t0" -v t1="$t1" \
    'BEGIN { s = t1 - t0; printf "%-8s %8d %8s %8s %10.1f %12.1f\n", kv, n, b, f, s, (s > 0 ? n / s * 3600 : 0) }'
done
echo "logs and JSONL in $OUT ($N videos of ${SEC}s $SIZE, $NP tokens each)"
