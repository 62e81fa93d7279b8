#!/usr/bin/env python3
"""Reference timings for `oscar bench --attn`: torch's bf16 scaled_dot_product_attention on
the same decode shapes, per backend, plus the device-to-device copy bandwidth.

One decode step of one layer: q [B, 32, 1, 128], k/v [B, 8, T, 128], bf16 on CUDA.
GQA: passed with enable_gqa=True (torch >= 2.5); a backend that rejects it is retried with
k/v expanded to 32 heads (repeat_interleave, done outside the timed region) and the result
row says "gqa": "expanded". Backends via torch.nn.attention.sdpa_kernel: flash, cudnn,
efficient, math (math only where its memory fits). Timing: CUDA events around one call,
5 warm-ups, median of 50, the inputs rotate over enough fresh random sets (randn) to exceed
the L2 cache. Each call is timed twice: as launched (attn_us: the host's launch work between
the start event and the first kernel counts, as `oscar bench`'s median_us) and queued
(attn_dev_us: behind a torch.cuda._sleep kernel that outlasts the host's launch work, so the
events time the device work alone, as `oscar bench`'s dev_us). Copy: 1 GiB tensor copy_,
(read + write bytes) / time, median of 10.

usage: torch_sdpa.py OUT.json [--shapes 1x4096,1x32768,...] [--reps 50]
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, HKV, D = 32, 8, 128
DEFAULT_SHAPES = [(1, 4096), (1, 32768), (1, 131072), (8, 32768), (16, 8192)]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]


_hold = {"cycles": 0, "us": 2000.0}


def hold():
    """Queue a torch.cuda._sleep of about _hold["us"] microseconds (calibrated once)."""
    if not _hold["cycles"]:
        n = 1 << 22
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(n)  # warm
        torch.cuda.synchronize()
        a.record()
        torch.cuda._sleep(n)
        b.record()
        b.synchronize()
        _hold["cycles"] = max(1, int(n * _hold["us"] / (a.elapsed_time(b) * 1e3)))
    torch.cuda._sleep(_hold["cycles"])


def time_fn(fn, sets, reps, warm=5, queued=False):
    """Median and min us of fn over rotating sets; queued: behind a hold (device time alone),
    a rep whose host launch work outlasts half the hold is repeated with the hold doubled."""
    for i in range(warm):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    ts = []
    i = 0
    while len(ts) < reps:
        args = sets[i % len(sets)]
        i += 1
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        if queued:
            hold()
        h0 = time.perf_counter()
        a.record()
        fn(*args)
        b.record()
        host_us = (time.perf_counter() - h0) * 1e6
        b.synchronize()
        if queued and host_us > 0.5 * _hold["us"]:
            if _hold["us"] > 256e3:
                raise RuntimeError(f"host launch work of {host_us:.0f} us")
            _hold["us"] *= 2
            _hold["cycles"] *= 2
            continue
        ts.append(a.elapsed_time(b) * 1e3)  # us
    return statistics.median(ts), min(ts)


def copy_bw(reps=10):
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    src.random_(0, 255)
    dst = torch.empty_like(src)
    ts = []
    for i in range(reps + 2):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        if i >= 2:
            ts.append(a.elapsed_time(b) / 1e3)
    del src, dst
    return 2 * n / statistics.median(ts) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shapes", default=",".join(f"{b}x{t}" for b, t in DEFAULT_SHAPES))
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    if not torch.cuda.is_available():
        print("torch_sdpa.py: no CUDA device", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    gbps = copy_bw()
    print(f"copy bandwidth (1 GiB copy_, read+write, median of 10): {gbps:.1f} GB/s")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = []
    print(f"{'backend':10s} {'gqa':9s} {'batch':>6s} {'ctx':>8s} {'median_us':>10s} {'min_us':>10s} "
          f"{'GB/s':>8s} {'of_copy':>8s} {'dev_us':>10s} {'dev_of_copy':>11s}")
    for B, T in shapes:
        kv_bytes = 2 * B * HKV * T * D * 2
        nsets = max(1, min(16, -(-(256 << 20) // kv_bytes)))
        gen = torch.Generator(device=dev).manual_seed(1234 + T + B)
        sets = []
        for _ in range(nsets):
            q = torch.randn(B, HQ, 1, D, device=dev, dtype=torch.bfloat16, generator=gen)
            k = torch.randn(B, HKV, T, D, device=dev, dtype=torch.bfloat16, generator=gen)
            v = torch.randn(B, HKV, T, D, device=dev, dtype=torch.bfloat16, generator=gen)
            sets.append((q, k, v))
        for name, be in BACKENDS:
            row = {"kind": "torch_sdpa", "backend": name, "batch": B, "ctx": T, "hq": HQ, "hkv": HKV, "d": D,
                   "dtype": "bf16", "copy_gbps": gbps, "date": date, "torch": torch.__version__,
                   "device": torch.cuda.get_device_name(), "commit": os.environ.get("OSC_COMMIT"),
                   "timing": "CUDA events, 5 warm-ups, median of %d, %d rotating random input sets; "
                             "attn_dev_us: queued behind torch.cuda._sleep (device time alone)"
                             % (args.reps, nsets)}
            if name == "math" and B * HQ * T * 4 * 4 > (8 << 30):
                row["error"] = "skipped: math backend memory"
                results.append(row)
                continue
            err = None
            for gqa in ("enable_gqa", "expanded"):
                try:
                    if gqa == "enable_gqa":
                        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                        use = sets
                    else:
                        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
                        use = [(q, k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1))
                               for q, k, v in sets[:max(1, min(len(sets), 2))]]
                    with sdpa_kernel([be]):
                        # decode: one query sees every key, so no causal mask is needed
                        med, mn = time_fn(fn, use, args.reps)
                        dmed, dmn = time_fn(fn, use, args.reps, queued=True)
                    row.update(gqa=gqa, attn_us=med, attn_us_min=mn,
                               achieved_gbps=kv_bytes / (med * 1e-6) / 1e9,
                               attn_dev_us=dmed, attn_dev_us_min=dmn)
                    row["frac_of_copy"] = row["achieved_gbps"] / gbps
                    row["dev_frac_of_copy"] = kv_bytes / (dmed * 1e-6) / 1e9 / gbps
                    if gqa == "expanded":  # the expanded k/v read 4x the bytes
                        row["note"] = "k/v expanded to 32 heads; achieved_gbps counts the 8-head bytes"
                    err = None
                    break
                except Exception as e:  # noqa: BLE001 - a backend may not support the shape
                    err = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    torch.cuda.synchronize()
            if err:
                row["error"] = err
                print(f"{name:10s} {'-':9s} {B:6d} {T:8d} unsupported: {err[:80]}")
            else:
                print(f"{name:10s} {row['gqa']:9s} {B:6d} {T:8d} {row['attn_us']:10.1f} {row['attn_us_min']:10.1f} "
                      f"{row['achieved_gbps']:8.1f} {row['frac_of_copy']:8.2f} {row['attn_dev_us']:10.1f} "
                      f"{row['dev_frac_of_copy']:11.2f}")
            sys.stdout.flush()
            results.append(row)
        del sets
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump({"copy_gbps": gbps, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
