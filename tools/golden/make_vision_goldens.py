#!/usr/bin/env python3
"""Vision goldens for tests/models/omni-tiny and tests/models/vl-tiny (docs/VISION.md).

Run tools/golden/make_omni_tiny.py first (it writes the checkpoints). This script loads each
saved bf16 checkpoint back in float32 (eager attention, CPU) with transformers and writes
<dir>/golden_vision.safetensors:

  enc.pixels_seed  int32 [1]      seed of the synthetic pixel_values (see pixel_values() below)
  enc.grid         int32 [n,3]    grid_thw of the items encoded together in one call
  enc.out          f32 [T,out]    vision encoder output (merger output, pad-token order)
  pos.<c>.ids      int32 [S]      input ids of rope-index case <c>
  pos.<c>.pos      int32 [3,S]    transformers' get_rope_index position ids (t, h, w)
  pos.<c>.delta    int32 [1]      its rope delta
  pos.<c>.image_grid / video_grid int32 [n,3]; pos.<c>.spg f32 [n_video] (second per grid)
  pos.<c>.audio_len int32 [n_audio] (mel frames L); pos.<c>.aiv int32 [1] (use_audio_in_video)
  vqa.ids          int32 [S]      image + question chat prompt (system prompt, user turn with
                                  the images, the question, generation prompt)
  vqa.grid         int32 [n,3]    its image grids; pixel_values from vqa.pixels_seed
  vqa.pos          int32 [3,S]    position ids, vqa.delta int32 [1]
  vqa.tail_start   int32 [1]      first row stored in vqa.logits
  vqa.logits       f32 [S-tail_start, vocab]   full forward, rows tail_start..S-1
  greedy.ids       int32 [G]      G greedy tokens after the prompt (full forward each step, the
                                  new token at cache index c gets position c + delta on all axes)
  greedy.logits    f32 [G, vocab] last-row logits of each step (step 0 = the prompt's last row)
  cli.grid, cli.prompt_len, cli.ids   (omni only) `oscar vqa` end to end on vqa_image.png (a 112x84
                                  PNG written here), pixel_values from transformers'
                                  Qwen2VLImageProcessor, 8 greedy answer tokens

pixel_values are synthetic (no image file, so the encoder test does not depend on image
preprocessing): element i (flat index over [n_patches, 1176]) is
    h = (i * 2654435761 + seed * 40503) mod 2^32; h ^= h >> 15; h = h * 2246822519 mod 2^32;
    h ^= h >> 13; value = (h >> 8) * 2^-24 * 4 - 2          (exact in float32)
and tests/test_vision.c computes the same numbers.
Usage: /tmp/tv/bin/python tools/golden/make_vision_goldens.py [--models tests/models]
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
N_GREEDY = 12
OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
               "perceiving auditory and visual inputs, as well as generating text and speech.")
VL_SYSTEM = "You are a helpful assistant."
QUESTION = "What is in this picture?"


def pixel_values(np, n_rows, seed):
    i = np.arange(n_rows * 1176, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(seed * 40503)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    v = (h >> np.uint64(8)).astype(np.float64) * (2.0 ** -24) * 4.0 - 2.0
    return v.astype(np.float32).reshape(n_rows, 1176)


def load_omni(torch, transformers, d):
    from safetensors.torch import load_file
    with open(os.path.join(d, "config.json")) as f:
        cj = json.load(f)
    th = dict(cj["thinker_config"])
    cfg = transformers.Qwen2_5OmniThinkerConfig(**th)
    cfg._attn_implementation = "eager"
    for sub in (cfg.text_config, cfg.vision_config, cfg.audio_config):
        sub._attn_implementation = "eager"
    rp = cfg.text_config.rope_parameters
    assert rp["mrope_section"] == [2, 3, 3] and float(rp["rope_theta"]) == 1e4, rp
    assert cfg.vision_start_token_id == th["vision_start_token_id"]
    model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(cfg).float().eval()
    sd = load_file(os.path.join(d, "model.safetensors"))
    sd = {k[len("thinker."):]: v.float() for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "inv_freq" not in m and "rotary" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    return model, cfg


def load_vl(torch, transformers, d):
    m = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager").eval()
    return m, m.config


def tokenize(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def chat_ids(tok, system, grids, merge, names):
    """ids of: system turn, user turn (images then the question), generation prompt."""
    bos, pad, eos = names
    ids = tokenize(tok, "<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n")
    for g in grids:
        n = g[0] * g[1] * g[2] // (merge * merge)
        ids += tokenize(tok, bos) + tokenize(tok, pad) * n + tokenize(tok, eos)
    ids += tokenize(tok, QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    return ids


def text_ids(tok, s):
    return tokenize(tok, s)


def cli_case(torch, np, transformers, model, tok, d, names, system, ve_id, out):
    """`oscar vqa` end to end: a committed 112x84 PNG (multiples of 28: no resize, so the pixels
    do not depend on a resampler), preprocessed by transformers' Qwen2VLImageProcessor, and the
    greedy answer tokens (no repetition penalty)."""
    from PIL import Image
    yy, xx = np.mgrid[0:84, 0:112]
    rgb = np.stack([(xx * 255) // 111, (yy * 255) // 83, ((xx // 14 + yy // 14) % 2) * 200 + 27], -1)
    rgb[20:50, 30:80] = [250, 40, 40]
    img = Image.fromarray(rgb.astype(np.uint8), "RGB")
    path = os.path.join(d, "vqa_image.png")
    img.save(path)
    img = Image.open(path).convert("RGB")
    proc = transformers.Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, patch_size=14,
                                              temporal_patch_size=2, merge_size=2)
    enc = proc(images=[img], return_tensors="pt")
    pv, grid = enc["pixel_values"].float(), enc["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8]], grid
    ids = chat_ids(tok, system, grid.tolist(), 2, names)
    ids_t = torch.tensor([ids])
    pos, delta = model.get_rope_index(ids_t, grid, None, torch.ones_like(ids_t))
    pos, delta = pos[:, 0, :], int(delta.reshape(-1)[0])
    seq, gen = list(ids), []
    for step in range(8):
        st = torch.tensor([seq])
        with torch.no_grad():
            lg = model(input_ids=st, attention_mask=torch.ones_like(st), pixel_values=pv, image_grid_thw=grid,
                       position_ids=pos[:, None, :], use_cache=False).logits[0, -1]
        top = torch.topk(lg, 2)
        assert float(top.values[0] - top.values[1]) > 1e-3
        t = int(top.indices[0])
        gen.append(t)
        pos = torch.cat([pos, torch.full((3, 1), len(seq) + delta, dtype=pos.dtype)], dim=1)
        seq.append(t)
    out["cli.grid"] = torch.tensor(grid.tolist(), dtype=torch.int32)
    out["cli.prompt_len"] = torch.tensor([len(ids)], dtype=torch.int32)
    out["cli.ids"] = torch.tensor(gen, dtype=torch.int32)


def build(torch, np, transformers, kind, d):
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    if kind == "omni":
        model, cfg = load_omni(torch, transformers, d)
        visual = model.visual
        names = ("<|vision_bos|>", "<|IMAGE|>", "<|vision_eos|>")
        system = OMNI_SYSTEM
        img_id, vid_id, aud_id = cfg.image_token_id, cfg.video_token_id, cfg.audio_token_id
        vs_id, ve_id = cfg.vision_start_token_id, cfg.vision_end_token_id
        as_id, ae_id = cfg.audio_start_token_id, cfg.audio_end_token_id
    else:
        model, cfg = load_vl(torch, transformers, d)
        visual = model.model.visual
        names = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
        system = VL_SYSTEM
        img_id, vid_id = cfg.image_token_id, cfg.video_token_id
        vs_id, ve_id = cfg.vision_start_token_id, cfg.vision_end_token_id
    assert tok.token_to_id(names[1]) == img_id and tok.token_to_id(names[0]) == vs_id
    out = {}
    T = lambda a, dt=torch.int32: torch.tensor(a, dtype=dt)  # noqa: E731

    # ---- encoder: two images and a 2-frame video in one call ------------------------------
    grids = [[1, 12, 20], [1, 8, 12], [2, 8, 8]]
    n = sum(t * h * w for t, h, w in grids)
    seed = 7 if kind == "omni" else 8
    pv = torch.from_numpy(pixel_values(np, n, seed))
    with torch.no_grad():
        enc = visual(pv, grid_thw=torch.tensor(grids)).pooler_output
    assert enc.shape[0] == n // 4 and torch.isfinite(enc).all()
    out["enc.pixels_seed"] = T([seed])
    out["enc.grid"] = T(grids)
    out["enc.out"] = enc.float().contiguous()

    # ---- rope index cases ---------------------------------------------------------------
    pre = text_ids(tok, "<|im_start|>user\n")
    post = text_ids(tok, "Describe it.<|im_end|>\n<|im_start|>assistant\n")

    def vis(tokid, g):
        return [vs_id] + [tokid] * (g[0] * g[1] * g[2] // 4) + [ve_id]

    def aud_n(L):
        return ((L - 1) // 2 + 1 - 2) // 2 + 1

    cases = {}
    cases["text"] = dict(ids=text_ids(tok, "<|im_start|>system\nBe brief.<|im_end|>\nHello there!"))
    g1, g2 = [1, 12, 20], [1, 8, 12]
    cases["image"] = dict(ids=pre + vis(img_id, g1) + post, image_grid=[g1])
    cases["two_images"] = dict(ids=pre + vis(img_id, g1) + text_ids(tok, " and ") + vis(img_id, g2) + post,
                               image_grid=[g1, g2])
    gv = [4, 8, 12]
    cases["video"] = dict(ids=pre + vis(vid_id, gv) + post, video_grid=[gv], spg=[1.0])
    cases["video_spg2"] = dict(ids=pre + vis(img_id, g2) + vis(vid_id, gv) + post, image_grid=[g2],
                               video_grid=[gv], spg=[2.0])
    if kind == "omni":
        L = 333
        a = [as_id] + [aud_id] * aud_n(L) + [ae_id]
        cases["image_audio"] = dict(ids=pre + vis(img_id, g2) + a + post, image_grid=[g2], audio_len=[L])
        cases["audio_image"] = dict(ids=pre + a + text_ids(tok, "then") + vis(img_id, g1) + post,
                                    image_grid=[g1], audio_len=[L])

        def aiv(g, spg, L):
            """processor's interleave: V chunk, A chunk, ... by 2 s (50 position ids)"""
            tau = [int(k * spg * 25) for k in range(g[0])]
            per = g[1] * g[2] // 4
            na = aud_n(L)
            seq = [vs_id, as_id]
            # transformers' get_chunked_index, applied to video t ids and audio ids
            vt = [t for t in tau for _ in range(per)]

            def chunks(vals):
                res, st, cur = [], 0, 1
                for i, v in enumerate(vals):
                    if v >= cur * 50:
                        res.append((st, i))
                        st = i
                        cur += 1
                res.append((st, len(vals)))
                return res
            vc, ac = chunks(vt), chunks(list(range(na)))
            for j in range(max(len(vc), len(ac))):
                if j < len(vc):
                    seq += [vid_id] * (vc[j][1] - vc[j][0])
                if j < len(ac):
                    seq += [aud_id] * (ac[j][1] - ac[j][0])
            return seq + [ae_id, ve_id]
        gv6 = [6, 8, 8]
        cases["video_audio"] = dict(ids=pre + aiv(gv6, 1.0, 520) + post, video_grid=[gv6], spg=[1.0],
                                    audio_len=[520], aiv=1)
        cases["video_audio_spg3"] = dict(ids=pre + vis(img_id, g2) + aiv(gv, 3.0, 700) + post,
                                         image_grid=[g2], video_grid=[gv], spg=[3.0], audio_len=[700], aiv=1)
        cases["audio_only"] = dict(ids=pre + a + post, audio_len=[L])

    for name, c in cases.items():
        ids = torch.tensor([c["ids"]])
        ig = torch.tensor(c["image_grid"]) if "image_grid" in c else None
        vg = torch.tensor(c["video_grid"]) if "video_grid" in c else None
        mask = torch.ones_like(ids)
        if kind == "omni":
            pos, delta = model.get_rope_index(
                ids, ig, vg, mask, use_audio_in_video=bool(c.get("aiv", 0)),
                audio_seqlens=torch.tensor(c["audio_len"]) if "audio_len" in c else None,
                second_per_grids=torch.tensor(c["spg"]) if "spg" in c else None)
        else:
            tt = torch.zeros_like(ids)
            tt[ids == img_id] = 1
            tt[ids == vid_id] = 2
            pos, delta = model.model.get_rope_index(
                ids, tt, ig, vg, second_per_grid_ts=torch.tensor(c["spg"]) if "spg" in c else None,
                attention_mask=mask)
        p = "pos.%s." % name
        out[p + "ids"] = T(c["ids"])
        out[p + "pos"] = pos[:, 0, :].to(torch.int32).contiguous()
        out[p + "delta"] = T([int(delta.reshape(-1)[0])])
        for k in ("image_grid", "video_grid", "audio_len"):
            if k in c:
                out[p + k] = T(c[k])
        if "spg" in c:
            out[p + "spg"] = T(c["spg"], torch.float32)
        out[p + "aiv"] = T([c.get("aiv", 0)])

    # ---- image + question prompt: logits and greedy ---------------------------------------
    vgrids = [[1, 12, 20], [1, 8, 12]] if kind == "omni" else [[1, 12, 20]]
    ids = chat_ids(tok, system, vgrids, 2, names)
    vseed = 11 if kind == "omni" else 12
    vpv = torch.from_numpy(pixel_values(np, sum(t * h * w for t, h, w in vgrids), vseed))
    ids_t = torch.tensor([ids])
    ig = torch.tensor(vgrids)
    mask = torch.ones_like(ids_t)
    if kind == "omni":
        pos, delta = model.get_rope_index(ids_t, ig, None, mask)
    else:
        tt = (ids_t == img_id).to(torch.int32)
        pos, delta = model.model.get_rope_index(ids_t, tt, ig, None, attention_mask=mask)
    delta = int(delta.reshape(-1)[0])

    def fwd(seq, posn):
        st = torch.tensor([seq])
        kw = dict(input_ids=st, attention_mask=torch.ones_like(st), pixel_values=vpv, image_grid_thw=ig,
                  position_ids=posn[:, None, :], use_cache=False)
        if kind == "vl":
            kw["mm_token_type_ids"] = (st == img_id).to(torch.int32)
        with torch.no_grad():
            lg = model(**kw).logits[0].float()
        assert torch.isfinite(lg).all()
        return lg

    pos2 = pos[:, 0, :]
    lg = fwd(ids, pos2)
    S = len(ids)
    tail = max(i for i, t in enumerate(ids) if t == ve_id)
    out["vqa.pixels_seed"] = T([vseed])
    out["vqa.ids"] = T(ids)
    out["vqa.grid"] = T(vgrids)
    out["vqa.pos"] = pos2.to(torch.int32).contiguous()
    out["vqa.delta"] = T([delta])
    out["vqa.tail_start"] = T([tail])
    out["vqa.logits"] = lg[tail:].contiguous()
    seq, posn = list(ids), pos2.clone()
    gids, glog, gaps = [], [], []
    row = lg[-1]
    for step in range(N_GREEDY):
        top = torch.topk(row, 2)
        gaps.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        gids.append(nxt)
        glog.append(row.clone())
        c = len(seq)
        seq.append(nxt)
        posn = torch.cat([posn, torch.full((3, 1), c + delta, dtype=posn.dtype)], dim=1)
        if step + 1 < N_GREEDY:
            row = fwd(seq, posn)[-1]
    out["greedy.ids"] = T(gids)
    out["greedy.logits"] = torch.stack(glog).contiguous()
    if kind == "omni":
        # cross-check the manual loop against transformers' own generate (rope_deltas path)
        gen = model.generate(input_ids=ids_t, attention_mask=mask, pixel_values=vpv, image_grid_thw=ig,
                             max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        hf = gen[0, S:].tolist()
        assert hf == gids, ("generate disagrees with the manual greedy loop", hf, gids)
    if kind == "omni":
        cli_case(torch, np, transformers, model, tok, d, names, system, ve_id, out)
    path = os.path.join(d, "golden_vision.safetensors")
    save_file(out, path)
    info = dict(kind=kind, prompt_len=S, delta=delta, greedy=gids, min_gap=min(gaps),
                gaps=[round(g, 4) for g in gaps], enc_shape=list(enc.shape),
                max_abs_logit=float(lg.abs().max()), cases=list(cases),
                torch=torch.__version__, transformers=transformers.__version__)
    with open(os.path.join(d, "golden_vision.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print("[vision-golden]", d, json.dumps(info)[:400], flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(ROOT, "tests", "models"))
    a = ap.parse_args()
    import numpy as np
    import torch
    import transformers
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    build(torch, np, transformers, "omni", os.path.join(a.models, "omni-tiny"))
    build(torch, np, transformers, "vl", os.path.join(a.models, "vl-tiny"))


if __name__ == "__main__":
    main()
