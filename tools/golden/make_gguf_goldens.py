#!/usr/bin/env python3
"""Make the GGUF test files in tests/models/gguf/ with the `gguf` Python package (llama.cpp's
gguf-py: its GGUFWriter, gguf.quants.quantize and gguf.quants.dequantize are the reference).

Writes:
  quants.gguf          one sample tensor of every type the reader dequantizes (F32, F16, BF16,
                       Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 quantized by the package; Q2_K..Q6_K, which
                       the package cannot quantize, as random blocks with finite f16 scales),
                       each followed by NAME.golden: the package's float32 dequantization. Also
                       an IQ4_NL tensor (a type the reader parses but does not convert), metadata
                       of every value type (nested arrays, unicode strings), general.alignment 64.
  llama-tiny.gguf      tests/models/{llama,qwen2,qwen3}-tiny converted the way llama.cpp's
  qwen2-tiny.gguf      convert_hf_to_gguf.py does it: 2-D weights bf16 (the checkpoint's own
  qwen3-tiny.gguf      values), 1-D tensors f32, llama Q/K rows permuted for llama.cpp's
                       interleaved rope, llama3 rope scaling as a rope_freqs.weight tensor,
                       tied embeddings as a missing output.weight, tokenizer as
                       tokenizer.ggml.* (vocab padded to vocab_size with [PADn] unused tokens,
                       added tokens as CONTROL (special) or USER_DEFINED).
  tok-gpt2.gguf        vocab-only files built from tests/models/tokenizer/gpt2-tiny with
  tok-gpt2-prefix.gguf tokenizer.ggml.pre "gpt-2" (with and without add_space_prefix) and
  tok-smollm.gguf      "smollm" (digits split one by one, then the GPT-2 regex)
  tokenizer_goldens.json  for each tok-*.gguf: the ids the HuggingFace `tokenizers` library gives
                       for every text of tests/models/tokenizer/goldens.json (gpt2-tiny cases,
                       in order), with the pre-tokenizer that llama.cpp's pre name stands for.

Deterministic (fixed seeds); run it twice and diff. Needs numpy, torch, safetensors, tokenizers
and gguf (pip install gguf). Usage: python3 tools/golden/make_gguf_goldens.py
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "models")
OUT = os.path.join(MODELS, "gguf")


# ---- quants.gguf -------------------------------------------------------------------------

def random_k_blocks(rng, qtype, n_blocks):
    """Random bytes for n_blocks blocks of a k-quant, with every f16 scale finite."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    def put_f16(col, scale):
        v = (rng.standard_normal(n_blocks) * scale).astype(np.float16)
        b[:, col:col + 2] = v.view(np.uint8).reshape(n_blocks, 2)
    if qtype in (T.Q4_K, T.Q5_K):
        put_f16(0, 0.02)   # d
        put_f16(2, 0.01)   # dmin
    elif qtype == T.Q2_K:
        put_f16(type_size - 4, 0.02)
        put_f16(type_size - 2, 0.01)
    elif qtype in (T.Q3_K, T.Q6_K):
        put_f16(type_size - 2, 0.005)
    return b


