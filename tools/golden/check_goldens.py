#!/usr/bin/env python3
"""Compare freshly generated goldens (make_text_goldens.py --out DIR) with the committed ones.
Usage: python3 tools/golden/check_goldens.py NEW_DIR [tests/models]
Weights and ids must be identical; logits may differ only by float32 summation order."""
import sys

import numpy as np
from safetensors.numpy import load_file

new, old = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "tests/models")
bad = 0
for m in ("qwen2-tiny", "qwen3-tiny", "llama-tiny"):
    for f in ("model.safetensors", "golden.safetensors"):
        try:
            a, b = load_file(f"{new}/{m}/{f}"), load_file(f"{old}/{m}/{f}")
        except Exception as e:  # bf16 is not a numpy dtype: compare raw bytes then
            a = b = None
            same = open(f"{new}/{m}/{f}", "rb").read() == open(f"{old}/{m}/{f}", "rb").read()
            print(f"{m}/{f}: byte-identical={same} ({e.__class__.__name__})")
            bad += not same and f == "model.safetensors"
            continue
        if set(a) != set(b):
            print(f"{m}/{f}: tensor names differ"); bad += 1; continue
        for k in sorted(a):
            x, y = a[k], b[k]
            if x.dtype.kind in "iu":
                ok = np.array_equal(x, y)
                if not ok: print(f"{m}/{f}:{k}: ids differ"); bad += 1
            else:
                err = float(np.linalg.norm(x.astype(np.float64) - y) / max(np.linalg.norm(y.astype(np.float64)), 1e-30))
                print(f"{m}/{f}:{k}: rel. L2 difference {err:.2e}")
                bad += err > 1e-6
print("goldens reproduced" if bad == 0 else f"{bad} differences")
sys.exit(1 if bad else 0)
