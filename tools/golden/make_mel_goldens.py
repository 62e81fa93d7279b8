#!/usr/bin/env python3
"""Make the audio test files (tests/data/audio/*) and the log-mel goldens that tests/test_audio.c
checks against.

References (none of them ours):
  * loading: what qwen_omni_utils does, librosa.load(path, sr=16000): soundfile float32 read,
    mean of the channels, soxr "HQ" resampling (python-soxr, librosa's default res_type
    'soxr_hq'), length fixed to ceil(n * 16000 / sr). librosa itself is not needed: this script
    repeats those four steps with the same libraries. Files soundfile cannot read (m4a, mp4) are
    decoded with the ffmpeg command line to float (librosa would go through audioread/ffmpeg).
  * features: transformers' WhisperFeatureExtractor with the Qwen2.5-Omni preprocessor_config
    values (feature_size 128, chunk_length 300, n_fft 400, hop 160, dither 0), called the way
    Qwen2_5OmniProcessor calls it (padding="max_length", return_attention_mask=True,
    sampling_rate=16000, truncation default True); mel filters from transformers'
    audio_utils.mel_filter_bank; token counts from
    Qwen2_5OmniAudioEncoder._get_feat_extract_output_lengths.

Needs: numpy, soundfile, torch, transformers (5.17), soxr (pip), safetensors, and the ffmpeg
command line (apt-get install ffmpeg) for the m4a/mp4 files.
Run from anywhere:  python tools/golden/make_mel_goldens.py [--keep-inputs]
--keep-inputs reuses the committed input files (lossy encoders need not be bit-reproducible
across versions) and only recomputes the goldens.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import soxr
import torch
from safetensors.numpy import save_file
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "audio")
SR = 16000


# ------------------------------------------------------------------ signals
def tone_noise(n, sr, seed, freqs=(440.0, 1234.5), amps=(0.3, 0.1), noise=0.02, channels=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        x = sum(a * np.sin(2 * np.pi * (f * (1 + 0.07 * c)) * t + c) for f, a in zip(freqs, amps))
        x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.7 * t + c))  # slow envelope
        x = x + noise * rng.standard_normal(n)
        out.append(x)
    return np.clip(np.stack(out, axis=1), -0.99, 0.99)  # [n, channels]


def lcg(n, seed, amp_shift=1):
    """The same integer LCG as tests/test_audio.c: exact float32 values in both languages.
    x <- x*6364136223846793005 + 1442695040888963407 (mod 2^64); v = (x >> 40) - 2^23;
    sample = v * 2^-(23+amp_shift), and every other 4000-sample block is 64x quieter."""
    mask = (1 << 64) - 1
    x = seed & mask
    out = np.empty(n, dtype=np.float32)
    a, c = 6364136223846793005, 1442695040888963407
    scale = 2.0 ** -(23 + amp_shift)
    for i in range(n):
        x = (x * a + c) & mask
        v = (x >> 40) - (1 << 23)
        s = v * scale
        if (i // 4000) % 2 == 1:
            s /= 64.0
        out[i] = s
    return out


# ------------------------------------------------------------------ inputs
def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_inputs():
    os.makedirs(DATA, exist_ok=True)
    p = lambda name: os.path.join(DATA, name)  # noqa: E731
    # 1.3 s + 37 samples: 16 kHz mono int16 (the exact path: no resampling, no downmix).
    sf.write(p("tone16k_mono.wav"), tone_noise(20837, 16000, 1)[:, 0], 16000, subtype="PCM_16")
    # 16 kHz stereo int16: downmix exact, no resampling.
    sf.write(p("stereo16k.wav"), tone_noise(4003, 16000, 2, channels=2), 16000, subtype="PCM_16")
    # 44.1 kHz stereo int16.
    sf.write(p("stereo44k.wav"), tone_noise(11025, 44100, 3, channels=2), 44100, subtype="PCM_16")
    # 22.05 kHz mono 24-bit.
    sf.write(p("mono22k_pcm24.wav"), tone_noise(5513, 22050, 4)[:, 0], 22050, subtype="PCM_24")
    # 8 kHz mono unsigned 8-bit.
    sf.write(p("mono8k_u8.wav"), tone_noise(2400, 8000, 5, freqs=(300.0, 1100.0))[:, 0], 8000, subtype="PCM_U8")
    # 48 kHz, 6 channels, FLAC (0.1 s: noise does not compress).
    sf.write(p("six48k.flac"), tone_noise(4800, 48000, 6, channels=6), 48000, subtype="PCM_16")
    # 32 kHz mono Ogg Vorbis.
    sf.write(p("mono32k.ogg"), tone_noise(8000, 32000, 7)[:, 0], 32000, subtype="VORBIS")
    # 44.1 kHz mono MP3.
    sf.write(p("mono44k.mp3"), tone_noise(11025, 44100, 8)[:, 0], 44100, format="MP3", subtype="MPEG_LAYER_III")
    with tempfile.TemporaryDirectory() as td:
        w = os.path.join(td, "a.wav")
        sf.write(w, tone_noise(12000, 48000, 9, channels=2), 48000, subtype="PCM_16")
        bitexact = ["-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1"]
        # AAC in M4A (FFmpeg path), 48 kHz stereo.
        ffmpeg("-i", w, "-c:a", "aac", "-b:a", "48k", *bitexact, p("stereo48k.m4a"))
        # A tiny H.264 video with an AAC stereo 48 kHz audio track, and one without audio.
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=0.25", "-i", w,
               "-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "32k", "-shortest", *bitexact, p("video_with_audio.mp4"))
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=0.2",
               "-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", "-pix_fmt", "yuv420p",
               *bitexact, p("video_no_audio.mp4"))


# ------------------------------------------------------------------ reference loading
def librosa_like_load(path):
    """librosa.load(path, sr=16000): soundfile (else ffmpeg) float32, channel mean, soxr_hq."""
    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)  # [n, ch]
    except sf.LibsndfileError:
        info = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
             "stream=sample_rate,channels", "-of", "json", path],
            check=True, capture_output=True).stdout)["streams"][0]
        sr, ch = int(info["sample_rate"]), int(info["channels"])
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-map", "0:a:0", "-f", "f32le",
                              "-c:a", "pcm_f32le", "-"], check=True, capture_output=True).stdout
        y = np.frombuffer(raw, dtype=np.float32).reshape(-1, ch)
    y = y.T  # [ch, n] as librosa has it
    if y.shape[0] > 1:
        y = np.mean(y, axis=0)  # librosa.to_mono
    else:
        y = y[0]
    if sr != SR:
        n_out = int(np.ceil(y.shape[-1] * (float(SR) / sr)))
        y = soxr.resample(y, sr, SR, quality="soxr_hq")
        y = y[:n_out] if y.shape[0] >= n_out else np.pad(y, (0, n_out - y.shape[0]))  # fix_length
    return np.asarray(y, dtype=np.float32), sr


# ------------------------------------------------------------------ features
FE = WhisperFeatureExtractor(feature_size=128, sampling_rate=SR, hop_length=160, chunk_length=300,
                             n_fft=400, padding_value=0.0, dither=0.0, return_attention_mask=True)


def features(pcm):
    out = FE(pcm, sampling_rate=SR, padding="max_length", return_attention_mask=True, return_tensors="np")
    feat, mask = out["input_features"][0], out["attention_mask"][0]
    assert feat.shape == (128, 30000) and mask.shape == (30000,)
    L = int(mask.sum())
    assert (mask[:L] == 1).all() and (mask[L:] == 0).all()
    return feat, L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep-inputs", action="store_true")
    args = ap.parse_args()
    if not args.keep_inputs:
        make_inputs()
    g = {}
    filt = mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0,
                           max_frequency=8000.0, sampling_rate=SR, norm="slaney", mel_scale="slaney")
    assert np.allclose(filt, FE.mel_filters)
    g["mel_filters"] = filt.astype(np.float32)

    # Decoded/resampled pcm of every input file (what librosa.load gives).
    files = ["tone16k_mono.wav", "stereo16k.wav", "stereo44k.wav", "mono22k_pcm24.wav", "mono8k_u8.wav",
             "six48k.flac", "mono32k.ogg", "mono44k.mp3", "stereo48k.m4a", "video_with_audio.mp4"]
    for f in files:
        pcm, sr = librosa_like_load(os.path.join(DATA, f))
        key = os.path.splitext(f)[0]
        if key == "tone16k_mono":  # the test checks this one against the WAV's own int16 data
            tone = pcm
        else:
            g[key + ".pcm"] = pcm
        g[key + ".rate"] = np.array([sr], dtype=np.float32)
        print(f"{f}: {sr} Hz -> {pcm.shape[0]} samples at 16 kHz")

    # Features: for the files whose pcm feeds the test directly, and for synthetic LCG signals.
    cases = {k: g[k + ".pcm"] for k in ["stereo16k", "stereo44k", "mono8k_u8"]}
    cases["tone16k_mono"] = tone
    cases["lcg_short"] = lcg(100, 11)          # shorter than the 200-sample reflection
    cases["lcg_hop"] = lcg(1120, 12)           # a multiple of the hop
    cases["lcg_quiet"] = lcg(3000, 13, 21)     # quiet: the 1e-10 clamp, not max-8, is the floor
    for k, pcm in cases.items():
        feat, L = features(pcm)
        # Frames past L+2 hold padding zeros only: one constant, which the C code does not return.
        assert np.all(feat[:, L + 3:] == feat[0, -1]), k
        g[k + ".feat"] = np.ascontiguousarray(feat[:, :L]).astype(np.float32)
        g[k + ".n_frames"] = np.array([L], dtype=np.float32)
        print(f"features {k}: n={pcm.shape[0]} L={L}")

    # Longer than 300 s: truncated to 4.8M samples; keep the head and tail frames only.
    n_long = 4_800_000 + 12_345
    feat, L = features(lcg(n_long, 14))
    assert L == 30000
    g["lcg_long.feat_head"] = np.ascontiguousarray(feat[:, :4]).astype(np.float32)
    g["lcg_long.feat_tail"] = np.ascontiguousarray(feat[:, -10:]).astype(np.float32)
    g["lcg_long.n_frames"] = np.array([L], dtype=np.float32)

    # Token counts for a range of frame counts.
    Ls = np.array(list(range(0, 420)) + [2999, 3000, 3001, 29999, 30000], dtype=np.int64)
    _, n_tok = Qwen2_5OmniAudioEncoder._get_feat_extract_output_lengths(None, torch.tensor(Ls))
    g["tokens.L"] = Ls.astype(np.float32)
    g["tokens.n"] = n_tok.numpy().astype(np.float32)

    out = os.path.join(DATA, "mel_goldens.safetensors")
    save_file(g, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
