#!/usr/bin/env python3
"""Audio-encoder and audio-prompt goldens for tests/models/omni-tiny (docs/AUDIO.md).

Run tools/golden/make_omni_tiny.py first (it writes the checkpoint). This script
  1. writes tests/models/omni-tiny/audio_golden.wav: 2.7 s of a synthetic, deterministic signal
     (a gliding tone with vibrato, a second partial, an amplitude envelope and a little seeded
     noise), 16 kHz mono PCM16, so loading needs no resampling;
  2. loads the saved bf16 checkpoint back in float32 (eager attention, CPU) with transformers and
     writes tests/models/omni-tiny/audio_golden.safetensors:

  mel.feat     f32 [128, L]   WhisperFeatureExtractor features of the WAV (as Qwen2_5OmniProcessor
                              calls it: 300 s max_length padding, attention mask), first L frames
  mel.len      i32 [1]        L = sum(feature_attention_mask)
  enc.out      f32 [N, 64]    thinker.get_audio_features(features, mask): the encoder output
  syn.len      i32 [1]        frames of a synthetic feature matrix spanning 4 chunks (613 frames)
  syn.seed     i32 [1]        its seed; element i (flat over [128, L]) is
                                h = (i * 2654435761 + seed * 40503) mod 2^32; h ^= h >> 15;
                                h = h * 2246822519 mod 2^32; h ^= h >> 13;
                                value = (h >> 8) * 2^-24 * 3 - 1.5    (exact in float32)
  syn.out      f32 [N2, 64]   the audio tower's output for it
  lm.ids       i32 [S]        system prompt + user turn (<|audio_bos|><|AUDIO|>*N<|audio_eos|>
                              + the transcription instruction) + generation prompt
  lm.pos       i32 [3, S]     get_rope_index position ids; lm.delta i32 [1]
  lm.tail_start i32 [1]       first row stored in lm.logits (the <|audio_eos|> row)
  lm.logits    f32 [S - tail_start, vocab]
  listen.ids1  i32 [G1]       greedy reply of turn 1 (the transcript; a stop token ends it early
                              and is not stored), full forward per step, positions c + delta
  listen.ids2  i32 [G2]       greedy reply of turn 2: turn 1 + its reply ids, then the ids of
                              "<|im_end|>\\n<|im_start|>user\\n" + QUESTION +
                              "<|im_end|>\\n<|im_start|>assistant\\n"
  listen.n     i32 [1]        most tokens per turn (oscar listen -n)
  listen.gaps  f32 [steps]    top-1 minus top-2 logit at every greedy step of both turns (the GPU
                              test compares tokens only while this margin is comfortable)
Also audio_golden.json with the greedy margins (top-1 minus top-2 logit) and the instruction.

Usage: /tmp/tv/bin/python tools/golden/make_audio_goldens.py [--models tests/models]
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
               "perceiving auditory and visual inputs, as well as generating text and speech.")
INSTRUCTION = "Transcribe the English audio into text without any punctuation marks."
QUESTION = "What is the mood of the speaker?"
N_LISTEN = 16
SR = 16000
SECONDS = 2.7
SYN_LEN = 613
SYN_SEED = 5


def synth_wave(np):
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    f = 180.0 + 120.0 * t / SECONDS + 8.0 * np.sin(2 * np.pi * 5.0 * t)   # glide + vibrato
    ph = 2 * np.pi * np.cumsum(f) / SR
    env = np.minimum(1.0, t / 0.05) * np.minimum(1.0, (SECONDS - t) / 0.1) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))
    rng = np.random.default_rng(1234)
    x = env * (0.45 * np.sin(ph) + 0.2 * np.sin(2.0 * ph + 0.3) + 0.08 * np.sin(3.0 * ph)) \
        + 0.01 * rng.standard_normal(n)
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def syn_features(np, L, seed):
    i = np.arange(128 * L, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(seed * 40503)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    v = (h >> np.uint64(8)).astype(np.float64) * (2.0 ** -24) * 3.0 - 1.5
    return v.astype(np.float32).reshape(128, L)


def load_omni(transformers, d):
    from safetensors.torch import load_file
    with open(os.path.join(d, "config.json")) as f:
        cj = json.load(f)
    th = dict(cj["thinker_config"])
    cfg = transformers.Qwen2_5OmniThinkerConfig(**th)
    cfg._attn_implementation = "eager"
    for sub in (cfg.text_config, cfg.vision_config, cfg.audio_config):
        sub._attn_implementation = "eager"
    model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(cfg).float().eval()
    sd = load_file(os.path.join(d, "model.safetensors"))
    sd = {k[len("thinker."):]: v.float() for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "inv_freq" not in m and "rotary" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    return model, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(ROOT, "tests", "models"))
    a = ap.parse_args()
    import numpy as np
    import soundfile as sf
    import torch
    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    torch.set_grad_enabled(False)
    d = os.path.join(a.models, "omni-tiny")
    T = lambda x, dt=torch.int32: torch.tensor(x, dtype=dt)  # noqa: E731

    # ---- 1. the WAV -------------------------------------------------------------------------
    wav_path = os.path.join(d, "audio_golden.wav")
    sf.write(wav_path, synth_wave(np), SR, subtype="PCM_16")
    wav, sr = sf.read(wav_path, dtype="float32")     # int16 / 32768, as libsndfile reads it
    assert sr == SR and wav.ndim == 1

    # ---- 2. features through the reference feature extractor (as the processor calls it) ----
    with open(os.path.join(d, "preprocessor_config.json")) as f:
        pp = json.load(f)
    fe = transformers.WhisperFeatureExtractor(
        feature_size=pp["feature_size"], sampling_rate=pp["sampling_rate"], hop_length=pp["hop_length"],
        chunk_length=pp["chunk_length"], n_fft=pp["n_fft"], padding_value=pp["padding_value"],
        dither=pp.get("dither", 0.0))
    fi = fe([wav], sampling_rate=SR, padding="max_length", return_attention_mask=True, return_tensors="pt")
    feats, fmask = fi["input_features"].float(), fi["attention_mask"]
    L = int(fmask.sum())
    assert L == -(-len(wav) // 160), (L, len(wav))

    model, cfg = load_omni(transformers, d)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    enc = model.get_audio_features(feats, feature_attention_mask=fmask).last_hidden_state.float()
    n_aud = ((L - 1) // 2 + 1 - 2) // 2 + 1
    assert enc.shape == (n_aud, cfg.text_config.hidden_size) and torch.isfinite(enc).all(), enc.shape
    out = {"mel.feat": feats[0, :, :L].contiguous(), "mel.len": T([L]), "enc.out": enc.contiguous()}

    syn = torch.from_numpy(syn_features(np, SYN_LEN, SYN_SEED))
    so = model.audio_tower(syn, feature_lens=torch.tensor([SYN_LEN])).last_hidden_state.float()
    n2 = ((SYN_LEN - 1) // 2 + 1 - 2) // 2 + 1
    assert so.shape[0] == n2 and torch.isfinite(so).all()
    out.update({"syn.len": T([SYN_LEN]), "syn.seed": T([SYN_SEED]), "syn.out": so.contiguous()})

    # ---- 3. an audio + instruction prompt through the whole thinker -------------------------
    def ids_of(s):
        return tok.encode(s, add_special_tokens=False).ids

    aud_id, as_id, ae_id = cfg.audio_token_id, cfg.audio_start_token_id, cfg.audio_end_token_id
    assert tok.token_to_id("<|AUDIO|>") == aud_id and tok.token_to_id("<|audio_bos|>") == as_id
    stop = {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    ids = ids_of("<|im_start|>system\n" + OMNI_SYSTEM + "<|im_end|>\n<|im_start|>user\n")
    ids += [as_id] + [aud_id] * n_aud + [ae_id]
    ids += ids_of(INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n")

    def rope(seq):
        st = torch.tensor([seq])
        pos, delta = model.get_rope_index(st, None, None, torch.ones_like(st), audio_seqlens=torch.tensor([L]))
        return pos[:, 0, :], int(delta.reshape(-1)[0])

    def fwd(seq, pos):
        st = torch.tensor([seq])
        lg = model(input_ids=st, attention_mask=torch.ones_like(st), input_features=feats,
                   feature_attention_mask=fmask, position_ids=pos[:, None, :], use_cache=False).logits[0].float()
        assert torch.isfinite(lg).all()
        return lg

    pos, delta = rope(ids)
    lg = fwd(ids, pos)
    tail = ids.index(ae_id)
    out.update({"lm.ids": T(ids), "lm.pos": pos.to(torch.int32).contiguous(), "lm.delta": T([delta]),
                "lm.tail_start": T([tail]), "lm.logits": lg[tail:].contiguous()})

    # ---- 4. the two turns of `oscar listen -p QUESTION -n N_LISTEN` (greedy) ---------------
    gaps = []

    def greedy(seq, pos, delta, row):
        got = []
        for step in range(N_LISTEN):
            top = torch.topk(row, 2)
            gaps.append(float(top.values[0] - top.values[1]))
            nxt = int(top.indices[0])
            if nxt in stop:
                break
            got.append(nxt)
            c = len(seq)
            seq = seq + [nxt]
            pos = torch.cat([pos, torch.full((3, 1), c + delta, dtype=pos.dtype)], dim=1)
            if step + 1 < N_LISTEN:
                row = fwd(seq, pos)[-1]
        return got, seq

    g1, seq = greedy(list(ids), pos, delta, lg[-1])
    seq = seq + ids_of("<|im_end|>\n<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    pos2, delta2 = rope(seq)
    assert delta == 0 and delta2 == 0, (delta, delta2)    # audio-only prompts: plain positions
    g2, _ = greedy(seq, pos2, delta2, fwd(seq, pos2)[-1])
    out.update({"listen.ids1": T(g1), "listen.ids2": T(g2), "listen.n": T([N_LISTEN]),
                "listen.gaps": T(gaps, torch.float32)})

    save_file(out, os.path.join(d, "audio_golden.safetensors"))
    info = dict(wav_seconds=SECONDS, mel_frames=L, audio_tokens=n_aud, syn_frames=SYN_LEN, syn_tokens=n2,
                prompt_len=len(ids), delta=delta, instruction=INSTRUCTION, question=QUESTION,
                turn1=g1, turn2=g2, turn1_text=tok.decode(g1, skip_special_tokens=True),
                turn2_text=tok.decode(g2, skip_special_tokens=True), min_gap=min(gaps),
                gaps=[round(g, 4) for g in gaps], torch=torch.__version__,
                transformers=transformers.__version__)
    with open(os.path.join(d, "audio_golden.json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("[audio-golden]", json.dumps(info, ensure_ascii=False)[:600], flush=True)


if __name__ == "__main__":
    main()
