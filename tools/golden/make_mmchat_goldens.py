#!/usr/bin/env python3
"""Goldens for the multi-turn multimodal chat (`oscar chat` with /image, pipelines/lib/mmchat.c)
on tests/models/omni-tiny, from transformers 5.17 (torch CPU, float32).

The conversation (greedy, N_GEN tokens per reply, no repetition penalty):
  turn 1: /image tests/models/omni-tiny/vqa_image.png (112x84, no resize)      + Q1
  turn 2: /image tests/data/images/mixed_60x45.png    (-> 56x56, PIL bicubic)  + Q2
  turn 3: text only                                                             Q3
Each turn's prompt is the whole conversation so far rendered as Qwen2.5-Omni ChatML text
(docs/qwen2_5_omni.md 1.6: system turn, user turns with <|vision_bos|><|IMAGE|>*n<|vision_eos|>
before the text, assistant turns closed by <|im_end|>\\n), tokenized as one string by the
tokenizer (which splits on the added special tokens, as the processor does), with each earlier
answer spliced in as the ids transformers generated (what a cache that keeps generated ids holds;
whether decode -> re-encode of the answer gives the same ids is recorded in the .json).
Positions: Qwen2_5OmniThinker...get_rope_index over the whole conversation with all image grids so
far. Replies: model.generate on the whole conversation with all images (pixel_values of every image
so far), cut at the first stop id (eos of generation_config, <|im_end|>, <|endoftext|>).

Writes tests/models/omni-tiny/golden_mmchat.safetensors (+ .json):
  turnK.ids     I32 [n_K]     the whole conversation up to the generation prompt of turn K
  turnK.pos     I32 [3, n_K]  its position ids
  turnK.delta   I32 [1]       rope delta
  turnK.logits  F32 [V]       logits of the last prompt row (the first reply token's)
  turnK.gen     I32 [g_K]     the reply ids (without the stop id)
  turnK.stopped I32 [1]       1 when the reply ended with a stop id
Run: /tmp/tv/bin/python tools/golden/make_mmchat_goldens.py
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

N_GEN = 6
Q = ["What is in this picture?", "And what is in this one?", "Thanks. Which one is brighter?"]
IMAGES = [os.path.join(ROOT, "tests", "models", "omni-tiny", "vqa_image.png"),
          os.path.join(ROOT, "tests", "data", "images", "mixed_60x45.png"),
          None]


def smart_resize(h, w, factor=28, mn=3136, mx=12845056):
    """qwen-omni-utils smart_resize (docs/qwen2_5_omni.md section 2)."""
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > mx:
        beta = math.sqrt(h * w / mx)
        hb = math.floor(h / beta / factor) * factor
        wb = math.floor(w / beta / factor) * factor
    elif hb * wb < mn:
        beta = math.sqrt(mn / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def load_image(transformers, path):
    """qwen-omni-utils fetch_image (RGB, smart_resize, PIL bicubic resize), then the processor."""
    from PIL import Image
    img = Image.open(path).convert("RGB")
    w, h = img.size
    rh, rw = smart_resize(h, w)
    if (rw, rh) != (w, h):
        img = img.resize((rw, rh))
    proc = transformers.Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, patch_size=14,
                                              temporal_patch_size=2, merge_size=2)
    enc = proc(images=[img], return_tensors="pt")
    return enc["pixel_values"].float(), enc["image_grid_thw"]


def main():
    import numpy as np  # noqa: F401
    import torch
    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    import make_vision_goldens as mv
    torch.set_grad_enabled(False)
    d = os.path.join(ROOT, "tests", "models", "omni-tiny")
    model, cfg = mv.load_omni(torch, transformers, d)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "generation_config.json")) as f:
        gc = json.load(f)
    eos = gc["eos_token_id"] if isinstance(gc["eos_token_id"], list) else [gc["eos_token_id"]]
    stops = set(eos) | {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    img_id = cfg.image_token_id
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731

    out, info = {}, dict(turns=[], n_gen=N_GEN, questions=Q, images=[os.path.relpath(p, ROOT) if p else None
                                                                      for p in IMAGES])
    text = "<|im_start|>system\n" + mv.OMNI_SYSTEM + "<|im_end|>\n"
    kept = []          # conversation ids as a cache that keeps generated ids holds them
    pvs, grids = [], []
    prev_pos, prev_delta = None, None
    for k in range(3):
        turn = "<|im_start|>user\n"
        if IMAGES[k]:
            pv, g = load_image(transformers, IMAGES[k])
            pvs.append(pv)
            grids.append(g[0].tolist())
            n = int(g[0].prod()) // 4
            turn += "<|vision_bos|>" + "<|IMAGE|>" * n + "<|vision_eos|>"
        turn += Q[k] + "<|im_end|>\n<|im_start|>assistant\n"
        ids_new = enc(turn if k else text + turn)
        if k:
            ids_new = enc("<|im_end|>\n") + ids_new  # closes the previous answer
        text += turn
        ids = kept + ids_new
        # the same conversation rendered as one text (answers decoded), tokenized in one go
        retok = enc(text)
        ids_t = torch.tensor([ids])
        mask = torch.ones_like(ids_t)
        ig = torch.tensor(grids)
        pv_all = torch.cat(pvs, 0)
        pos, delta = model.get_rope_index(ids_t, ig, None, mask)
        pos, delta = pos[:, 0, :], int(delta.reshape(-1)[0])
        if prev_pos is not None:
            # appending a turn leaves the positions of the earlier tokens unchanged, and the
            # earlier reply tokens sit at cache index + the earlier delta
            n_prev = prev_pos.shape[1]
            assert torch.equal(pos[:, :n_prev], prev_pos), "prefix positions changed"
            for i in range(n_prev, len(kept)):
                assert pos[:, i].tolist() == [i + prev_delta] * 3, (i, pos[:, i])
        lg = model(input_ids=ids_t, attention_mask=mask, pixel_values=pv_all, image_grid_thw=ig,
                   position_ids=pos[:, None, :], use_cache=False).logits[0, -1].float()
        gen = model.generate(input_ids=ids_t, attention_mask=mask, pixel_values=pv_all, image_grid_thw=ig,
                             max_new_tokens=N_GEN, do_sample=False, repetition_penalty=1.0,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert gen[0] == int(torch.argmax(lg)), "generate disagrees with the prefill logits"
        stopped = 0
        for i, t in enumerate(gen):
            if t in stops:
                gen, stopped = gen[:i], 1
                break
        top = torch.topk(lg, 2)
        out["turn%d.ids" % (k + 1)] = torch.tensor(ids, dtype=torch.int32)
        out["turn%d.pos" % (k + 1)] = pos.to(torch.int32).contiguous()
        out["turn%d.delta" % (k + 1)] = torch.tensor([delta], dtype=torch.int32)
        out["turn%d.logits" % (k + 1)] = lg.contiguous()
        out["turn%d.gen" % (k + 1)] = torch.tensor(gen if gen else [-1], dtype=torch.int32)[: max(len(gen), 1)]
        out["turn%d.n_gen" % (k + 1)] = torch.tensor([len(gen)], dtype=torch.int32)
        out["turn%d.stopped" % (k + 1)] = torch.tensor([stopped], dtype=torch.int32)
        info["turns"].append(dict(prompt_len=len(ids), new_tokens=len(ids_new), delta=delta, grids=list(grids),
                                  gen=gen, stopped=stopped, first_gap=float(top.values[0] - top.values[1]),
                                  text_render_equal=retok == ids))
        # the reply joins the conversation: ids as generated, text as decoded
        kept = ids + gen
        text += tok.decode(gen, skip_special_tokens=False)
        prev_pos = torch.cat([pos, torch.tensor([[len(ids) + i + delta for i in range(len(gen))]] * 3,
                                                dtype=pos.dtype)], 1)
        prev_delta = delta
    info["torch"], info["transformers"] = torch.__version__, transformers.__version__
    save_file(out, os.path.join(d, "golden_mmchat.safetensors"))
    with open(os.path.join(d, "golden_mmchat.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print("[mmchat-golden]", json.dumps(info))


if __name__ == "__main__":
    main()
