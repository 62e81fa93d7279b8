#!/usr/bin/env bash
# Make samples/speech.wav: a few seconds of synthetic English speech, 16 kHz mono 16-bit PCM.
# Needs espeak-ng and ffmpeg (Debian/Ubuntu: apt-get install -y espeak-ng ffmpeg). The WAV is
# committed, so neither the build nor CI needs these tools.
#   tools/make_speech_sample.sh [out.wav]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-samples/speech.wav}
TEXT="The quick brown fox jumps over the lazy dog. OScaR keeps a two bit cache accurate."
for t in espeak-ng ffmpeg; do
  command -v "$t" >/dev/null || { echo "make_speech_sample: $t not found (apt-get install -y espeak-ng ffmpeg)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# espeak-ng writes 22.05 kHz mono; voice en-us, 150 words per minute.
espeak-ng -v en-us -s 150 -w "$tmp/raw.wav" "$TEXT"
# To 16 kHz with the soxr resampler (what librosa uses), no metadata chunks.
ffmpeg -v error -y -i "$tmp/raw.wav" -af aresample=resampler=soxr -ar 16000 -ac 1 -c:a pcm_s16le \
  -fflags +bitexact -flags +bitexact -map_metadata -1 "$OUT"
echo "make_speech_sample: wrote $OUT ($(stat -c %s "$OUT") bytes): \"$TEXT\""
