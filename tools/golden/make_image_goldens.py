#!/usr/bin/env python3
"""Tiny test images + reference decodes and Qwen2-VL/Qwen2.5-Omni preprocessing goldens.

Writes tests/data/images/*.{png,jpg,gif,webp,bmp} and tests/data/images/goldens.safetensors.
Deterministic (fixed seeds, fixed encoders): run it twice and diff.
Needs: numpy, pillow (with WebP), torch, torchvision, transformers (5.17 was used), safetensors.

Reference semantics (docs/qwen2_5_omni.md section 2):
  * decode = PIL Image.open + qwen-omni-utils `to_rgb` (RGBA composited over WHITE with the
    alpha as paste mask; every other mode goes through .convert("RGB"), which drops alpha of
    LA / tRNS images), GIF = first frame.
  * "omni" path = qwen-omni-utils `fetch_image`: its smart_resize (max(28, round(..)) first
    step), PIL Image.resize(size) (default BICUBIC), then the transformers Qwen2VLImageProcessor
    with the same min/max pixels, whose own resize is then a same-size no-op (checked here).
  * "hf" path = the transformers processor alone on the decoded image (torchvision bicubic,
    antialias=True, on the uint8 tensor).
qwen-omni-utils is not installed here; its two functions used above are restated below from
their documented behaviour (they are a few lines each).

Goldens (safetensors):
  dec.<file>               U8  [h, w, 3]  reference RGB decode of tests/data/images/<file>
  raw16.<file>             I32 [h, w, c]  the 16-bit samples written into a 16-bit PNG
  <case>.pixel_values      F32 [n, 1176]
  <case>.grid_thw          I64 [1, 3]
  <case>.params            I64 [2]        min_pixels, max_pixels
  <case>.resized           U8  [H, W, 3]  (omni cases) the PIL-resized image
  mixed.resized_f32        F32 [3, H, W]  torchvision float bicubic antialias resize (video-style)
"""
import io
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "images")
FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28


# ---- qwen-omni-utils (v2_5 vision_process.py) behaviour ----
def omni_smart_resize(height, width, factor=FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS):
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect ratio")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def omni_to_rgb(img):
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.split()[3])
        return bg
    return img.convert("RGB")


# ---- a minimal PNG writer for 16-bit colour and Adam7 interlacing (PIL writes neither) ----
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_rows(arr, bit_depth):
    h = arr.shape[0]
    raw = arr.astype(">u2" if bit_depth == 16 else np.uint8).tobytes()
    row = len(raw) // h if h else 0
    return b"".join(b"\x00" + raw[y * row:(y + 1) * row] for y in range(h))  # filter 0 per row


def write_png(path, arr, color_type, bit_depth, interlace=False):
    h, w = arr.shape[:2]
    if interlace:
        data = b"".join(png_rows(arr[y0::dy, x0::dx], bit_depth) for x0, y0, dx, dy in ADAM7
                        if arr[y0::dy, x0::dx].size)
    else:
        data = png_rows(arr, bit_depth)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data, 9))
                + chunk(b"IEND", b""))


