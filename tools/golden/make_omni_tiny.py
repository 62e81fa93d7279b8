#!/usr/bin/env python3
"""Make the tiny random multimodal checkpoints tests/models/omni-tiny and tests/models/vl-tiny.

omni-tiny: a Qwen2.5-Omni THINKER (Qwen2_5OmniThinkerForConditionalGeneration) with a tiny
  config, saved like a real Qwen2.5-Omni checkpoint: config.json with model_type "qwen2_5_omni"
  and a nested thinker_config (text_config with legacy rope_scaling/rope_theta, as the released
  config.json writes it), weights named thinker.model.*, thinker.visual.*, thinker.audio_tower.*,
  thinker.lm_head.* in bfloat16 (model.safetensors).
vl-tiny: a Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) saved with transformers'
  save_pretrained (transformers 5 names: model.visual.* with a fused attn.qkv,
  model.language_model.*, lm_head.*), bfloat16.

Vocabulary: a TINY one. The tokenizer is tests/models/tokenizer/qwen-tiny (700 BPE tokens,
<|endoftext|> 700, <|im_start|> 701, <|im_end|> 702) plus the Qwen special tokens 151646..151656
appended in the real order, so tiny id = real id - 151643 + 700:
  omni: 703 <|AUDIO|>, 704 <|audio_bos|>, 705 <|audio_eos|>, 706..708 box/quad,
        709 <|vision_bos|>, 710 <|vision_eos|>, 711 <|vision_pad|>, 712 <|IMAGE|>, 713 <|VIDEO|>
  vl:   703 <|object_ref_start|> ... 709 <|vision_start|>, 710 <|vision_end|>, 711 <|vision_pad|>,
        712 <|image_pad|>, 713 <|video_pad|>
vocab_size 768 (rows 714..767 are padding rows, as in real checkpoints). The config carries the
tiny ids (image_token_index etc.), so code that reads ids from config.json works unchanged.

Shapes (omni-tiny):
  text   hidden 64, 2 layers, 4 heads / 2 KV heads, head_dim 16, FFN 128, rope_theta 1e4,
         mrope_section [2,3,3] (sums to head_dim/2), untied lm_head
  vision depth 3 (fullatt_block_indexes [1]: layers 0 and 2 use windows), hidden 40, 2 heads
         (head_dim 20, not a power of two like the real 80), FFN 48, patch 14, temporal 2,
         merge 2, window 112, out_hidden 64
  audio  d_model 32, 2 layers, 2 heads, FFN 64, 128 mel bins, n_window 100,
         max_source_positions 1500, output_dim 64
vl-tiny: the same text/vision shapes (vision fullatt [2], depth 3), tokens_per_second 2.

Weights: explicit peaked random init with a fixed seed (norm weights 1 +- 0.2, biases 0.2*N,
embeddings/lm_head 0.5*N, linears/convs N/sqrt(fan_in)), then rounded to bf16 and saved.
Goldens (make_vision_goldens.py) are computed in float32 from these bf16-rounded weights.

Usage: /tmp/tv/bin/python tools/golden/make_omni_tiny.py [--out tests/models] [--only omni-tiny]
"""
import argparse
import json
import math
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

VOCAB = 768
REAL_BASE = 151643            # <|endoftext|> in the real Qwen vocabulary
TINY_BASE = 700               # <|endoftext|> in qwen-tiny


def tiny_id(real):
    return real - REAL_BASE + TINY_BASE


OMNI_SPECIALS = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>",
                 "<|VIDEO|>"]
VL_SPECIALS = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
               "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

TEXT_CFG = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False,
                tie_word_embeddings=False)
ROPE_THETA = 10000.0
MROPE = [2, 3, 3]
VISION_CFG = dict(depth=3, hidden_size=40, num_heads=2, intermediate_size=48, in_channels=3,
                  patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                  out_hidden_size=64, hidden_act="silu")
AUDIO_CFG = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                 num_mel_bins=128, n_window=100, max_source_positions=1500, output_dim=64,
                 activation_function="gelu", scale_embedding=False)

