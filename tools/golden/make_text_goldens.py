#!/usr/bin/env python3
"""Make the tiny text-model checkpoints and their transformers goldens (docs/VERIFY.md section 1).

Builds three TINY random-weight models from the real transformers classes with fixed seeds:
  qwen2-tiny  Qwen2ForCausalLM  (q/k/v biases, untied lm_head, rope_theta 1e4)
  qwen3-tiny  Qwen3ForCausalLM  (head_dim 32 != hidden/heads, q/k norms, tied lm_head, theta 1e6)
  llama-tiny  LlamaForCausalLM  (1 kv head, llama3 rope scaling, untied lm_head)
Each is saved with save_pretrained in bfloat16 (like real checkpoints) together with the tiny
tokenizer (tests/models/tokenizer/{qwen-tiny,llama3-tiny}/tokenizer.json), a tokenizer_config.json
with a real chat template, and a generation_config.json. The goldens are computed by loading the
saved checkpoint back in float32 (eager attention, CPU), so the weights are the bf16 values upcast.

Per model it writes <out>/<name>/golden.safetensors:
  p{i}.ids      int32   [S_i]          prompt i, tokenizers encode(add_special_tokens=False)
  p{i}.logits   float32 [S_i, vocab]   one forward pass over the whole prompt
  greedy.ids    int32   [32]           32 greedy tokens after p0 (full forward each step, argmax)
  greedy.logits float32 [32, vocab]    last-position logits of each greedy step
and <out>/<name>/golden.json (texts, ids, the rendered chat prompt, greedy ids, stats).
  p0 plain English; p1 CJK/emoji/code/numbers/odd spacing/combining accents;
  p2 chat conversation rendered with the model's chat template (add_generation_prompt=True);
  p3 long (>= 200 tokens) repeated varied text.

Runs where torch + transformers are installed (the GPU test machine; CPU is used, float32).
`--dry-run` needs only `tokenizers` + `jinja2`: it checks the prompts, templates and configs.
Usage: python3 tools/golden/make_text_goldens.py --out tests/models [--only qwen2-tiny] [--dry-run]
"""
import argparse
import copy
import inspect
import json
import math
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
N_GREEDY = 32
LONG_MIN_TOKENS = 196
HARD_MIN_GAP = 1e-3        # required: top1-top2 gap of every greedy step in float32
MIN_DISTINCT = 16          # a greedy run stuck on one token is a weak test
SEED_TRIES = 48            # seeds tried per model; the largest smallest greedy gap wins
MAX_FOLDER_BYTES = 2 * 1024 * 1024


def log(*a):
    print("[golden %6.1fs]" % (time.time() - T0), *a, flush=True)


T0 = time.time()

# ------------------------------------------------------------------------------------------
# Chat templates
# ------------------------------------------------------------------------------------------
# The real Llama-3-Instruct template (bos once, header/eot per message, trimmed content).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def read_qwen_template():
    path = os.path.join(HERE, "qwen_chat_template.jinja")
    with open(path, "r", encoding="utf-8", newline="") as f:
        t = f.read()
    assert "<|im_start|>" in t and "add_generation_prompt" in t, path
    return t


CHAT_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "How many people?"},
]


