#!/usr/bin/env bash
# Make N synthetic 720p clips for `oscar caption` benchmarks with FFmpeg's lavfi sources:
# 30 s (default) of testsrc2 / mandelbrot / cellauto-style motion at 30 fps, H.264 yuv420p
# + a sine (AAC mono), each a little different (size of the moving pattern, tone).
# usage: tools/bench/make_clips.sh N OUT_DIR [SECONDS] [WxH]
set -euo pipefail
N=${1:?usage: make_clips.sh N OUT_DIR [SECONDS] [WxH]}
OUT=${2:?usage: make_clips.sh N OUT_DIR [SECONDS] [WxH]}
SEC=${3:-30}
SIZE=${4:-1280x720}
mkdir -p "$OUT"
for ((i = 0; i < N; i++)); do
  f=$(printf '%s/clip_%04d.mp4' "$OUT" "$i")
  [ -s "$f" ] && continue
  case $((i % 3)) in
    0) src="testsrc2=size=$SIZE:rate=30" ;;
    1) src="mandelbrot=size=$SIZE:rate=30:start_scale=$((2 + i % 5))" ;;
    2) src="life=size=$SIZE:rate=30:mold=10:seed=$i,format=yuv420p" ;;
  esac
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$src" \
    -f lavfi -i "sine=frequency=$((220 + 37 * i)):sample_rate=16000" -t "$SEC" \
    -c:v libx264 -preset veryfast -crf 28 -pix_fmt yuv420p -c:a aac -b:a 32k -ac 1 -shortest "$f"
done
echo "made $N clips of ${SEC}s ${SIZE} in $OUT"