PREPROCESSOR = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128, "hop_length": 160, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "max_pixels": 12845056,
    "merge_size": 2, "min_pixels": 3136, "n_fft": 400, "n_samples": 4800000, "nb_max_frames": 30000,
    "padding_side": "right", "padding_value": 0.0, "patch_size": 14,
    "processor_class": "Qwen2_5OmniProcessor", "return_attention_mask": True,
    "sampling_rate": 16000, "temporal_patch_size": 2,
}


def log(*a):
    print("[omni-tiny]", *a, flush=True)


def make_tokenizer(specials, path):
    from tokenizers import AddedToken, Tokenizer
    src = os.path.join(ROOT, "tests", "models", "tokenizer", "qwen-tiny", "tokenizer.json")
    tok = Tokenizer.from_file(src)
    assert tok.token_to_id("<|endoftext|>") == TINY_BASE
    assert tok.get_vocab_size() == 703, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == 703 + i, (s, tok.token_to_id(s))
    tok.save(path)
    return tok


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def init_weights(torch, model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            last = name.rsplit(".", 1)[-1]
            is_norm = ("norm" in name or "ln_" in name) and p.dim() == 1
            if last == "bias":
                v = 0.2 * r
            elif is_norm:
                v = 1.0 + 0.2 * r
            elif "embed_tokens" in name or "lm_head" in name or "bos_eos_token" in name:
                v = 0.5 * r
            else:                       # Linear [out, in] or conv [out, in, k...]
                assert p.dim() >= 2, name
                fan_in = p[0].numel()
                v = r / math.sqrt(fan_in)
            p.copy_(v.to(p.dtype))
        # round every weight to bf16 so the float32 model used for goldens holds exactly the
        # values that are saved
        for _, p in model.named_parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))


def gen_config(eos):
    return {"bos_token_id": tiny_id(151643), "eos_token_id": eos, "pad_token_id": tiny_id(151643),
            "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "repetition_penalty": 1.05}


def tok_config(eos_token):
    return {"add_bos_token": False, "add_prefix_space": False, "bos_token": None,
            "clean_up_tokenization_spaces": False, "eos_token": eos_token, "errors": "replace",
            "model_max_length": 32768, "pad_token": "<|endoftext|>", "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer"}


def omni_thinker_config(transformers):
    text = dict(TEXT_CFG)
    text["rope_parameters"] = dict(rope_type="default", rope_theta=ROPE_THETA, mrope_section=MROPE)
    vision = dict(VISION_CFG, fullatt_block_indexes=[1])
    cfg = transformers.Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=dict(AUDIO_CFG),
        audio_token_index=tiny_id(151646), image_token_index=tiny_id(151655),
        video_token_index=tiny_id(151656), audio_start_token_id=tiny_id(151647),
        audio_end_token_id=tiny_id(151648), position_id_per_seconds=25, seconds_per_chunk=2,
        user_token_id=872 if 872 < VOCAB else 0, tie_word_embeddings=False)
    cfg.vision_start_token_id = tiny_id(151652)
    cfg.vision_end_token_id = tiny_id(151653)
    cfg.pad_token_id = tiny_id(151643)
    cfg.bos_token_id = tiny_id(151643)
    cfg.eos_token_id = tiny_id(151645)
    return cfg


def omni_config_json(thinker_cfg):
    """config.json shaped like the released Qwen2.5-Omni one (thinker part only)."""
    th = thinker_cfg.to_dict()
    drop = {"id2label", "label2id", "problem_type", "return_dict", "output_hidden_states",
            "output_attentions", "chunk_size_feed_forward", "is_encoder_decoder", "_name_or_path",
            "dtype", "architectures", "transformers_version"}

    def clean(d):
        return {k: v for k, v in d.items() if k not in drop}

    th = clean(th)
    for k in ("text_config", "vision_config", "audio_config"):
        th[k] = clean(th[k])
    tc = th["text_config"]
    rp = tc.pop("rope_parameters")
    # the released config writes rope_theta + rope_scaling (type/rope_type "default")
    tc["rope_theta"] = rp["rope_theta"]
    tc["rope_scaling"] = {"mrope_section": rp["mrope_section"], "rope_type": "default",
                          "type": "default"}
    tc["sliding_window"] = 32768
    tc.pop("layer_types", None)
    vc = th["vision_config"]
    vc.pop("rope_parameters", None)     # released config has none (theta 10000 default)
    vc["tokens_per_second"] = 25        # in the released config, unused by transformers
    th["vision_start_token_id"] = tiny_id(151652)
    th["vision_end_token_id"] = tiny_id(151653)
    th["architectures"] = ["Qwen2_5OmniThinkerForConditionalGeneration"]
    return {
        "architectures": ["Qwen2_5OmniModel"],
        "enable_audio_output": False,
        "enable_talker": False,
        "model_type": "qwen2_5_omni",
        "torch_dtype": "bfloat16",
        "transformers_version": "5.17.0",
        "thinker_config": th,
    }


