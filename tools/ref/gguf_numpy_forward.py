#!/usr/bin/env python3
"""An independent reference for the real GGUF models: a float64 numpy forward of the decoder,
written from the GGUF conventions (llama.cpp's), not from oscar's code.

Weights: the `gguf` package reads the file and dequantizes every tensor (Q4_0/Q4_1/Q8_0/Q4_K/
Q6_K, ...) to float32; we compute in float64 on top. Tokenizer: a byte-level BPE built here from
the GGUF's own tokenizer data (tokenizer.ggml.tokens / merges / token_type, pre-tokenizer chosen
by tokenizer.ggml.pre).

Layout facts this relies on (GGUF / llama.cpp):
  * a 2-D tensor with GGUF shape [ne0, ne1] is a numpy array [ne1, ne0] = [out, in];
  * llama-architecture files store attn_q / attn_k with the rows of each head permuted
    (llama.cpp's converter reorders HF's half-split "rotate_half" layout into adjacent pairs),
    and llama.cpp applies RoPE to ADJACENT pairs (2i, 2i+1) ("normal" RoPE). We use exactly that
    on the stored weights: no un-permutation, so this is not the route oscar takes (oscar maps
    the rows back to HF's layout and uses half-split RoPE); both must give the same logits.
  * qwen2-architecture files are not permuted and use half-split (NeoX) RoPE, q/k/v biases.
  * no output.weight means the head is tied to token_embd.

Uses:
  golden   tests/models/smollm2-golden/: greedy ids and logits for tests/test_real_model.c
  keystats per-layer statistics of the per-token key norm (after RoPE) on a text file
  check    compare with transformers loading the same GGUF (a third implementation)

  python tools/ref/gguf_numpy_forward.py golden MODEL.gguf OUTDIR [--steps 32]
  python tools/ref/gguf_numpy_forward.py keystats MODEL.gguf TEXT [--n 512] [--json FILE]
  python tools/ref/gguf_numpy_forward.py check MODEL.gguf
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

try:
    import regex as re_u  # \p{L}, \p{N}
except ImportError:  # pragma: no cover
    sys.exit("needs the 'regex' package (pip install regex)")
import gguf


# ------------------------------------------------------------------ GGUF access

def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Model:
    def __init__(self, path, dtype=np.float64):
        self.path = path
        r = gguf.GGUFReader(path)
        self.r = r
        arch = field(r, "general.architecture")
        if arch not in ("llama", "qwen2"):
            raise SystemExit(f"{path}: architecture {arch!r} not handled by this reference")
        self.arch = arch
        self.n_layers = int(field(r, f"{arch}.block_count"))
        self.D = int(field(r, f"{arch}.embedding_length"))
        self.n_head = int(field(r, f"{arch}.attention.head_count"))
        self.n_kv = int(field(r, f"{arch}.attention.head_count_kv", self.n_head))
        self.hd = self.D // self.n_head
        self.eps = float(field(r, f"{arch}.attention.layer_norm_rms_epsilon"))
        self.base = float(field(r, f"{arch}.rope.freq_base", 10000.0))
        self.n_rot = int(field(r, f"{arch}.rope.dimension_count", self.hd))
        self.neox = arch == "qwen2"
        self.dtype = dtype
        self.t = {t.name: t for t in r.tensors}
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.t[name]
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(x) for x in reversed(t.shape))  # numpy order [ne1, ne0]
            self.cache[name] = np.asarray(a, dtype=np.float32).reshape(shape).astype(self.dtype)
        return self.cache[name]

    def has(self, name):
        return name in self.t

    def head(self):
        return self.w("output.weight") if self.has("output.weight") else self.w("token_embd.weight")

    # ---------------------------------------------------------------- forward
    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x [S, H, hd], pos [S]: llama.cpp normal (adjacent pairs) or neox (half split)."""
        n = self.n_rot
        inv = self.base ** (-np.arange(0, n, 2, dtype=np.float64) / n)  # [n/2]
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # [S, n/2]
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        y = x.copy()
        if self.neox:
            a, b = x[..., : n // 2], x[..., n // 2 : n]
            y[..., : n // 2] = a * c - b * s
            y[..., n // 2 : n] = a * s + b * c
        else:
            a, b = x[..., 0:n:2], x[..., 1:n:2]
            y[..., 0:n:2] = a * c - b * s
            y[..., 1:n:2] = a * s + b * c
        return y

    def new_cache(self):
        return [[None, None] for _ in range(self.n_layers)]

    def forward(self, ids, cache, probe=None):
        """ids: new tokens; cache: per layer [K, V] (after RoPE) or None. Returns logits [S, V]."""
        ids = np.asarray(ids, dtype=np.int64)
        S = len(ids)
        p0 = 0 if cache[0][0] is None else cache[0][0].shape[0]
        pos = np.arange(p0, p0 + S)
        H, Hk, hd = self.n_head, self.n_kv, self.hd
        x = self.w("token_embd.weight")[ids]
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.rmsnorm(x, self.w(p + "attn_norm.weight"))
            q = h @ self.w(p + "attn_q.weight").T
            k = h @ self.w(p + "attn_k.weight").T
            v = h @ self.w(p + "attn_v.weight").T
            if self.has(p + "attn_q.bias"):
                q = q + self.w(p + "attn_q.bias")
                k = k + self.w(p + "attn_k.bias")
                v = v + self.w(p + "attn_v.bias")
            q = self.rope(q.reshape(S, H, hd), pos)
            k = self.rope(k.reshape(S, Hk, hd), pos)
            v = v.reshape(S, Hk, hd)
            if probe is not None:
                probe(l, k)
            if cache[l][0] is not None:
                k = np.concatenate([cache[l][0], k], 0)
                v = np.concatenate([cache[l][1], v], 0)
            cache[l][0], cache[l][1] = k, v
            T = k.shape[0]
            g = H // Hk
            kk = np.repeat(k, g, axis=1)  # [T, H, hd]
            vv = np.repeat(v, g, axis=1)
            sc = np.einsum("shd,thd->hst", q, kk) / np.sqrt(hd)  # [H, S, T]
            mask = (np.arange(T)[None, :] <= (p0 + np.arange(S))[:, None])  # [S, T]
            sc = np.where(mask[None], sc, -np.inf)
            sc = sc - sc.max(-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(-1, keepdims=True)
            att = np.einsum("hst,thd->shd", pr, vv).reshape(S, H * hd)
            x = x + att @ self.w(p + "attn_output.weight").T
            h = self.rmsnorm(x, self.w(p + "ffn_norm.weight"))
            gt = h @ self.w(p + "ffn_gate.weight").T
            up = h @ self.w(p + "ffn_up.weight").T
            x = x + (gt / (1 + np.exp(-gt)) * up) @ self.w(p + "ffn_down.weight").T
        x = self.rmsnorm(x, self.w("output_norm.weight"))
        return x @ self.head().T


# ------------------------------------------------------------------ tokenizer

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


class Tokenizer:
    def __init__(self, r):
        if field(r, "tokenizer.ggml.model") != "gpt2":
            raise SystemExit("only byte-level BPE (tokenizer.ggml.model = gpt2) is handled")
        self.pre = field(r, "tokenizer.ggml.pre")
        if self.pre not in ("smollm", "qwen2"):
            raise SystemExit(f"pre-tokenizer {self.pre!r} not handled")
        self.tokens = field(r, "tokenizer.ggml.tokens")
        types = field(r, "tokenizer.ggml.token_type")
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {}
        for i, m in enumerate(field(r, "tokenizer.ggml.merges")):
            a, b = m.split(" ")
            self.ranks[(a, b)] = i
        # control (3) and user-defined (4) tokens are matched whole in the text
        self.special = sorted((self.tokens[i] for i, t in enumerate(types) if t in (3, 4)), key=len, reverse=True)
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.re = re_u.compile(QWEN2_RE if self.pre == "qwen2" else GPT2_RE)

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                rk = self.ranks.get((parts[i], parts[i + 1]))
                if rk is not None and (best is None or rk < best[0]):
                    best = (rk, i)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode_plain(self, text):
        pieces = [text]
        if self.pre == "smollm":  # digits one by one, then the GPT-2 pattern
            pieces = [p for p in re_u.split(r"(\p{N})", text) if p]
        out = []
        for piece in pieces:
            for w in self.re.findall(piece):
                out += self.bpe("".join(self.b2u[b] for b in w.encode("utf-8")))
        return out

    def encode(self, text):
        out, i, start = [], 0, 0
        while i < len(text):
            m = next((s for s in self.special if text.startswith(s, i)), None)
            if m:
                out += self.encode_plain(text[start:i])
                out.append(self.vocab[m])
                i += len(m)
                start = i
            else:
                i += 1
        return out + self.encode_plain(text[start:])

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            t = self.tokens[i]
            if t in self.special:
                bs += t.encode()
            else:
                bs += bytes(self.u2b[c] for c in t)
        return bs.decode("utf-8", errors="replace")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------ commands

SMOL_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
               "<|im_start|>user\nWhat is the capital of France? Answer in two sentences.<|im_end|>\n"
               "<|im_start|>assistant\n")


def cmd_golden(a):
    m = Model(a.model)
    tok = Tokenizer(m.r)
    ids = tok.encode(a.prompt)
    cache = m.new_cache()
    logits = m.forward(ids, cache)
    prompt_logits = logits.copy()
    gen, steps = [], []
    last = logits[-1]
    for _ in range(a.steps):
        order = np.argsort(-last, kind="stable")
        top = order[: a.topk]
        nxt = int(order[0])
        steps.append({"ids": [int(i) for i in top], "logits": [float(last[i]) for i in top],
                      "margin": float(last[order[0]] - last[order[1]])})
        gen.append(nxt)
        last = m.forward([nxt], cache)[-1]
    os.makedirs(a.out, exist_ok=True)
    from safetensors.numpy import save_file
    # full float32 logits of the last prompt position and of the first generated token
    save_file({"prompt_ids": np.asarray(ids, dtype=np.int32),
               "greedy_ids": np.asarray(gen, dtype=np.int32),
               "logits_last_prompt": prompt_logits[-1].astype(np.float32),
               "logits_first_prompt": prompt_logits[0].astype(np.float32)},
              os.path.join(a.out, "golden.safetensors"))
    meta = {
        "what": "greedy continuation by SmolLM2-135M-Instruct (GGUF Q4_1) computed by tools/ref/gguf_numpy_forward.py "
                "(float64 numpy over the gguf package's dequantized weights)",
        "model_file": os.path.basename(a.model), "model_sha256": sha256(a.model),
        "prompt": a.prompt, "prompt_ids": ids, "greedy_ids": gen,
        "greedy_text": tok.decode(gen), "steps": steps,
        "min_margin": min(s["margin"] for s in steps),
    }
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"prompt {len(ids)} ids; greedy: {tok.decode(gen)!r}; min top1-top2 margin {meta['min_margin']:.4f}")


def cmd_keystats(a):
    m = Model(a.model, dtype=np.float32 if a.f32 else np.float64)
    tok = Tokenizer(m.r)
    with open(a.text, encoding="utf-8") as f:
        ids = tok.encode(f.read())[: a.n]
    norms = {}  # layer -> list of per-chunk arrays of per-token norms

    def probe(l, k):  # k [S, Hkv, hd] after RoPE: one norm per token over all kv heads
        norms.setdefault(l, []).append(np.sqrt((k.astype(np.float64) ** 2).sum(axis=(1, 2))))

    cache = m.new_cache()
    for s in range(0, len(ids), a.chunk):  # chunks only bound memory; attention is exact
        m.forward(ids[s : s + a.chunk], cache, probe)
    print(f"{os.path.basename(a.model)}: per-token key norm ||concat_h k_h|| after RoPE, {len(ids)} tokens of {a.text}")
    print("layer    mean     max     min   token0  max/median  grp32 max/min (median, max)")
    out = []
    for l in sorted(norms):
        n = np.concatenate(norms[l])
        g = n[: (len(n) // 32) * 32].reshape(-1, 32)
        r = g.max(1) / g.min(1)
        e = {"layer": l, "mean": float(n.mean()), "max": float(n.max()), "min": float(n.min()), "tok0": float(n[0]),
             "max_over_median": float(n.max() / np.median(n)),
             "group32_max_over_min_p50": float(np.median(r)), "group32_max_over_min_max": float(r.max())}
        out.append(e)
        print(f"{l:5d} {e['mean']:7.2f} {e['max']:7.2f} {e['min']:7.2f} {e['tok0']:8.2f} {e['max_over_median']:10.2f}"
              f"   {e['group32_max_over_min_p50']:6.2f} {e['group32_max_over_min_max']:8.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": os.path.basename(a.model), "text": a.text, "tokens": len(ids), "layers": out}, f, indent=1)


def cmd_check(a):
    """Third implementation: transformers' GGUF loader (model and tokenizer) on the same file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, fn = os.path.split(os.path.abspath(a.model))
    m = Model(a.model)
    tok = Tokenizer(m.r)
    ht = AutoTokenizer.from_pretrained(d, gguf_file=fn)
    texts = [a.prompt, "Hello world! 12345 tokens, naïve café -- done.\n\n  indented\tline", open(a.text).read()[:3000]]
    for t in texts:
        mine, theirs = tok.encode(t), ht.encode(t, add_special_tokens=False)
        print(f"tokenizer: {len(mine)} ids, transformers {len(theirs)}: {'same' if mine == theirs else 'DIFFERENT'}")
    hm = AutoModelForCausalLM.from_pretrained(d, gguf_file=fn, torch_dtype=torch.float32)
    ids = tok.encode(a.prompt)
    ref = m.forward(ids, m.new_cache())
    with torch.no_grad():
        hl = hm(torch.tensor([ids])).logits[0].double().numpy()
    err = np.linalg.norm(ref - hl, axis=1) / np.linalg.norm(hl, axis=1)
    print(f"logits: numpy float64 vs transformers float32, max row rel. L2 {err.max():.2e}; "
          f"argmax equal at {int((ref.argmax(1) == hl.argmax(1)).sum())}/{len(ids)} positions")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden")
    g.add_argument("model")
    g.add_argument("out")
    g.add_argument("--steps", type=int, default=32)
    g.add_argument("--topk", type=int, default=8)
    g.add_argument("--prompt", default=SMOL_PROMPT)
    k = sub.add_parser("keystats")
    k.add_argument("model")
    k.add_argument("text")
    k.add_argument("--n", type=int, default=512)
    k.add_argument("--chunk", type=int, default=256)
    k.add_argument("--f32", action="store_true", help="float32 compute (less memory for big models)")
    k.add_argument("--json")
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("--prompt", default=SMOL_PROMPT)
    c.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    a = ap.parse_args()
    {"golden": cmd_golden, "keystats": cmd_keystats, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    main()
