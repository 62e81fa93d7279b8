#!/usr/bin/env python3
"""Video goldens for encoders/video.c, pipelines/caption.c and tests/models/omni-tiny (docs/VIDEO.md).

1. Makes the committed test videos with FFmpeg's lavfi sources (the `ffmpeg` CLI):
     tests/data/video/clip.mp4   testsrc2 160x120, 12 fps, 3 s, H.264 yuv420p (GOP 12, B-frames)
                                 + a 440 Hz sine, AAC mono 16 kHz
     tests/data/video/clip2.mp4  mandelbrot 128x96, 10 fps, 2.5 s, MPEG-4 part 2, no audio
   (--keep-videos reuses existing files: the goldens must describe the committed bytes.)
2. Runs the reference pipeline on them, as qwen-omni-utils + transformers do for Qwen2.5-Omni:
     decode: PyAV (the reader behind torchvision.io.read_video), frame.to_ndarray("rgb24");
       F = frames decoded, r = the stream's average_rate;
     sampling [U] smart_nframes: n = floor2(min(max(F/r*2, 4), floor2(min(768, F)), F)),
       indices torch.linspace(0, F-1, n).round();
     resize [U] fetch_video: smart_resize(H, W, 28, 128*28*28, max(min(768*28*28, total/n*2),
       int(128*28*28*1.05))), torchvision resize BICUBIC antialias=True on float frames;
     Qwen2_5OmniProcessor (Qwen2VLVideoProcessor + WhisperFeatureExtractor + the tokenizer) with
       the chat prompt and use_audio_in_video False / True; the audio is the video's sound
       track decoded by PyAV (16 kHz mono already: no resampling);
     Qwen2_5OmniThinkerForConditionalGeneration (float32, eager) for position ids
       (get_rope_index), logits and greedy tokens.
3. Writes tests/data/video/goldens.safetensors:
     <c>.indices int32 [n]  <c>.grid int32 [3]  <c>.spg f32 [1]  <c>.fps f32 [1] (r)
     <c>.total int32 [1] (F)
     <c>.box f32 [n, H/4, W/4, 3]  reference RGB frames, 4x4 box means (decoder check)
     <c>.pv_rows int32 [k]  <c>.pv f32 [k, 1176]  every 48th row of pixel_values_videos
     <c>.pv_sum f32 [2]  sum and sum of squares of all pixel_values_videos
     clip.audio_L int32 [1]  mel frames of the sound track
     <c>.<a>.ids int32 [S]  prompt ids from the processor, a = "v" (video) or "va" (video+audio)
     <c>.<a>.pos int32 [3, S], <c>.<a>.delta int32 [1]   get_rope_index
     <c>.<a>.logits f32 [8, vocab]  logits of the last 8 prompt rows
     <c>.<a>.greedy int32 [G]  greedy tokens (no repetition penalty) after the prompt
   for c in clip (v and va) and clip2 (v).
Usage: /tmp/tv/bin/python tools/golden/make_video_goldens.py [--keep-videos]
Needs: torch, torchvision, transformers 5.17, av (PyAV), the ffmpeg CLI.
"""
import argparse
import json
import math
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "video")
MODEL = os.path.join(ROOT, "tests", "models", "omni-tiny")
PROMPT = "Describe this video."
SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
          "perceiving auditory and visual inputs, as well as generating text and speech.")
N_GREEDY = 10
PV_STRIDE = 48


def make_videos():
    os.makedirs(DATA, exist_ok=True)
    common = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-fflags", "+bitexact"]
    subprocess.run(common + [
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=12:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=3",
        "-c:v", "libx264", "-preset", "medium", "-crf", "30", "-pix_fmt", "yuv420p", "-g", "12", "-bf", "2",
        "-c:a", "aac", "-b:a", "24k", "-ac", "1", "-shortest", "-movflags", "+faststart",
        "-map_metadata", "-1", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        os.path.join(DATA, "clip.mp4")], check=True)
    subprocess.run(common + [
        "-f", "lavfi", "-i", "mandelbrot=size=128x96:rate=10",
        "-t", "2.5", "-c:v", "mpeg4", "-q:v", "5", "-pix_fmt", "yuv420p", "-an", "-map_metadata", "-1",
        "-flags:v", "+bitexact", os.path.join(DATA, "clip2.mp4")], check=True)