def make_quants():
    rng = np.random.default_rng(20261128)
    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), "oscar-test")
    w.add_custom_alignment(64)
    # metadata of every value type
    V = gguf.GGUFValueType
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld ✓")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_key_value("test.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_f32", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_array("test.arr_str", ["a", "", "ünï", "two words"])
    w.add_array("test.arr_nested", [[1, 2], [3]])
    w.add_key_value("test.arr_nested2", [[["x"], ["y", "z"]], [["w"]]], V.ARRAY)

    def add(name, data, qtype):
        q = quantize(data, qtype)
        w.add_tensor(name, q, raw_dtype=qtype)
        w.add_tensor(name + ".golden", dequantize(q, qtype).astype(np.float32))

    def normal(*shape, scale=1.0):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        return x

    # float types: odd sizes, subnormal and signed-zero values for the 16-bit ones
    f = normal(3, 7, scale=3.0)
    f[0, 0] = 1e30
    f[0, 1] = -1e-30
    w.add_tensor("t.f32", f)
    w.add_tensor("t.f32.golden", f)
    h = normal(3, 7, scale=2.0)
    h[0, :4] = [6e-8, -3e-6, 0.0, -0.0]
    h16 = h.astype(np.float16)
    w.add_tensor("t.f16", h16)
    w.add_tensor("t.f16.golden", h16.astype(np.float32))
    b = normal(2, 5, scale=100.0)
    b[0, :3] = [1e-40, -0.0, 3e38]
    add("t.bf16", b, T.BF16)
    # 32-element blocks: rows of 96 (3 blocks), a 3-D one, and blocks with an all-zero row
    for name, qt in (("t.q8_0", T.Q8_0), ("t.q4_0", T.Q4_0), ("t.q4_1", T.Q4_1), ("t.q5_0", T.Q5_0),
                     ("t.q5_1", T.Q5_1)):
        x = normal(3, 96)
        x[1] *= 0.01
        x[2, :32] = 0.0
        add(name, x, qt)
    add("t.q8_0_3d", normal(2, 3, 64, scale=0.5), T.Q8_0)
    # k-quants: random blocks, 3 rows of 512 (2 super-blocks each)
    for name, qt in (("t.q2_k", T.Q2_K), ("t.q3_k", T.Q3_K), ("t.q4_k", T.Q4_K), ("t.q5_k", T.Q5_K),
                     ("t.q6_k", T.Q6_K)):
        blocks = random_k_blocks(rng, qt, 6).reshape(3, -1)
        w.add_tensor(name, blocks, raw_dtype=qt)
        w.add_tensor(name + ".golden", dequantize(blocks, qt).astype(np.float32))
    # a type the reader parses but does not convert (no golden)
    w.add_tensor("t.iq4_nl", rng.integers(0, 256, size=(2, 36), dtype=np.uint8), raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- tiny models -------------------------------------------------------------------------

def llama_permute(x, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (HF rotate-half pairs (i, i+d/2)
    -> interleaved pairs (2i, 2i+1), per head); also applied to biases."""
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def llama3_rope_factors(theta, dim, rp):
    """Per-frequency divisors of the llama3 rope scaling, as convert_hf_to_gguf writes them
    (rope_freqs.weight), with the scaling parameters taken from the config."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in freqs.tolist():
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def tokenizer_metadata(w, tok, vocab_size, pre, bos, eos, pad, chat_template=None, add_space_prefix=None):
    """tokenizer.ggml.* as convert_hf_to_gguf's gpt2 path writes it."""
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    rev = {i: s for s, i in vocab.items()}
    for i, a in added.items():
        rev[i] = a["content"]
    n = max(vocab_size, max(rev) + 1)
    tokens, types = [], []
    for i in range(n):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if pad is not None:
        w.add_pad_token_id(pad)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    if chat_template:
        w.add_chat_template(chat_template)
    return n


HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def convert_model(name, arch, pre):
    d = os.path.join(MODELS, name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    tcfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    sd = load_file(os.path.join(d, "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))

    w = gguf.GGUFWriter(os.path.join(OUT, name + ".gguf"), arch)
    w.add_name(name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(hd)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if "head_dim" in cfg:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    if arch == "llama":
        w.add_vocab_size(cfg["vocab_size"])
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    bos = ids.get(tcfg.get("bos_token")) if tcfg.get("bos_token") else None
    eos = ids.get(tcfg.get("eos_token"))
    pad = ids.get(tcfg.get("pad_token")) if tcfg.get("pad_token") else None
    tokenizer_metadata(w, tok, cfg["vocab_size"], pre, bos, eos, pad, tcfg.get("chat_template"))

    def add(gname, t):
        if t.dim() == 1:
            w.add_tensor(gname, t.float().numpy())
        else:  # the checkpoint's bf16 values, as raw bits
            w.add_tensor(gname, t.contiguous().view(torch.int16).numpy().view(np.uint16), raw_dtype=T.BF16)

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    if not cfg.get("tie_word_embeddings", False):
        add("output.weight", sd["lm_head.weight"])
    if rp.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(theta, hd, rp))
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in HF_TO_GGUF.items():
            key = f"model.layers.{l}.{hf}"
            if key not in sd:
                continue
            t = sd[key]
            if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
                t = llama_permute(t, n_head if ".q_proj." in hf else n_kv)
            add(f"blk.{l}.{gg}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- vocab-only tokenizer files and their HF goldens --------------------------------------

def make_tokenizers():
    base = json.load(open(os.path.join(MODELS, "tokenizer", "gpt2-tiny", "tokenizer.json")))
    texts = [c["text"] for c in json.load(open(os.path.join(MODELS, "tokenizer", "goldens.json")))["gpt2-tiny"]["cases"]]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    variants = {
        # llama.cpp "gpt-2": the GPT-2 regex, no normalizer
        "tok-gpt2": ("gpt-2", None, byte_level),
        "tok-gpt2-prefix": ("gpt-2", True, dict(byte_level, add_prefix_space=True)),
        # llama.cpp "smollm": \p{N} split off one by one, then the GPT-2 regex (SmolLM's
        # tokenizer.json: Sequence[Digits(individual_digits), ByteLevel])
        "tok-smollm": ("smollm", False, {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}),
    }
    goldens = {"texts": "the cases of tests/models/tokenizer/goldens.json[\"gpt2-tiny\"], in order"}
    for name, (pre, prefix, pretok) in variants.items():
        t = dict(base, normalizer=None, pre_tokenizer=pretok)
        hf = Tokenizer.from_str(json.dumps(t))
        goldens[name + ".gguf"] = [hf.encode(s, add_special_tokens=False).ids for s in texts]
        w = gguf.GGUFWriter(os.path.join(OUT, name + ".gguf"), "llama")
        ids = {a["content"]: a["id"] for a in base["added_tokens"]}
        tokenizer_metadata(w, base, 0, pre, None, ids["<|endoftext|>"], None, add_space_prefix=prefix)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    with open(os.path.join(OUT, "tokenizer_goldens.json"), "w") as f:
        json.dump(goldens, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    make_quants()
    convert_model("llama-tiny", "llama", "llama-bpe")
    convert_model("qwen2-tiny", "qwen2", "qwen2")
    convert_model("qwen3-tiny", "qwen3", "qwen2")
    make_tokenizers()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
