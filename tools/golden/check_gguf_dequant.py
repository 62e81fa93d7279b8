#!/usr/bin/env python3
"""Check oscar's GGUF reader on a real model file against the `gguf` Python package.

For a few tensors of the file (every tensor type present, plus token_embd, the first and last
layer's attention and FFN weights, output_norm) the package's gguf.quants.dequantize output is
written to a golden GGUF (float32) in a temporary folder; then the test binary compares, tensor by
tensor, what core/gguf.c dequantizes from the model file (OSC_GGUF_CHECK_MODEL /
OSC_GGUF_CHECK_GOLDEN mode of tests/test_gguf.c) and prints bit-identical counts and max diffs.
The model file is not committed (scripts/fetch_models.sh fetches it).

Usage: python3 tools/golden/check_gguf_dequant.py MODEL.gguf [--build build] [--all]
  --all   every tensor (needs 4 bytes per weight of temporary disk)
Needs numpy and gguf (pip install gguf).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import gguf


def pick(reader, everything):
    if everything:
        return list(reader.tensors)
    by_name = {t.name: t for t in reader.tensors}
    names, seen = [], set()
    for t in reader.tensors:  # one of every type
        if t.tensor_type not in seen:
            seen.add(t.tensor_type)
            names.append(t.name)
    n_layers = 1 + max((int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")), default=0)
    for n in ["token_embd.weight", "output.weight", "output_norm.weight"] + [
            f"blk.{l}.{w}.weight" for l in (0, n_layers - 1) for w in ("attn_q", "attn_k", "attn_v", "ffn_down")]:
        if n in by_name and n not in names:
            names.append(n)
    return [by_name[n] for n in names]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "..", "build"))
    ap.add_argument("--all", action="store_true")
    a = ap.parse_args()
    r = gguf.GGUFReader(a.model)
    tensors = pick(r, a.all)
    with tempfile.TemporaryDirectory() as tmp:
        golden = os.path.join(tmp, "golden.gguf")
        w = gguf.GGUFWriter(golden, "golden")
        for t in tensors:
            d = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            w.add_tensor(t.name, np.ascontiguousarray(d.reshape(-1)))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        exe = os.path.join(a.build, "tests", "test_gguf")
        env = dict(os.environ, OSC_GGUF_CHECK_MODEL=a.model, OSC_GGUF_CHECK_GOLDEN=golden)
        print(f"{a.model}: {len(r.tensors)} tensors, checking {len(tensors)}", flush=True)
        sys.exit(subprocess.run([exe], env=env).returncode)


if __name__ == "__main__":
    main()