def decode(av, np, path):
    with av.open(path) as c:
        st = c.streams.video[0]
        rate = float(st.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
    return np.stack(frames), rate


def decode_audio(av, np, path):
    with av.open(path) as c:
        st = c.streams.audio[0]
        assert st.rate == 16000 and st.channels == 1, (st.rate, st.channels)
        chunks = [f.to_ndarray().reshape(-1) for f in c.decode(st)]
    return np.concatenate(chunks).astype(np.float32)


def smart_resize(h, w, factor, mn, mx):
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


def fetch_video(torch, tvF, frames, rate):
    """qwen-omni-utils fetch_video (docs/qwen2_5_omni.md 5.1-5.2) on decoded frames."""
    F = frames.shape[0]
    fps, min_f, max_f = 2.0, 4, min(768, F)
    min_f = math.ceil(min_f / 2) * 2
    max_f = math.floor(max_f / 2) * 2
    n = F / rate * fps
    n = min(max(n, min_f), max_f, F)
    n = math.floor(n / 2) * 2
    assert 2 <= n <= F
    idx = torch.linspace(0, F - 1, n).round().long()
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[idx]          # T C H W uint8
    min_pixels = 128 * 28 * 28
    total = 128000 * 28 * 28 * 0.9
    max_pixels = max(min(768 * 28 * 28, total / n * 2), int(min_pixels * 1.05))
    h, w = video.shape[2:]
    rh, rw = smart_resize(h, w, 28, min_pixels, max_pixels)
    resized = tvF.resize(video, [rh, rw], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True).float()
    return idx, resized, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep-videos", action="store_true")
    a = ap.parse_args()
    if not a.keep_videos:
        make_videos()
    import av
    import numpy as np
    import torch
    import torchvision.transforms.functional as tvF
    import transformers
    from safetensors.torch import save_file
    torch.set_grad_enabled(False)
    import sys
    sys.path.insert(0, HERE)
    from make_vision_goldens import load_omni

    model, cfg = load_omni(torch, transformers, MODEL)
    tok = transformers.Qwen2TokenizerFast(tokenizer_file=os.path.join(MODEL, "tokenizer.json"),
                                          eos_token="<|im_end|>", pad_token="<|endoftext|>")
    for k, v in dict(image_token="<|IMAGE|>", audio_token="<|AUDIO|>", video_token="<|VIDEO|>",
                     vision_bos_token="<|vision_bos|>", vision_eos_token="<|vision_eos|>",
                     audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>").items():
        setattr(tok, k, v)
    proc = transformers.Qwen2_5OmniProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(),
        video_processor=transformers.Qwen2VLVideoProcessor(min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28),
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=128, chunk_length=300, n_samples=4800000,
                                                               nb_max_frames=30000, sampling_rate=16000, hop_length=160,
                                                               n_fft=400, padding_side="right", return_attention_mask=True),
        tokenizer=tok)
    text = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>"
            + PROMPT + "<|im_end|>\n<|im_start|>assistant\n")
    out, info = {}, {}
    T = lambda x, dt=torch.int32: torch.tensor(x, dtype=dt)  # noqa: E731
    for name, cases in (("clip", ("v", "va")), ("clip2", ("v",))):
        path = os.path.join(DATA, name + ".mp4")
        frames, rate = decode(av, np, path)
        idx, resized, n = fetch_video(torch, tvF, frames, rate)
        out[name + ".indices"] = idx.to(torch.int32)
        out[name + ".fps"] = T([rate], torch.float32)
        out[name + ".total"] = T([frames.shape[0]])
        sel = frames[idx.numpy()].astype(np.float64)
        n_, H, W, _ = sel.shape
        box = sel[:, :H // 4 * 4, :W // 4 * 4].reshape(n_, H // 4, 4, W // 4, 4, 3).mean(axis=(2, 4))
        out[name + ".box"] = torch.from_numpy(box.astype(np.float32))
        pcm = decode_audio(av, np, path) if "va" in cases else None
        for c in cases:
            kw = dict(text=[text], videos=[resized], return_tensors="pt", padding=True,
                      videos_kwargs=dict(do_sample_frames=False, cap_pixels_per_frame=False))
            if c == "va":
                kw["audio"] = [pcm]
                kw["use_audio_in_video"] = True
            enc = proc(**kw)
            ids = enc["input_ids"]
            pv = enc["pixel_values_videos"].float()
            grid = enc["video_grid_thw"]
            spg = torch.tensor(enc["video_second_per_grid"], dtype=torch.float32)
            if c == "v":
                out[name + ".grid"] = grid[0].to(torch.int32)
                out[name + ".spg"] = spg
                rows = torch.arange(0, pv.shape[0], PV_STRIDE)
                out[name + ".pv_rows"] = rows.to(torch.int32)
                out[name + ".pv"] = pv[rows].contiguous()
                out[name + ".pv_sum"] = torch.tensor([pv.double().sum(), (pv.double() ** 2).sum()], dtype=torch.float32)
            else:
                assert torch.equal(out[name + ".grid"], grid[0].to(torch.int32))
            audio_len = enc["feature_attention_mask"].sum(-1) if c == "va" else None
            if c == "va":
                out[name + ".audio_L"] = audio_len.to(torch.int32)
            pos, delta = model.get_rope_index(ids, None, grid, torch.ones_like(ids), use_audio_in_video=(c == "va"),
                                              audio_seqlens=audio_len, second_per_grids=spg)
            pos, delta = pos[:, 0, :], int(delta.reshape(-1)[0])
            p = "%s.%s." % (name, c)
            out[p + "ids"] = ids[0].to(torch.int32)
            out[p + "pos"] = pos.to(torch.int32).contiguous()
            out[p + "delta"] = T([delta])

            def fwd(seq, posn):
                st = torch.tensor([seq])
                fk = dict(input_ids=st, attention_mask=torch.ones_like(st), pixel_values_videos=pv,
                          video_grid_thw=grid, video_second_per_grid=spg, position_ids=posn[:, None, :],
                          use_cache=False, use_audio_in_video=(c == "va"))
                if c == "va":
                    fk["input_features"] = enc["input_features"]
                    fk["feature_attention_mask"] = enc["feature_attention_mask"]
                lg = model(**fk).logits[0].float()
                assert torch.isfinite(lg).all()
                return lg
            seq, posn = ids[0].tolist(), pos.clone()
            lg = fwd(seq, posn)
            out[p + "logits"] = lg[-8:].contiguous()
            gen, gaps = [], []
            row = lg[-1]
            for step in range(N_GREEDY):
                top = torch.topk(row, 2)
                gaps.append(round(float(top.values[0] - top.values[1]), 4))
                t = int(top.indices[0])
                gen.append(t)
                posn = torch.cat([posn, torch.full((3, 1), len(seq) + delta, dtype=posn.dtype)], dim=1)
                seq.append(t)
                if step + 1 < N_GREEDY:
                    row = fwd(seq, posn)[-1]
            out[p + "greedy"] = T(gen)
            info[name + "." + c] = dict(n_ids=len(ids[0]), grid=grid[0].tolist(), delta=delta, greedy=gen, gaps=gaps,
                                        audio_L=int(audio_len[0]) if audio_len is not None else None)
        info[name] = dict(F=int(frames.shape[0]), rate=rate, n=n, indices=idx.tolist(),
                          resized=list(resized.shape), size=os.path.getsize(path))
    save_file(out, os.path.join(DATA, "goldens.safetensors"))
    info.update(torch=torch.__version__, transformers=transformers.__version__, av=av.__version__)
    with open(os.path.join(DATA, "goldens.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print("[video-golden]", json.dumps(info)[:1500])


if __name__ == "__main__":
    main()
