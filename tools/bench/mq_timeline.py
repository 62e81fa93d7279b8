#!/usr/bin/env python3
"""Summarise k_kvq_mma block timelines written by a build with -DMQ_PROF=1.

    cmake ... -DCMAKE_CUDA_FLAGS=-DMQ_PROF=1 && cmake --build ...
    OSC_MQ_PROF=/tmp/t.bin oscar bench --shape qwen2.5-omni-7b --device cuda --attn --kv oscar2 \\
        --batch 1 --ctx 131072 --reps 10
    python3 tools/bench/mq_timeline.py /tmp/t.bin

Each record (one per process, the last launch; see g_mq_prof in kernels/cuda/cuda_kvquant.cu)
is int32 NS, Hkv, B, B*Hkv*G, then uint64 [8192][8] globaltimer stamps (ns). Times are printed in
us from the earliest block start; "packed" blocks hold packed groups, "window" blocks only
residual-window tiles. Time one shape per process: the table is not cleared between launches,
so blocks the last launch skipped (a batch's unused splits) could show an earlier launch's stamps.
"""
import struct
import sys

ROWS, COLS = 8192, 8
REC = 16 + ROWS * COLS * 8


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def spread(name, v):
    if not v:
        return
    print("  %-22s min %6.2f  p10 %6.2f  p50 %6.2f  p90 %6.2f  max %6.2f"
          % (name, min(v), pct(v, .1), pct(v, .5), pct(v, .9), max(v)))


def summarise(rec):
    ns, hkv, b, nb = struct.unpack("4i", rec[:16])
    rows = [struct.unpack("8Q", rec[16 + 64 * i:16 + 64 * i + 64]) for i in range(ROWS)]
    blocks = [r for r in rows[:ns * hkv * b] if r[0]]
    comb = [r[0] for r in rows[8064:8064 + min(nb, 128)] if r[0]]
    if not blocks:
        print("no block stamps (was the build made with -DMQ_PROF=1?)")
        return
    t0 = min(r[0] for r in blocks)
    us = lambda t: (t - t0) / 1e3
    packed = [r for r in blocks if (r[7] >> 32) & 1]
    window = [r for r in blocks if not (r[7] >> 32) & 1]
    print("splits %d, KV heads %d, batch %d: %d blocks (%d packed, %d window only), groups a packed block %s"
          % (ns, hkv, b, len(blocks), len(packed), len(window), sorted({r[7] & 0xffff for r in packed})[:4]))
    spread("start", [us(r[0]) for r in blocks])
    spread("q' ready - start", [(r[1] - r[0]) / 1e3 for r in blocks])
    spread("first data - start", [(r[2] - r[0]) / 1e3 for r in packed if r[2]])
    spread("packed loop end", [us(r[3]) for r in packed])
    spread("window loop end", [us(r[3]) for r in window])
    spread("block partial", [(r[4] - r[3]) / 1e3 for r in blocks])
    spread("signal / merge", [(r[5] - r[4]) / 1e3 for r in blocks])
    print("  last block done %.2f" % max(us(r[5]) for r in blocks))
    if comb:
        print("  combine blocks end %.2f .. %.2f" % (us(min(comb)), us(max(comb))))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data = open(sys.argv[1], "rb").read()
    if len(data) < REC:
        sys.exit("%s: no complete record" % sys.argv[1])
    for i in range(0, len(data) - REC + 1, REC):
        summarise(data[i:i + REC])


if __name__ == "__main__":
    main()