def render_jinja(template, messages, add_generation_prompt, **extra):
    """Render like transformers' apply_chat_template (sandboxed env, trim/lstrip blocks)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt, **extra)


# ------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------
P0_TEXT = "Once upon a time, a small robot lived in a quiet town by the sea."
P1_TEXT = ("你好，世界！한국어 🙂👍🏽\n"
           "Cafe\u0301 vs café\n"
           "def f(x):\n\treturn x**2  # 3.14, 1,000\n"
           "  odd   spacing \t\n\n ")


def long_text(tok, min_tokens):
    adjs = ["red", "quiet", "enormous", "ancient", "shiny", "curious", "broken"]
    nouns = ["lamp", "river", "engine", "garden", "letter", "mountain", "violin", "bridge"]
    verbs = ["sits near", "waits for", "points at", "remembers", "hides behind"]
    parts = []
    i = 0
    while True:
        if i % 2 == 0:
            parts.append("The %s %s %s it." % (adjs[i % len(adjs)], nouns[(3 * i) % len(nouns)],
                                               verbs[i % len(verbs)]))
        else:
            parts.append("Item %d costs %d." % (i, (i * 37) % 101))
        if i % 6 == 5:
            parts.append("\n")
        text = " ".join(parts)
        if len(tok.encode(text, add_special_tokens=False).ids) >= min_tokens:
            return text
        i += 1
        assert i < 1000


# ------------------------------------------------------------------------------------------
# Model specs
# ------------------------------------------------------------------------------------------
SPECS = {
    "qwen2-tiny": dict(
        arch="Qwen2ForCausalLM", cfg="Qwen2Config", tokenizer="qwen-tiny", seed=1234,
        cfg_kwargs=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, rms_norm_eps=1e-6,
                        tie_word_embeddings=False, use_sliding_window=False,
                        hidden_act="silu"),
        rope=dict(rope_type="default", rope_theta=10000.0),
    ),
    "qwen3-tiny": dict(
        arch="Qwen3ForCausalLM", cfg="Qwen3Config", tokenizer="qwen-tiny", seed=2345,
        # tied embeddings: the input token's own embedding dominates the final hidden state and
        # greedy decoding repeats one token forever; larger o_proj/down_proj outputs fix that
        out_gain=4.0,
        cfg_kwargs=dict(hidden_size=64, head_dim=32, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, use_sliding_window=False,
                        attention_bias=False, hidden_act="silu"),
        rope=dict(rope_type="default", rope_theta=1000000.0),
    ),
    "llama-tiny": dict(
        arch="LlamaForCausalLM", cfg="LlamaConfig", tokenizer="llama3-tiny", seed=3456,
        cfg_kwargs=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=1,
                        max_position_embeddings=512, rms_norm_eps=1e-5,
                        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                        hidden_act="silu"),
        # original_max_position_embeddings 64 (not 32): with head_dim 16 and theta 5e5 the
        # wavelengths are 6.3, 32.5, 169, ... so 64 puts one frequency in each llama3 band
        # (kept / smoothly interpolated / divided by factor). 32 would leave the smooth band
        # empty. Checked below.
        rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=64),
    ),
}


def special_ids(tok, names):
    out = {}
    for n in names:
        i = tok.token_to_id(n)
        assert i is not None, "special token %s missing from tokenizer" % n
        out[n] = i
    return out


def token_setup(name, spec, tok):
    """Special-token ids for config.json / generation_config.json and tokenizer_config.json."""
    if spec["tokenizer"] == "qwen-tiny":
        sp = special_ids(tok, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        eot, ims, ime = sp["<|endoftext|>"], sp["<|im_start|>"], sp["<|im_end|>"]
        ids = dict(bos_token_id=(eot if name == "qwen2-tiny" else None),
                   eos_token_id=[ime, eot], pad_token_id=eot)
        gen = dict(bos_token_id=eot, eos_token_id=[ime, eot], pad_token_id=eot)
        tcfg = {"add_bos_token": False, "add_prefix_space": False,
                "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                "bos_token": None, "clean_up_tokenization_spaces": False,
                "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 512,
                "pad_token": "<|endoftext|>", "split_special_tokens": False,
                "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
                "chat_template": read_qwen_template()}
        tmpl_extra = dict(bos_token=None, eos_token="<|im_end|>")
    else:
        sp = special_ids(tok, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                               "<|end_header_id|>", "<|eot_id|>"])
        bos, eot, eid = sp["<|begin_of_text|>"], sp["<|end_of_text|>"], sp["<|eot_id|>"]
        ids = dict(bos_token_id=bos, eos_token_id=[eot, eid], pad_token_id=None)
        gen = dict(bos_token_id=bos, eos_token_id=[eot, eid])
        tcfg = {"bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
                "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
                "model_max_length": 512, "tokenizer_class": "PreTrainedTokenizerFast",
                "chat_template": LLAMA3_CHAT_TEMPLATE}
        tmpl_extra = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    gen.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    return sp, ids, gen, tcfg, tmpl_extra


def added_tokens_decoder(tok_json):
    d = {}
    for t in tok_json.get("added_tokens", []):
        d[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                             "single_word", "special") if k in t}
    return d


def make_prompts(tok, chat_rendered):
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    prompts = [
        dict(name="p0", kind="plain", text=P0_TEXT),
        dict(name="p1", kind="unicode_code_numbers_spacing", text=P1_TEXT),
        dict(name="p2", kind="chat", text=chat_rendered),
        dict(name="p3", kind="long", text=long_text(tok, LONG_MIN_TOKENS)),
    ]
    for p in prompts:
        p["ids"] = enc(p["text"])
        assert len(p["ids"]) > 0
    return prompts


# ------------------------------------------------------------------------------------------
# Expected RoPE inverse frequencies, computed independently of transformers
# ------------------------------------------------------------------------------------------
def expected_inv_freq(head_dim, rope):
    base = rope["rope_theta"]
    inv = [1.0 / (base ** (2 * i / head_dim)) for i in range(head_dim // 2)]
    bands = {"high": 0, "mid": 0, "low": 0}
    if rope["rope_type"] == "llama3":
        f, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        out = []
        for x in inv:
            wl = 2 * math.pi / x
            if wl < high_wl:
                out.append(x); bands["high"] += 1
            elif wl > low_wl:
                out.append(x / f); bands["low"] += 1
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * x / f + s * x); bands["mid"] += 1
        inv = out
    return inv, bands


# ------------------------------------------------------------------------------------------
# Torch parts
# ------------------------------------------------------------------------------------------
def build_config(transformers, spec, vocab_size, ids):
    cls = getattr(transformers, spec["cfg"])
    kw = dict(spec["cfg_kwargs"])
    kw["vocab_size"] = vocab_size
    kw.update(ids)
    params = inspect.signature(cls.__init__).parameters
    rope = dict(spec["rope"])
    if "rope_parameters" in params:
        kw["rope_parameters"] = rope
        how = "rope_parameters"
    else:
        kw["rope_theta"] = rope.pop("rope_theta")
        if rope["rope_type"] != "default":
            kw["rope_scaling"] = rope
        how = "rope_theta/rope_scaling"
    for k in list(kw):
        if k not in params and k not in ("bos_token_id", "eos_token_id", "pad_token_id",
                                          "tie_word_embeddings"):
            log("  note: %s does not take %s=%r (passing it anyway as an attribute)"
                % (spec["cfg"], k, kw[k]))
    cfg = cls(**kw)
    cfg.initializer_range = 0.2
    log("  config built (%s); rope: %s" % (how, getattr(cfg, "rope_parameters", None)
                                            or (getattr(cfg, "rope_theta", None),
                                                getattr(cfg, "rope_scaling", None))))
    return cfg


def init_weights(torch, model, seed, out_gain=1.0):
    """Explicit, peaked random init (default std 0.02 gives near-uniform logits; zero biases and
    unit norms would leave those code paths untested)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:                      # RMSNorm weights (input/post/final/q/k)
                v = 1.0 + 0.2 * r
            elif name.endswith(".bias"):
                v = 0.2 * r
            elif "embed_tokens" in name or "lm_head" in name:
                v = 0.5 * r
            else:                                   # Linear [out, in]
                assert p.dim() == 2, name
                v = r / math.sqrt(p.shape[1])
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    v = v * out_gain
            p.copy_(v.to(p.dtype))