def make_images(rs):
    files = {}
    # 3 wide, 5 tall RGB: the min_pixels (upscale) branch with default parameters.
    a = rs.randint(0, 256, (5, 3, 3)).astype(np.uint8)
    Image.fromarray(a, "RGB").save(os.path.join(OUT, "odd_3x5.png"))
    # 150 x 100: smooth gradients + noise + a sharp edge (overshoot/clipping in bicubic).
    y, x = np.mgrid[0:100, 0:150].astype(np.float64)
    g = np.stack([x / 149 * 255, y / 99 * 255, (x + y) / 248 * 255], -1)
    g += rs.normal(0, 12, g.shape)
    g[30:60, 40:70] = [250, 5, 128]
    grad = np.clip(np.round(g), 0, 255).astype(np.uint8)
    Image.fromarray(grad, "RGB").save(os.path.join(OUT, "grad_150x100.png"))
    # 60 x 45 noisy crop: smart_resize gives 56 x 56, so one axis shrinks and the other grows
    Image.fromarray(grad[20:65, 30:90], "RGB").save(os.path.join(OUT, "mixed_60x45.png"))
    # 50 x 62: resized to 56 x 56, the width grows and the height shrinks (the usual photo case,
    # e.g. 640x480 -> 644x476), where Pillow 13 runs its vertical pass first
    Image.fromarray(grad[10:72, 80:130], "RGB").save(os.path.join(OUT, "updown_50x62.png"))
    # RGBA with alpha 0, 255 and everything between.
    r = rs.randint(0, 256, (30, 40, 4)).astype(np.uint8)
    r[:5, :, 3] = 0
    r[5:10, :, 3] = 255
    Image.fromarray(r, "RGBA").save(os.path.join(OUT, "rgba_40x30.png"))
    Image.fromarray(rs.randint(0, 256, (20, 30)).astype(np.uint8), "L").save(os.path.join(OUT, "gray_30x20.png"))
    Image.fromarray(rs.randint(0, 256, (7, 9, 2)).astype(np.uint8), "LA").save(os.path.join(OUT, "la_9x7.png"))
    # palette, 4-bit, with a tRNS chunk (PIL drops it on convert("RGB"))
    p = Image.fromarray(rs.randint(0, 12, (6, 8)).astype(np.uint8), "P")
    p.putpalette(list(rs.randint(0, 256, 12 * 3)))
    p.save(os.path.join(OUT, "pal4_8x6.png"), bits=4, transparency=bytes([0, 128] + [255] * 10))
    # 1-bit black and white
    Image.fromarray(rs.randint(0, 2, (3, 10)).astype(bool)).save(os.path.join(OUT, "bw1_10x3.png"))
    # 16-bit: gray (I;16), RGB and RGBA via the writer above
    g16 = rs.randint(0, 65536, (5, 7)).astype(np.uint16)
    write_png(os.path.join(OUT, "gray16_7x5.png"), g16, 0, 16)
    c16 = rs.randint(0, 65536, (4, 6, 3)).astype(np.uint16)
    write_png(os.path.join(OUT, "rgb16_6x4.png"), c16, 2, 16)
    a16 = rs.randint(0, 65536, (3, 5, 4)).astype(np.uint16)
    write_png(os.path.join(OUT, "rgba16_5x3.png"), a16, 6, 16)
    write_png(os.path.join(OUT, "adam7_13x11.png"), rs.randint(0, 256, (11, 13, 3)).astype(np.uint8), 2, 8,
              interlace=True)
    files["raw16.gray16_7x5.png"] = g16.astype(np.int32)[:, :, None]
    files["raw16.rgb16_6x4.png"] = c16.astype(np.int32)
    files["raw16.rgba16_5x3.png"] = a16.astype(np.int32)
    # JPEG: a smooth photo-like 64 x 48 (4:2:0, quality 90, baseline)
    sm = Image.fromarray(grad, "RGB").resize((64, 48), Image.BICUBIC)
    sm.save(os.path.join(OUT, "photo_64x48.jpg"), quality=90)
    # a 4:4:4 progressive JPEG too
    sm.save(os.path.join(OUT, "prog444_64x48.jpg"), quality=95, subsampling=0, progressive=True)
    # GIF with two frames (the first one counts), no transparency
    f0 = Image.fromarray(grad[:24, :32], "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
    f1 = Image.fromarray(255 - grad[:24, :32], "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
    f0.save(os.path.join(OUT, "anim_32x24.gif"), save_all=True, append_images=[f1], duration=100, loop=0)
    # WebP lossless RGB and lossless RGBA
    Image.fromarray(grad[:24, :32], "RGB").save(os.path.join(OUT, "lossless_32x24.webp"), lossless=True)
    Image.fromarray(r[:16, :20], "RGBA").save(os.path.join(OUT, "alpha_20x16.webp"), lossless=True, exact=True)
    # BMP, 24-bit
    Image.fromarray(grad[:6, :8], "RGB").save(os.path.join(OUT, "tiny_8x6.bmp"))
    return files


def decode_ref(path):
    with Image.open(path) as im:
        im.seek(0)
        return np.array(omni_to_rgb(im), dtype=np.uint8)


def preprocess_cases(tensors):
    # (case, file, min_pixels, max_pixels)
    cases = [
        ("odd_default", "odd_3x5.png", MIN_PIXELS, MAX_PIXELS),          # -> 56 x 84, upscale
        ("grad_down", "grad_150x100.png", 28 * 28, 2400),                 # -> 28 x 56, max branch
        ("mixed", "mixed_60x45.png", MIN_PIXELS, MAX_PIXELS),             # -> 56 x 56: w down, h up
        ("updown", "updown_50x62.png", MIN_PIXELS, MAX_PIXELS),           # -> 56 x 56: w up, h down
        ("rgba_small", "rgba_40x30.png", 28 * 28, MAX_PIXELS),            # -> 28 x 28
        ("gray_small", "gray_30x20.png", 28 * 28, MAX_PIXELS),            # -> 28 x 28
    ]
    worst = 0.0
    for case, fname, mn, mx in cases:
        img = Image.fromarray(decode_ref(os.path.join(OUT, fname)), "RGB")
        w, h = img.size
        rh, rw = omni_smart_resize(h, w, FACTOR, mn, mx)
        assert hf_smart_resize(rh, rw, FACTOR, mn, mx) == (rh, rw)
        resized = img.resize((rw, rh))  # PIL default resample = BICUBIC
        proc = Qwen2VLImageProcessor(min_pixels=mn, max_pixels=mx)
        out = proc(images=resized, return_tensors="pt")
        pv = out["pixel_values"].numpy().astype(np.float32)
        thw = out["image_grid_thw"].numpy().astype(np.int64)
        assert tuple(thw[0]) == (1, rh // 14, rw // 14), (thw, rh, rw)
        # the processor's own resize must have been a no-op: compare with a plain patchify
        x = np.array(resized, np.float32).transpose(2, 0, 1)
        mean = np.array(proc.image_mean, np.float32)[:, None, None]
        std = np.array(proc.image_std, np.float32)[:, None, None]
        x = (x - mean * np.float32(255)) / (std * np.float32(255))
        gh, gw = rh // 14, rw // 14
        p = x.reshape(3, gh // 2, 2, 14, gw // 2, 2, 14).transpose(1, 4, 2, 5, 0, 3, 6)
        p = np.repeat(p[:, :, :, :, :, None], 2, axis=5).reshape(gh * gw, 1176)
        d = float(np.abs(p - pv).max())
        worst = max(worst, d)
        tensors[case + ".pixel_values"] = pv
        tensors[case + ".grid_thw"] = thw
        tensors[case + ".params"] = np.array([mn, mx], np.int64)
        tensors[case + ".resized"] = np.array(resized, np.uint8)
        print(f"{case}: {fname} {w}x{h} -> {rw}x{rh} grid {thw[0].tolist()} "
              f"(restated patchify vs processor max diff {d:g})")
        if case == "mixed":
            # float resize (torchvision bicubic, antialias, float input: no rounding, no clamping),
            # the video path of qwen-omni-utils per docs/qwen2_5_omni.md section 5.2
            from torchvision.transforms.v2 import functional as tvF
            t = torch.from_numpy(np.array(img, np.float32)).permute(2, 0, 1).contiguous()
            tf = tvF.resize(t, [rh, rw], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
            tensors["mixed.resized_f32"] = tf.numpy().astype(np.float32)
        if case == "grad_down":
            # transformers alone (torchvision resize on the raw image), same budget
            hf = Qwen2VLImageProcessor(min_pixels=mn, max_pixels=mx)(images=img, return_tensors="pt")
            hpv = hf["pixel_values"].numpy().astype(np.float32)
            tensors["grad_down_hf.pixel_values"] = hpv
            tensors["grad_down_hf.grid_thw"] = hf["image_grid_thw"].numpy().astype(np.int64)
            tensors["grad_down_hf.params"] = np.array([mn, mx], np.int64)
            print(f"grad_down_hf: torchvision path vs PIL path max abs {np.abs(hpv - pv).max():g} "
                  f"mean abs {np.abs(hpv - pv).mean():g}")
    assert worst < 1e-6, worst


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f != "README.md":
            os.remove(os.path.join(OUT, f))
    rs = np.random.RandomState(20261128)
    tensors = make_images(rs)
    for f in sorted(os.listdir(OUT)):
        if f.split(".")[-1] in ("png", "jpg", "gif", "webp", "bmp"):
            tensors["dec." + f] = decode_ref(os.path.join(OUT, f))
    preprocess_cases(tensors)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    # no metadata: safetensors writes its keys in hash order, which would break determinism
    save_file(tensors, os.path.join(OUT, "goldens.safetensors"))
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"pillow {Image.__version__}, numpy {np.__version__}")
    os.chmod(os.path.join(OUT, "goldens.safetensors"), 0o644)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