def build_omni(torch, transformers, out, seed):
    from safetensors.torch import save_file
    d = os.path.join(out, "omni-tiny")
    os.makedirs(d, exist_ok=True)
    cfg = omni_thinker_config(transformers)
    torch.manual_seed(seed)
    model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(cfg).float().eval()
    init_weights(torch, model, seed)
    sd = model.state_dict()
    tensors = {}
    for k, v in sd.items():
        if k.startswith(("model.rotary_emb", "visual.rotary_pos_emb")) or "inv_freq" in k:
            continue
        tensors["thinker." + k] = v.detach().to(torch.bfloat16).contiguous()
    assert "thinker.lm_head.weight" in tensors
    assert "thinker.visual.blocks.0.attn.q.weight" in tensors
    assert "thinker.audio_tower.layers.0.self_attn.k_proj.weight" in tensors
    assert "thinker.audio_tower.layers.0.self_attn.k_proj.bias" not in tensors
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(d, "config.json"), omni_config_json(cfg))
    eos = [tiny_id(151645), tiny_id(151643)]
    write_json(os.path.join(d, "generation_config.json"), gen_config(eos))
    make_tokenizer(OMNI_SPECIALS, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), tok_config("<|im_end|>"))
    write_json(os.path.join(d, "preprocessor_config.json"), PREPROCESSOR)
    log("omni-tiny: %d tensors, %d params" % (len(tensors), sum(t.numel() for t in tensors.values())))
    return d


def build_vl(torch, transformers, out, seed):
    d = os.path.join(out, "vl-tiny")
    os.makedirs(d, exist_ok=True)
    text = dict(TEXT_CFG)
    text["rope_parameters"] = dict(rope_type="default", rope_theta=ROPE_THETA, mrope_section=MROPE)
    text.update(bos_token_id=tiny_id(151643), eos_token_id=tiny_id(151645))
    vision = dict(VISION_CFG, fullatt_block_indexes=[2], tokens_per_second=2)
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=tiny_id(151655),
        video_token_id=tiny_id(151656), vision_start_token_id=tiny_id(151652),
        vision_end_token_id=tiny_id(151653), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).float().eval()
    init_weights(torch, model, seed)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(d)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "generation_config.json"):
            os.remove(os.path.join(d, f))
    eos = [tiny_id(151645), tiny_id(151643)]
    write_json(os.path.join(d, "generation_config.json"), gen_config(eos))
    make_tokenizer(VL_SPECIALS, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "tokenizer_config.json"), tok_config("<|im_end|>"))
    pp = dict(PREPROCESSOR)
    for k in list(pp):
        if k not in ("image_mean", "image_std", "max_pixels", "min_pixels", "merge_size",
                     "patch_size", "temporal_patch_size"):
            pp.pop(k)
    pp.update(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2_5_VLProcessor")
    write_json(os.path.join(d, "preprocessor_config.json"), pp)
    log("vl-tiny written")
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "models"))
    ap.add_argument("--only", choices=["omni-tiny", "vl-tiny"])
    a = ap.parse_args()
    import torch
    import transformers
    torch.set_grad_enabled(False)
    if a.only in (None, "omni-tiny"):
        build_omni(torch, transformers, a.out, 20261128)
    if a.only in (None, "vl-tiny"):
        build_vl(torch, transformers, a.out, 20261129)


if __name__ == "__main__":
    main()