def save_pretrained(model, d):
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError as e:
        log("  save_pretrained(safe_serialization=True) failed (%s); retrying without" % e)
        model.save_pretrained(d)


def load_fp32(transformers, torch, arch, d):
    cls = getattr(transformers, arch)
    try:
        m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    except TypeError as e:
        log("  from_pretrained(dtype=) failed (%s); using torch_dtype=" % e)
        m = cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
    m = m.float().eval()   # bf16 -> fp32 is exact; guards against a silently ignored dtype
    log("  loaded fp32; attn_implementation=%s" % getattr(m.config, "_attn_implementation", "?"))
    return m


def check_weights_roundtrip(torch, model, d):
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors")
                   and not f.startswith("golden"))
    assert files, "no safetensors written in %s" % d
    sd = model.state_dict()
    n = 0
    for fn in files:
        with safe_open(os.path.join(d, fn), framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                assert t.dtype == torch.bfloat16, "%s:%s is %s, want bf16" % (fn, k, t.dtype)
                if k not in sd:
                    log("  WARNING: saved tensor %s not in loaded state_dict" % k)
                    continue
                assert sd[k].dtype == torch.float32, (k, sd[k].dtype)
                assert torch.equal(sd[k], t.float()), "loaded %s != saved bf16 upcast" % k
                n += 1
    log("  %d saved bf16 tensors == loaded fp32 tensors (exact) in %s" % (n, files))


def check_rope(torch, model, spec, cfg):
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    exp, bands = expected_inv_freq(hd, spec["rope"])
    if spec["rope"]["rope_type"] == "llama3":
        assert all(bands.values()), "llama3 rope bands not all used: %s" % bands
    re = getattr(model.model, "rotary_emb", None)
    inv = getattr(re, "inv_freq", None) if re is not None else None
    if inv is None:
        log("  WARNING: model.model.rotary_emb.inv_freq not found; rope not cross-checked")
        return hd, bands
    inv = inv.detach().double().cpu().tolist()
    assert len(inv) == len(exp), (len(inv), len(exp))
    err = max(abs(a - b) / b for a, b in zip(inv, exp))
    scale = getattr(re, "attention_scaling", 1.0)
    log("  rope head_dim=%d inv_freq max rel err %.2e vs independent formula; bands %s; "
        "attention_scaling %s" % (hd, err, bands, scale))
    assert err < 1e-5, "rope inv_freq mismatch: %s vs %s" % (inv, exp)
    assert abs(float(scale) - 1.0) < 1e-12, "unexpected attention_scaling %s" % scale
    return hd, bands


def forward_logits(torch, model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=x, use_cache=False)
    lg = out.logits[0].float().contiguous()
    assert lg.shape == (len(ids), model.config.vocab_size), lg.shape
    assert torch.isfinite(lg).all(), "non-finite logits"
    return lg


def top2_gap(torch, row):
    v = torch.topk(row, 2).values
    return float(v[0] - v[1])


def greedy(torch, model, ids, n):
    cur = list(ids)
    out_ids, out_lg, gaps = [], [], []
    for _ in range(n):
        lg = forward_logits(torch, model, cur)[-1]
        nxt = int(torch.argmax(lg))
        gaps.append(top2_gap(torch, lg))
        out_ids.append(nxt)
        out_lg.append(lg)
        cur.append(nxt)
    return out_ids, torch.stack(out_lg).contiguous(), gaps


def folder_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def build_one(args, name, spec, torch, transformers, tok, tok_path, prompts, tcfg, ids, gen,
              chat_rendered, tmpl_extra):
    from safetensors.torch import save_file
    d = os.path.join(args.out, name)
    tok_size = tok.get_vocab_size(with_added_tokens=True)
    vocab = ((tok_size + 63) // 64) * 64
    log("%s: tokenizer size %d -> vocab_size %d" % (name, tok_size, vocab))

    def build_save_load(seed):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        torch.manual_seed(seed)
        cfg = build_config(transformers, spec, vocab, ids)
        model = getattr(transformers, spec["arch"])(cfg)
        init_weights(torch, model, seed, spec.get("out_gain", 1.0))
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), \
                "tie_word_embeddings but lm_head is not tied"
        n_params = sum(p.numel() for p in model.parameters())
        model = model.to(torch.bfloat16)
        save_pretrained(model, d)
        del model
        return load_fp32(transformers, torch, spec["arch"], d), n_params

    # Random models are not confident, so the smallest top1-top2 gap over 32 greedy steps is
    # small; try SEED_TRIES seeds and keep the one with the largest smallest gap (deterministic).
    tried = []
    for attempt in range(SEED_TRIES):
        seed = spec["seed"] + attempt
        m, n_params = build_save_load(seed)
        g_ids, _, gaps = greedy(torch, m, prompts[0]["ids"], N_GREEDY)
        tried.append((len(set(g_ids)) >= MIN_DISTINCT, min(gaps), seed))
        log("  seed %d: %d params, greedy min top1-top2 gap %.4g, distinct greedy tokens %d"
            % (seed, n_params, min(gaps), len(set(g_ids))))
        del m
    varied, best_gap, seed = max(tried)   # prefer seeds whose greedy run does not collapse
    if not varied:
        log("  WARNING: no seed gives >= %d distinct greedy tokens" % MIN_DISTINCT)
    assert best_gap > HARD_MIN_GAP, "%s: no seed in %d tries gives greedy gaps > %g" % (
        name, SEED_TRIES, HARD_MIN_GAP)
    log("  %s: best seed %d (min greedy gap %.4g) of %d tried" % (name, seed, best_gap,
                                                                  SEED_TRIES))
    m, _ = build_save_load(seed)
    if seed != spec["seed"]:
        log("  NOTE: %s uses seed %d instead of the first choice %d" % (name, seed, spec["seed"]))

    # --- files next to the weights: config fix-ups, generation config, tokenizer ---
    cpath = os.path.join(d, "config.json")
    with open(cpath) as f:
        cj = json.load(f)
    for k, v in ids.items():
        if cj.get(k, "absent") != v:
            log("  config.json: setting %s = %r (was %r)" % (k, v, cj.get(k, "absent")))
            cj[k] = v
    with open(cpath, "w") as f:
        json.dump(cj, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        gj = dict(gen)
        gj["transformers_version"] = transformers.__version__
        json.dump(gj, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.copyfile(tok_path, os.path.join(d, "tokenizer.json"))
    with open(tok_path, encoding="utf-8") as f:
        tj = json.load(f)
    tc = dict(tcfg)
    tc["added_tokens_decoder"] = added_tokens_decoder(tj)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    log("  config.json:\n" + json.dumps(cj, indent=2, sort_keys=True))

    # reload from the final folder (config edits) and re-check everything from scratch
    del m
    m = load_fp32(transformers, torch, spec["arch"], d)
    check_weights_roundtrip(torch, m, d)
    hd, bands = check_rope(torch, m, spec, m.config)
    assert m.config.vocab_size == vocab

    # --- chat template through transformers ---
    rendered_by = "jinja2 (tools/golden/make_text_goldens.py, HF-style environment)"
    try:
        at = transformers.AutoTokenizer.from_pretrained(d)
        r = at.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
        assert isinstance(r, str), type(r)
        if r != chat_rendered:
            log("  WARNING: transformers chat template render differs from jinja2 render:\n"
                "  hf=%r\n  j2=%r" % (r, chat_rendered))
            log("  using the transformers render (ids re-encoded)")
            prompts[2]["text"] = r
            prompts[2]["ids"] = tok.encode(r, add_special_tokens=False).ids
        else:
            log("  chat template: transformers render == jinja2 render")
        rendered_by = "transformers AutoTokenizer.apply_chat_template"
        for p in prompts:
            hid = at.encode(p["text"], add_special_tokens=False)
            if list(hid) != p["ids"]:
                log("  NOTE: transformers %s encode differs from tokenizers on %s (ids from "
                    "tokenizers are the goldens)" % (type(at).__name__, p["name"]))
    except Exception as e:  # noqa: BLE001 - report and fall back to the jinja2 render
        log("  WARNING: AutoTokenizer/apply_chat_template failed (%s: %s); using jinja2 render"
            % (type(e).__name__, e))

    # --- goldens ---
    tensors, stats = {}, {}
    max_abs, min_prompt_gap = 0.0, float("inf")
    for p in prompts:
        lg = forward_logits(torch, m, p["ids"])
        tensors[p["name"] + ".ids"] = torch.tensor(p["ids"], dtype=torch.int32)
        tensors[p["name"] + ".logits"] = lg
        max_abs = max(max_abs, float(lg.abs().max()))
        pg = min(top2_gap(torch, lg[i]) for i in range(lg.shape[0]))
        min_prompt_gap = min(min_prompt_gap, pg)
        log("  %s (%s): %d tokens, max|logit| %.3f, min top2 gap %.4g" % (
            p["name"], p["kind"], len(p["ids"]), float(lg.abs().max()), pg))
    g_ids, g_lg, gaps = greedy(torch, m, prompts[0]["ids"], N_GREEDY)
    assert len(g_ids) == N_GREEDY and g_lg.shape == (N_GREEDY, vocab), g_lg.shape
    assert min(gaps) > HARD_MIN_GAP, "greedy gap %g too small" % min(gaps)
    assert torch.equal(torch.argmax(tensors["p0.logits"][-1]), torch.tensor(g_ids[0])), \
        "greedy step 0 disagrees with p0 logits"
    d0 = float((g_lg[0] - tensors["p0.logits"][-1]).abs().max())
    assert d0 < 1e-4, "greedy step 0 logits differ from p0 last row by %g" % d0
    tensors["greedy.ids"] = torch.tensor(g_ids, dtype=torch.int32)
    tensors["greedy.logits"] = g_lg
    max_abs = max(max_abs, float(g_lg.abs().max()))
    for k, t in tensors.items():
        assert t.is_contiguous() and t.dtype in (torch.int32, torch.float32), (k, t.dtype)
    save_file(tensors, os.path.join(d, "golden.safetensors"), metadata={"format": "pt"})

    in_vocab = [i for i in g_ids if i < tok_size]
    try:
        g_text = tok.decode(in_vocab, skip_special_tokens=False)
    except Exception as e:  # noqa: BLE001
        g_text = "<decode failed: %s>" % e
    stats = {"max_abs_logit": max_abs, "min_greedy_top2_gap": min(gaps),
             "min_prompt_top2_gap": min_prompt_gap, "greedy_distinct_tokens": len(set(g_ids)),
             "greedy_ids_beyond_tokenizer": len(g_ids) - len(in_vocab)}
    gjson = {
        "model": name, "architecture": spec["arch"], "seed": seed,
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "reference": "transformers, weights = saved bf16 upcast to float32, eager attention, "
                     "CPU float32, full forward (no KV cache)",
        "vocab_size": vocab, "tokenizer_size": tok_size, "head_dim": hd,
        "rope": spec["rope"], "rope_bands": bands,
        "special_tokens": ids, "special_token_ids": {k: v for k, v in
                                                     sorted(tcfg_specials(tok, tj).items())},
        "prompts": [{"name": p["name"], "kind": p["kind"], "text": p["text"],
                     "n_tokens": len(p["ids"]), "ids": p["ids"]} for p in prompts],
        "chat": {"prompt": "p2", "messages": CHAT_MESSAGES, "add_generation_prompt": True,
                 "rendered": prompts[2]["text"], "rendered_by": rendered_by},
        "greedy": {"prompt": "p0", "n_new": N_GREEDY, "ids": g_ids, "text": g_text,
                   "top2_gaps": gaps},
        "stats": stats,
        "tensors": {k: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
                    for k, t in sorted(tensors.items())},
    }
    with open(os.path.join(d, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(gjson, f, indent=1, ensure_ascii=False)
        f.write("\n")
    size = folder_bytes(d)
    log("%s DONE: seed %d, max|logit| %.3f, min greedy top1-top2 gap %.4g, min prompt gap "
        "%.4g, greedy %s (%d distinct), folder %.0f KB" % (
            name, seed, max_abs, min(gaps), min_prompt_gap, g_ids, len(set(g_ids)), size / 1024))
    for fn in sorted(os.listdir(d)):
        log("    %-26s %8d bytes" % (fn, os.path.getsize(os.path.join(d, fn))))
    if size > MAX_FOLDER_BYTES:
        log("  WARNING: %s is %.2f MB (> 2 MB)" % (name, size / 1e6))
    return gjson


def tcfg_specials(tok, tj):
    return {t["content"]: t["id"] for t in tj.get("added_tokens", [])}


# ------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "models"))
    ap.add_argument("--tokenizers", default=os.path.join(ROOT, "tests", "models", "tokenizer"))
    ap.add_argument("--only", action="append", choices=sorted(SPECS))
    ap.add_argument("--dry-run", action="store_true",
                    help="no torch: check tokenizers, prompts, templates, special ids only")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    names = args.only or ["qwen2-tiny", "qwen3-tiny", "llama-tiny"]
    if not args.dry_run:
        import torch
        import transformers
        torch.set_grad_enabled(False)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        log("python %s, torch %s, transformers %s" % (sys.version.split()[0], torch.__version__,
                                                      transformers.__version__))
    summary = []
    for name in names:
        spec = SPECS[name]
        tok_path = os.path.join(args.tokenizers, spec["tokenizer"], "tokenizer.json")
        tok = Tokenizer.from_file(tok_path)
        sp, ids, gen, tcfg, tmpl_extra = token_setup(name, spec, tok)
        chat = render_jinja(tcfg["chat_template"], CHAT_MESSAGES, True, **tmpl_extra)
        prompts = make_prompts(tok, chat)
        chat_ids = prompts[2]["ids"]
        if spec["tokenizer"] == "qwen-tiny":
            assert chat.startswith("<|im_start|>system\n") and \
                chat.endswith("<|im_start|>assistant\n"), repr(chat)
            assert chat_ids.count(sp["<|im_start|>"]) == 5 and \
                chat_ids.count(sp["<|im_end|>"]) == 4, chat_ids
        else:
            assert chat.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>"
                                   "\n\n") and \
                chat.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n"), repr(chat)
            assert chat_ids[0] == sp["<|begin_of_text|>"] and \
                chat_ids.count(sp["<|begin_of_text|>"]) == 1 and \
                chat_ids.count(sp["<|eot_id|>"]) == 4, chat_ids
        log("%s: tokenizer %s (size %d), special ids %s" % (
            name, tok_path, tok.get_vocab_size(with_added_tokens=True), sp))
        for p in prompts:
            log("  %s %-30s %4d tokens" % (p["name"], p["kind"], len(p["ids"])))
        log("  chat render: %r" % chat)
        if args.dry_run:
            log("  config ids %s\n  generation %s" % (ids, gen))
            continue
        gj = build_one(args, name, spec, torch, transformers, tok, tok_path, prompts, tcfg, ids,
                       gen, chat, tmpl_extra)
        summary.append((name, gj["seed"], gj["stats"]))
    for name, seed, st in summary:
        log("SUMMARY %-11s seed %d max|logit| %.3f min greedy gap %.4g min prompt gap %.4g" % (
            name, seed, st["max_abs_logit"], st["min_greedy_top2_gap"],
            st["min_prompt_top2_gap"]))
    log("all done")


if __name__ == "__main__":
    main()
