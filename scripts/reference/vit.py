#!/usr/bin/env python3
"""Write Vision Transformer (ViT) reference fixtures under tests/fixtures/vit/, computed with
Hugging Face transformers (ViTForImageClassification, ViTImageProcessor) on the CPU.

    tests/fixtures/vit/image.png        45x27 RGB test picture (gradients, shapes, noise);
                                        needs a resize for every config (width shrinks,
                                        height grows, so both branches of Pillow's
                                        resampler are exercised)
    tests/fixtures/vit/image_exact.png  32x32 RGB picture (no resize for `small`; resized
                                        32 -> 30 for `odd`)
    tests/fixtures/vit/image_tall.png   36x90 RGB portrait; Pillow 13 resizes it vertical pass
                                        first (see vertical_first)
    tests/fixtures/vit/images.json      the decoded uint8 pixels of the PNGs ([H][W][3]),
                                        so PNG decoding can be checked on its own
    tests/fixtures/vit/<name>/
        config.json, model.safetensors  ViTForImageClassification.save_pretrained(dir,
                                        safe_serialization=True), random weights from a
                                        fixed seed (see init_weights)
        preprocessor_config.json        ViTImageProcessor.save_pretrained(dir)
        reference.json                  random pixel_values [2][C][S][S] -> logits [2][labels],
                                        embeddings / last_hidden_state of image 0
        preprocess.json                 ViTImageProcessor output for the PNGs, the uint8
                                        image after the PIL resize, the resampling
                                        coefficients, and the logits of each preprocessed
                                        image
    tests/fixtures/vit/mean/            mean pooling, no class token (transformers has no such
                                        model; see MeanPooledViT): model.safetensors written
                                        with safetensors.torch.save_file under the ViT names
                                        minus vit.embeddings.cls_token, position_embeddings
                                        [1, N, D]; config.json (a plain ViTConfig, for
                                        documentation); reference.json as above, with
                                        last_hidden_state_image0 = the N final-normed patch
                                        states. No preprocessor files.

How ViTImageProcessor (the slow, PIL/numpy one; transformers 4.57.1) turns a PNG into
pixel_values -- verified bit-exactly by this script against a numpy re-implementation
(see preprocess_like_hf / pil_resize_u8):
  1. PIL.Image.open(png) -> mode "RGB"; np.array(img) -> uint8 [H][W][3] (channels last).
  2. resize (always called when do_resize, even if the size already matches):
     PIL.Image.fromarray(uint8 array) -> img.resize((width, height), resample=BILINEAR (2),
     reducing_gap=None) -> np.array -> uint8 [S][S][3]. Same size -> Image.copy() (identity).
     Pillow's 8-bit two-pass convolution resampler (libImaging/Resample.c), see pil_resize_u8;
     Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
     many pixels as the width (vertical_first), older Pillow always horizontal first.
  3. rescale: uint8 -> float64, * rescale_factor (1/255 as a float64), -> float32.
  4. normalize: (x - float32(mean[c])) / float32(std[c]) in float32 (a true division).
  5. transpose HWC -> CHW, stack into [N][3][S][S] float32.

    tests/fixtures/vit/<name>_v5/       the same model (config, seed, weights) saved by transformers
                                        5.x with its new module names (`vit.layers.{i}.attention.q_proj`,
                                        `mlp.fc1`, ...: save_pretrained(dir, save_original_format=False)),
                                        reference.json and preprocess.json computed by 5.x (--transformers5;
                                        see transformers5.py)

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/vit.py            # all configs
    .cache/venv/bin/python scripts/reference/vit.py --only odd
    .cache/venv/bin/python scripts/reference/vit.py --only mean
and, for the transformers 5.x variants (small_v5, odd_v5), through scripts/setup-reference5.sh's overlay:
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/vit.py --transformers5
"""
import os

# Never touch a model hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import hashlib
import json
import pathlib
import shutil
import sys

import numpy as np
import PIL
import safetensors
import safetensors.torch
import torch
import transformers
from PIL import Image, ImageDraw
from safetensors import safe_open
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor
from transformers.image_utils import PILImageResampling

import transformers5 as v5

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "vit"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
SHAPES7 = ["circle", "square", "triangle", "star", "hexagon", "cross", "ring"]

# name -> (ViTConfig kwargs, ViTImageProcessor kwargs, weight seed, input seed)
CONFIGS = {
    "small": (
        dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
             num_attention_heads=4, num_hidden_layers=2, intermediate_size=128,
             layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True, initializer_range=0.2,
             id2label={i: n for i, n in enumerate(CIFAR10)}),
        dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
        1,
        101,
    ),
    "odd": (
        # head_dim 4, 5x5 patches of 6x6 pixels, intermediate not a multiple of hidden, a
        # different LayerNorm eps so a hard-coded 1e-12 is noticed.
        dict(image_size=30, patch_size=6, num_channels=3, hidden_size=48,
             num_attention_heads=12, num_hidden_layers=3, intermediate_size=136,
             layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, initializer_range=0.2,
             id2label={i: n for i, n in enumerate(SHAPES7)}),
        dict(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD),
        2,
        102,
    ),
}

IMAGE_PNG = "image.png"               # 45 wide x 27 high
IMAGE_EXACT_PNG = "image_exact.png"   # 32 x 32
IMAGE_TALL_PNG = "image_tall.png"     # 36 wide x 90 high
IMAGE_W, IMAGE_H = 45, 27
EXACT = 32
TALL_W, TALL_H = 36, 90
IMAGES = (IMAGE_PNG, IMAGE_EXACT_PNG, IMAGE_TALL_PNG)


# ----------------------------------------------------------------------------- helpers

def short_f32(x):
    """A Python float whose repr is the shortest decimal that round-trips float32(x), also
    when parsed as a double and then rounded to float32 (checked)."""
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite value {v}")
    s = float(str(v))
    if np.float32(s) != v:  # double rounding (never observed); fall back to the exact double
        s = float(v)
    assert np.float32(s) == v
    return s


def f32_list(a):
    """Nested lists of floats with exactly float32 precision, written compactly."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 0:
        return short_f32(a)
    if a.ndim == 1:
        return [short_f32(x) for x in a]
    return [f32_list(row) for row in a]


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def write_json(path, doc):
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    pathlib.Path(path).write_text(text + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- images

def make_image_png(path):
    """45x27 RGB: per-channel gradients, hard-edged shapes, a thin line and noise."""
    h, w = IMAGE_H, IMAGE_W
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * x / (w - 1)
    g = 255.0 * y / (h - 1)
    b = 127.5 + 127.5 * np.sin(x / 3.0) * np.cos(y / 4.0)
    arr = np.stack([r, g, b], axis=-1)
    noise = np.random.default_rng(7).integers(-12, 13, size=arr.shape)
    arr = np.clip(np.rint(arr) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, mode="RGB")
    d = ImageDraw.Draw(img)
    d.rectangle([4, 3, 14, 11], fill=(250, 20, 30))
    d.ellipse([20, 6, 34, 20], fill=(10, 40, 220), outline=(255, 255, 0))
    d.polygon([(36, 24), (44, 2), (41, 25)], fill=(0, 0, 0))
    d.line([(0, 26), (30, 14)], fill=(255, 255, 255), width=1)
    d.point([(2, 2), (3, 2), (2, 3), (42, 24)], fill=(0, 255, 0))
    img.save(path, format="PNG", optimize=True)


def make_image_exact_png(path):
    """32x32 RGB: a checkerboard with a diagonal gradient, a ring and a few bars."""
    n = EXACT
    y, x = np.mgrid[0:n, 0:n]
    checker = ((x // 4 + y // 4) % 2) * 60
    r = (x * 8 + checker) % 256
    g = (y * 8 + 255 - checker) % 256
    b = ((x + y) * 4) % 256
    arr = np.stack([r, g, b], axis=-1).astype(np.uint8)
    img = Image.fromarray(arr, mode="RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([6, 6, 25, 25], outline=(255, 128, 0), width=3)
    d.rectangle([0, 14, 31, 16], fill=(30, 30, 30))
    d.rectangle([27, 0, 29, 31], fill=(200, 255, 200))
    d.point([(0, 0), (31, 31)], fill=(255, 0, 255))
    img.save(path, format="PNG", optimize=True)


def make_image_tall_png(path):
    """36x90 RGB portrait: stripes, a radial gradient, shapes and noise. Resizing it to a
    square shrinks the height by more than twice as many pixels as the width, so Pillow 13
    runs the vertical pass first."""
    h, w = TALL_H, TALL_W
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rad = np.hypot(x - w / 2, y - h / 3)
    r = 255.0 * ((y // 5) % 2) * (1 - x / (2 * w)) + 30
    g = np.clip(255.0 - 6.0 * rad, 0, 255)
    b = 128.0 + 100.0 * np.sin(y / 2.5 + x / 7.0)
    arr = np.stack([r, g, b], axis=-1)
    noise = np.random.default_rng(11).integers(-20, 21, size=arr.shape)
    arr = np.clip(np.rint(arr) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, mode="RGB")
    d = ImageDraw.Draw(img)
    d.rectangle([3, 60, 20, 70], fill=(255, 255, 255))
    d.ellipse([10, 8, 30, 28], outline=(0, 0, 0), width=2)
    d.line([(0, 89), (35, 40)], fill=(255, 0, 0), width=2)
    d.polygon([(5, 80), (15, 75), (30, 88)], fill=(0, 90, 255))
    img.save(path, format="PNG", optimize=True)


def load_rgb(path):
    img = Image.open(path)
    img.load()
    assert img.mode == "RGB", (path, img.mode)
    return img


# -------------------------------------------------- Pillow's BILINEAR resampler, in numpy

PRECISION_BITS = 32 - 8 - 2  # libImaging/Resample.c


def pil_coeffs(in_size, out_size, support=1.0):
    """precompute_coeffs + normalize_coeffs_8bpc of libImaging/Resample.c (BILINEAR filter,
    box = (0, in_size)). Returns [(xmin, [int coefficients])] per output index."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)         # antialiasing: the filter widens when shrinking
    support = support * filterscale
    ss = 1.0 / filterscale
    out = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)        # C (int) truncates toward zero
        xmax = min(int(center + support + 0.5), in_size)
        ws = []
        for x in range(xmax - xmin):
            t = abs((x + xmin - center + 0.5) * ss)
            ws.append(1.0 - t if t < 1.0 else 0.0)
        ww = 0.0
        for wv in ws:
            ww += wv
        ks = []
        for wv in ws:
            if ww != 0.0:
                wv = wv / ww
            k = wv * (1 << PRECISION_BITS)
            ks.append(int(k - 0.5) if k < 0 else int(k + 0.5))
        out.append((xmin, ks))
    return out


def _resample_axis(arr, coeffs, axis):
    """One 8-bit pass along `axis` of an int array [H][W][C]: uint8 result per pass."""
    arr = np.moveaxis(arr.astype(np.int64), axis, 0)
    res = np.empty((len(coeffs),) + arr.shape[1:], dtype=np.int64)
    for i, (xmin, ks) in enumerate(coeffs):
        acc = np.full(arr.shape[1:], 1 << (PRECISION_BITS - 1), dtype=np.int64)
        for j, k in enumerate(ks):
            acc += arr[xmin + j] * k
        res[i] = np.clip(acc >> PRECISION_BITS, 0, 255)   # arithmetic shift = floor, clip8
    return np.moveaxis(res, 0, axis).astype(np.uint8)


def vertical_first(in_w, in_h, out_w, out_h):
    """Pillow >= 13 (ImagingResampleInner): run the vertical pass first when the height
    shrinks by more than twice as many pixels as the width does (older Pillow: never)."""
    dh, dw = in_h - out_h, in_w - out_w
    return dh > 0 and dh > 2 * dw


def pil_resize_u8(arr, out_w, out_h):
    """PIL.Image.fromarray(arr).resize((out_w, out_h), BILINEAR) for an RGB uint8 array.
    Two separable passes, each rounding to uint8; a pass is skipped when its size is
    unchanged; the order is given by vertical_first."""
    h, w, _ = arr.shape
    if (w, h) == (out_w, out_h):
        return arr.copy()
    passes = [(w, out_w, 1), (h, out_h, 0)]
    if vertical_first(w, h, out_w, out_h):
        passes.reverse()
    for n_in, n_out, axis in passes:
        if n_in != n_out:
            arr = _resample_axis(arr, pil_coeffs(n_in, n_out), axis=axis)
    return arr


def other_order(arr, out_w, out_h):
    """The same two passes in the order Pillow does NOT use (to show the order matters)."""
    h, w, _ = arr.shape
    passes = [(w, out_w, 1), (h, out_h, 0)]
    if not vertical_first(w, h, out_w, out_h):
        passes.reverse()
    for n_in, n_out, axis in passes:
        if n_in != n_out:
            arr = _resample_axis(arr, pil_coeffs(n_in, n_out), axis=axis)
    return arr


def check_resampler_against_pil():
    """Sweep of sizes (shrink, grow, mixed, 1 pixel) comparing pil_resize_u8 with Pillow."""
    rng = np.random.default_rng(0)
    cases = [(45, 27, 32, 32), (45, 27, 30, 30), (32, 32, 30, 30), (36, 90, 32, 32),
             (36, 90, 30, 30), (7, 5, 3, 11), (1, 9, 4, 1), (224, 100, 17, 224),
             (640, 480, 224, 224), (480, 640, 224, 224), (300, 800, 224, 224),
             (30, 30, 224, 224), (25, 73, 60, 1),
             (40, 40, 35, 30), (40, 40, 35, 29)]  # dh == 2*dw (horizontal first), 2*dw + 1
    for _ in range(150):
        cases.append(tuple(int(v) for v in rng.integers(1, 90, size=4)))
    for (w, h, ow, oh) in cases:
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        want = np.array(Image.fromarray(arr, mode="RGB").resize((ow, oh),
                                                                 resample=Image.BILINEAR))
        got = pil_resize_u8(arr, ow, oh)
        if not np.array_equal(want, got):
            sys.exit(f"numpy re-implementation of Pillow BILINEAR differs for {w}x{h} -> {ow}x{oh}: "
                     f"{int((want != got).sum())} values")
    return len(cases)


def preprocess_like_hf(arr_u8, size, rescale_factor, mean, std):
    """The documented ViTImageProcessor path, step by step (for the bit-exact check)."""
    resized = pil_resize_u8(arr_u8, size, size)
    x = (resized.astype(np.float64) * rescale_factor).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return resized, x.transpose(2, 0, 1)[None]


def coeff_doc(in_size, out_size):
    scale = in_size / out_size
    co = pil_coeffs(in_size, out_size)
    return {
        "in": in_size, "out": out_size, "scale": scale,
        "support": 1.0 * max(scale, 1.0),
        "xmin": [c[0] for c in co],
        "coeffs_q22": [c[1] for c in co],
    }


# ----------------------------------------------------------------------------- model

def make_config(kwargs):
    kw = dict(kwargs)
    kw.setdefault("hidden_dropout_prob", 0.0)
    kw.setdefault("attention_probs_dropout_prob", 0.0)
    kw["label2id"] = {v: k for k, v in kw["id2label"].items()}
    return ViTConfig(**kw)


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic random weights, independent of HF's _init_weights call order.

    Linear/conv weights ~ N(0, r) (r = initializer_range); cls_token and
    position_embeddings ~ N(0, 1) (what ViTEmbeddings.__init__'s torch.randn gives); biases
    ~ N(0, 0.05); LayerNorm weight 1 + N(0, 0.1), bias N(0, 0.1) -- so a parity test notices a
    missing bias or LayerNorm parameter.
    """
    r = model.config.initializer_range
    gen = torch.Generator().manual_seed(seed)
    # Drawn in the order of, and by the rule for, the 4.x checkpoint names (transformers 5.x
    # names the modules differently in memory; the weights stay the 4.57 fixture's).
    names = v5.checkpoint_names(model)
    for name, p in sorted(((names[n], p) for n, p in model.named_parameters()), key=lambda t: t[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if "layernorm" in name:  # layernorm_before / layernorm_after / vit.layernorm
            val = 1.0 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise
        elif name.endswith(("cls_token", "position_embeddings")):
            val = noise
        elif name.endswith(".bias"):
            val = 0.05 * noise
        else:
            val = noise * r
        p.copy_(val)


def build_model(config, seed):
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    init_weights(model, seed)
    return model.eval()


def make_processor(size, proc_kwargs):
    return ViTImageProcessor(
        do_resize=True, size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, **proc_kwargs)


def hf_resize(processor, arr, s):
    """The processor's own resize of a uint8 [H][W][3] image to [s][s][3]."""
    if v5.MAJOR < 5:
        return processor.resize(arr, size={"height": s, "width": s}, resample=PILImageResampling.BILINEAR)
    from transformers.image_utils import SizeDict  # 5.x: channels first, a SizeDict
    out = processor.resize(arr.transpose(2, 0, 1), SizeDict(height=s, width=s),
                           resample=PILImageResampling.BILINEAR)
    return np.asarray(out).transpose(1, 2, 0)


def margin(row):
    top2 = torch.topk(row, 2).values
    return float(top2[0] - top2[1])


# ----------------------------------------------------------------------------- main

def write_images(out_root):
    out_root.mkdir(parents=True, exist_ok=True)
    make_image_png(out_root / IMAGE_PNG)
    make_image_exact_png(out_root / IMAGE_EXACT_PNG)
    make_image_tall_png(out_root / IMAGE_TALL_PNG)
    doc = {"generator": "scripts/reference/vit.py", "versions": versions(),
           "layout": "pixels[y][x][c], uint8, RGB (np.array(PIL.Image.open(png)))", "images": {}}
    for fname in IMAGES:
        img = load_rgb(out_root / fname)
        arr = np.array(img)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
        doc["images"][fname] = {
            "sha256": sha256(out_root / fname), "bytes": (out_root / fname).stat().st_size,
            "mode": img.mode, "width": img.width, "height": img.height,
            "pixels": arr.tolist(),
        }
        print(f"{fname}: {img.width}x{img.height} {img.mode}, "
              f"{(out_root / fname).stat().st_size} bytes")
        assert (out_root / fname).stat().st_size < 20_000
    write_json(out_root / "images.json", doc)


def check_images(out_root):
    """The committed PNGs are the ones images.json describes."""
    doc = json.loads((out_root / "images.json").read_text())
    for fname in IMAGES:
        assert sha256(out_root / fname) == doc["images"][fname]["sha256"], fname


def write_fixture(name, out_root, threads, tf5=False):
    model_kwargs, proc_kwargs, seed, input_seed = CONFIGS[name]
    out_dir = out_root / v5.variant(name, tf5)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    config = make_config(model_kwargs)
    model = build_model(config, seed)
    if tf5:
        saved_by = v5.save(model, out_dir, native=True)
    else:
        model.save_pretrained(out_dir, safe_serialization=True)
    make_processor(config.image_size, proc_kwargs).save_pretrained(out_dir)

    # Everything below is computed from what was written to disk, loaded as a user would.
    loaded = ViTForImageClassification.from_pretrained(out_dir, attn_implementation="eager",
                                                       torch_dtype=torch.float32).eval()
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert list(sd0) == list(sd1)
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    model = loaded
    cfg = model.config
    processor = ViTImageProcessor.from_pretrained(out_dir)
    auto_proc = AutoImageProcessor.from_pretrained(out_dir)
    # The slow (PIL) processor; transformers 5.x calls it ViTImageProcessorPil (a subclass).
    assert isinstance(processor, ViTImageProcessor) and type(auto_proc) is type(processor), type(auto_proc)

    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()

    s, p, c, d = cfg.image_size, cfg.patch_size, cfg.num_channels, cfg.hidden_size
    assert s % p == 0
    num_patches = (s // p) ** 2

    # --- random pixel values -> logits
    gen = torch.Generator().manual_seed(input_seed)
    pixel_values = torch.rand((2, c, s, s), generator=gen, dtype=torch.float32) * 2 - 1
    with torch.inference_mode():
        out = model(pixel_values, output_hidden_states=True)
        logits = out.logits
        base = model.vit(pixel_values)
        # Independent check of what logits are: classifier(last_hidden_state[:, 0]).
        re_logits = model.classifier(base.last_hidden_state[:, 0])
        assert torch.equal(re_logits, logits)
        assert base.pooler_output is None
        sdpa = ViTForImageClassification.from_pretrained(out_dir, attn_implementation="sdpa",
                                                         torch_dtype=torch.float32).eval()
        sdpa_diff = float((sdpa(pixel_values).logits - logits).abs().max())
        batch_vs_alone = max(float((model(pixel_values[i:i + 1]).logits[0] - logits[i]).abs().max())
                             for i in range(2))
    assert logits.shape == (2, cfg.num_labels)
    assert base.last_hidden_state.shape == (2, num_patches + 1, d)

    doc = {
        "generator": "scripts/reference/vit.py",
        "name": name,
        "versions": versions(),
        "seed": seed,
        "input_seed": input_seed,
        "init": "random (see init_weights): linear/conv weights N(0, initializer_range), "
                "cls_token and position_embeddings N(0, 1), biases N(0, 0.05), "
                "LayerNorm weight 1+N(0, 0.1), bias N(0, 0.1)",
        "torch_threads": threads,
        "attn_implementation": "eager",
        "config": {
            "model_type": cfg.model_type,
            "architectures": cfg.architectures,
            "image_size": s,
            "patch_size": p,
            "num_channels": c,
            "num_patches": num_patches,
            "seq_len": num_patches + 1,
            "hidden_size": d,
            "num_attention_heads": cfg.num_attention_heads,
            "head_dim": d // cfg.num_attention_heads,
            "num_hidden_layers": cfg.num_hidden_layers,
            "intermediate_size": cfg.intermediate_size,
            "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps,
            "qkv_bias": cfg.qkv_bias,
            "initializer_range": cfg.initializer_range,
            "num_labels": cfg.num_labels,
            "id2label": {str(k): v for k, v in cfg.id2label.items()},
            "pooler_saved": any(n.startswith("vit.pooler") for n in tensor_names),
        },
        "files": {
            "model.safetensors": {
                "sha256": sha256(out_dir / "model.safetensors"),
                "metadata": st_meta,
                "dtypes": tensor_dtypes,
                "tensors": tensor_shapes,
            },
            "config.json": {"sha256": sha256(out_dir / "config.json")},
            "preprocessor_config.json": {"sha256": sha256(out_dir / "preprocessor_config.json")},
        },
        "forward": "logits = classifier(vit.layernorm(encoder(embeddings))[:, 0]); embeddings = "
                   "cat(cls_token, conv(pixel_values).flatten(2).transpose(1, 2)) + "
                   "position_embeddings; pre-LN blocks (layernorm_before -> attention -> +res, "
                   "layernorm_after -> intermediate -> output -> +res); no pooler",
        "pixel_values_init": f"torch.rand((2, {c}, {s}, {s}), generator=manual_seed({input_seed})) * 2 - 1",
        "pixel_values": f32_list(pixel_values.numpy()),
        "logits": f32_list(logits.numpy()),
        "argmax": logits.argmax(-1).tolist(),
        "top1_top2_margin": [short_f32(margin(row)) for row in logits],
        "embeddings_image0_doc": "hidden_states[0][0]: embeddings output (cls + patches + "
                                 "position embeddings), before the first layer",
        "embeddings_image0": f32_list(out.hidden_states[0][0].numpy()),
        "last_hidden_state_image0_doc": "ViTModel last_hidden_state[0], i.e. AFTER the final "
                                        "vit.layernorm",
        "last_hidden_state_image0": f32_list(base.last_hidden_state[0].numpy()),
        "sdpa_vs_eager_max_abs_logit_diff": sdpa_diff,
        "batch_vs_alone_max_abs_logit_diff": batch_vs_alone,
    }
    if tf5:
        doc.update(v5.record(model, out_dir, out_root / name, saved_by, doc, equal=["pixel_values"],
                             close=["logits", "embeddings_image0", "last_hidden_state_image0"]))
    write_json(out_dir / "reference.json", doc)

    # --- preprocessing parity
    mean, std = processor.image_mean, processor.image_std
    rescale_factor = processor.rescale_factor
    assert processor.resample == PILImageResampling.BILINEAR == 2
    pre = {
        "generator": "scripts/reference/vit.py",
        "name": name,
        "versions": versions(),
        "processor_class": type(processor).__name__,
        "processor": processor.to_dict(),
        "code_path": [
            "Image.open(png) (mode RGB) -> np.array(img): uint8 [H][W][3]",
            "to_pil_image: PIL.Image.fromarray(uint8 array) (no rescale: already uint8)",
            f"img.resize(({s}, {s}), resample=Image.BILINEAR (2), reducing_gap=None); "
            "same size -> img.copy(); box = whole image; mode RGB so no premultiplied alpha",
            "Pillow 8-bit resampler (libImaging/Resample.c, Pillow 13): two separable passes, "
            "each rounding/clamping to a uint8 image; a pass is skipped if its size is "
            "unchanged. Order (new in Pillow 13, ImagingResampleInner): vertical first iff "
            "dh = in_h - out_h > 0 and dh > 2 * (in_w - out_w), else horizontal first "
            "(Pillow <= 12: always horizontal first). Per axis: scale = in/out, filterscale = max(scale, 1) "
            "(antialias when shrinking), support = 1.0 * filterscale, center = (i + 0.5) * "
            "scale, xmin = max(trunc(center - support + 0.5), 0), xmax = min(trunc(center + "
            "support + 0.5), in), w_j = max(0, 1 - |(xmin + j - center + 0.5) / filterscale|), "
            "normalised by their (sequential, float64) sum, then k_j = trunc(w_j * 2^22 + 0.5) "
            "(int32); out = clamp((2^21 + sum_j pixel * k_j) >> 22, 0, 255)",
            "np.array(resized) -> uint8 [S][S][3] (`resized_uint8`)",
            "rescale: x.astype(float64) * rescale_factor (float64 1/255) -> astype(float32)",
            "normalize: (x - np.float32(mean[c])) / np.float32(std[c]), float32 arithmetic, "
            "a true division (not a multiply by 1/std)",
            "transpose to [3][S][S]; batch -> [N][3][S][S] float32",
        ],
        "resize_coefficients": {},
        "images": [],
    }
    n_alt_diff = {}
    for fname in IMAGES:
        img = load_rgb(out_root / fname)
        arr = np.array(img)
        pv = processor(images=img, return_tensors="pt")["pixel_values"]
        pv_np = processor(images=img)["pixel_values"][0]
        pv_auto = auto_proc(images=img, return_tensors="pt")["pixel_values"]
        assert pv.dtype == torch.float32 and pv.shape == (1, 3, s, s), (pv.dtype, pv.shape)
        assert torch.equal(pv, pv_auto) and np.array_equal(pv.numpy()[0], pv_np)
        # The intermediate uint8 image, exactly as transformers.image_transforms.resize makes it.
        resized_pil = np.array(Image.fromarray(arr).resize((s, s), resample=Image.BILINEAR,
                                                           reducing_gap=None))
        resized_hf = hf_resize(processor, arr, s)
        assert resized_hf.dtype == np.uint8 and np.array_equal(resized_hf, resized_pil)
        resized_np, pv_mine = preprocess_like_hf(arr, s, rescale_factor, mean, std)
        assert np.array_equal(resized_np, resized_pil), f"{name}/{fname}: resize re-impl differs"
        assert pv_mine.dtype == np.float32
        assert np.array_equal(pv_mine, pv.numpy()), f"{name}/{fname}: pipeline re-impl differs"
        # How many values a plausible-but-different formula would get wrong (reported only).
        x32 = (resized_np.astype(np.float64) * rescale_factor).astype(np.float32)
        alt1 = (x32 * (np.float32(1) / np.array(std, np.float32))
                - np.array(mean, np.float32) / np.array(std, np.float32)).transpose(2, 0, 1)
        alt2 = (((resized_np.astype(np.float32) / np.float32(255)) - np.array(mean, np.float32))
                / np.array(std, np.float32)).transpose(2, 0, 1)
        alt3 = ((resized_np.astype(np.float64) / 255 - np.array(mean, np.float64))
                / np.array(std, np.float64)).astype(np.float32).transpose(2, 0, 1)
        n_alt_diff[fname] = {
            "x*(1/std) - mean/std (float32)": int((alt1 != pv.numpy()[0]).sum()),
            "(u8 as f32 / 255f32 - mean) / std (float32)": int((alt2 != pv.numpy()[0]).sum()),
            "(u8 / 255 - mean) / std in float64, then f32": int((alt3 != pv.numpy()[0]).sum()),
        }
        if (img.width, img.height) == (s, s):
            order, other_differs = "none (same size: Image.copy())", False
        else:
            passes = []
            if img.width != s:
                passes.append("horizontal")
            if img.height != s:
                passes.append("vertical")
            if vertical_first(img.width, img.height, s, s):
                passes.reverse()
            order = " then ".join(passes)
            other_differs = not np.array_equal(other_order(arr, s, s), resized_pil)
        with torch.inference_mode():
            lg = model(pv).logits[0]
        entry = {
            "file": fname,
            "sha256": sha256(out_root / fname),
            "width": img.width,
            "height": img.height,
            "resize_changes_size": (img.width, img.height) != (s, s),
            "pass_order": order,
            "other_order_differs": other_differs,
            "resized_uint8_doc": "[H][W][3] uint8 after PIL resize (before rescale/normalize)",
            "resized_uint8": resized_pil.tolist(),
            "pixel_values": f32_list(pv.numpy()),
            "logits": f32_list(lg.numpy()),
            "argmax": int(lg.argmax()),
            "top1_top2_margin": short_f32(margin(lg)),
        }
        pre["images"].append(entry)
        if (img.width, img.height) != (s, s):
            pre["resize_coefficients"][fname] = {
                "doc": "Pillow BILINEAR 8-bit coefficients: output i reads input "
                       "xmin[i] + j with int weight coeffs_q22[i][j] (sum ~ 2^22)",
                "pass_order": order,
                "horizontal": coeff_doc(img.width, s) if img.width != s else None,
                "vertical": coeff_doc(img.height, s) if img.height != s else None,
            }
    pre["formula_variants_mismatch_count"] = n_alt_diff
    write_json(out_dir / "preprocess.json", pre)

    print(f"== {name} (seed {seed}, input seed {input_seed})")
    print(f"  tensors ({len(tensor_names)}), dtypes {tensor_dtypes}, pooler saved: "
          f"{doc['config']['pooler_saved']}")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    print(f"  logits {[[round(v, 4) for v in row] for row in logits.tolist()]}")
    print(f"  argmax {doc['argmax']} margins {doc['top1_top2_margin']}")
    print(f"  sdpa vs eager max|dlogit| {sdpa_diff:.3e}; batch vs alone {batch_vs_alone:.3e}")
    for e in pre["images"]:
        print(f"  {e['file']}: resize {e['width']}x{e['height']} -> {s}x{s} "
              f"(passes: {e['pass_order']}; other order differs: {e['other_order_differs']}), "
              f"argmax {e['argmax']} "
              f"margin {e['top1_top2_margin']:.4g}")
    print(f"  formula variants mismatching HF (values out of {3 * s * s}): {n_alt_diff}")
    total = 0
    for fpath in sorted(out_dir.iterdir()):
        total += fpath.stat().st_size
        print(f"  {fpath.name}: {fpath.stat().st_size} bytes")
    print(f"  total: {total} bytes")
    assert total < 1_000_000, total


# ------------------------------------------------- mean pooling (no class token), by hand

# Hugging Face has no mean-pooled ViT classifier (ViTForImageClassification always prepends
# a class token and classifies from it), so `mean` is built from transformers' own modules:
# the ViTPatchEmbeddings, ViTEncoder, final nn.LayerNorm and classifier of a
# ViTForImageClassification initialised exactly like the configs above (build_model), with
# the class token dropped and the position table cut to the N patch rows.
# name -> (ViTConfig kwargs, weight seed, input seed)
MEAN_CONFIGS = {
    "mean": (
        dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
             num_attention_heads=4, num_hidden_layers=2, intermediate_size=128,
             layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True, initializer_range=0.2,
             id2label={i: n for i, n in enumerate(SHAPES7[:5])}),
        3,
        103,
    ),
}


class MeanPooledViT(torch.nn.Module):
    """A ViT classifier without a class token, made of a ViTForImageClassification's modules.

    Submodules are named so that state_dict() gives the checkpoint names the Rust `weights: vit`
    scheme loads: vit.embeddings.patch_embeddings.projection.{weight,bias},
    vit.embeddings.position_embeddings [1, N, D], vit.encoder.layer.{i}.*, vit.layernorm.*,
    classifier.* -- and no vit.embeddings.cls_token.
    """

    def __init__(self, hf):
        super().__init__()
        src = hf.vit.embeddings
        self.vit = torch.nn.Module()
        self.vit.embeddings = torch.nn.Module()
        self.vit.embeddings.patch_embeddings = src.patch_embeddings
        # Row 0 of HF's table belongs to the class token; the patches use rows 1..=N.
        self.vit.embeddings.position_embeddings = torch.nn.Parameter(
            src.position_embeddings.detach()[:, 1:].clone())
        self.vit.encoder = hf.vit.encoder
        self.vit.layernorm = hf.vit.layernorm
        self.classifier = hf.classifier

    def embed(self, pixel_values):
        e = self.vit.embeddings
        return e.patch_embeddings(pixel_values) + e.position_embeddings

    def hidden(self, pixel_values):
        """[B, N, D] final-normed patch states."""
        x = self.vit.encoder(self.embed(pixel_values)).last_hidden_state
        return self.vit.layernorm(x)

    def forward(self, pixel_values):
        hidden = self.hidden(pixel_values)
        return self.classifier(hidden.mean(dim=1)), hidden


def check_cls_composition(hf, pixel_values):
    """The modules, composed by hand WITH the class token, give HF's own logits bit for bit --
    so MeanPooledViT calls them the way ViTModel does."""
    e = hf.vit.embeddings
    b = pixel_values.shape[0]
    x = torch.cat((e.cls_token.expand(b, -1, -1), e.patch_embeddings(pixel_values)), dim=1)
    x = hf.vit.layernorm(hf.vit.encoder(x + e.position_embeddings).last_hidden_state)
    by_hand = hf.classifier(x[:, 0])
    return torch.equal(by_hand, hf(pixel_values).logits)


def write_mean_fixture(name, out_root, threads):
    model_kwargs, seed, input_seed = MEAN_CONFIGS[name]
    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    config = make_config(model_kwargs)
    hf = build_model(config, seed)
    hf.set_attn_implementation("eager")
    s, p, c, d = config.image_size, config.patch_size, config.num_channels, config.hidden_size
    assert s % p == 0
    num_patches = (s // p) ** 2

    gen = torch.Generator().manual_seed(input_seed)
    pixel_values = torch.rand((2, c, s, s), generator=gen, dtype=torch.float32) * 2 - 1
    with torch.inference_mode():
        assert check_cls_composition(hf, pixel_values)

    built = MeanPooledViT(hf).eval()
    state = {k: v.detach().contiguous().clone() for k, v in built.state_dict().items()}
    assert "vit.embeddings.cls_token" not in state
    assert list(state["vit.embeddings.position_embeddings"].shape) == [1, num_patches, d]
    assert set(state) == {k for k in hf.state_dict() if k != "vit.embeddings.cls_token"}
    safetensors.torch.save_file(state, str(out_dir / "model.safetensors"),
                                metadata={"format": "pt"})
    config.architectures = ["ViTForImageClassification"]
    config.save_pretrained(out_dir)

    # Everything below is computed from what was written to disk: the checkpoint loaded
    # (strictly) into the same modules of a differently initialised model.
    torch.manual_seed(seed + 1000)
    fresh = ViTForImageClassification(ViTConfig.from_pretrained(out_dir)).eval()
    fresh.set_attn_implementation("eager")
    model = MeanPooledViT(fresh).eval()
    loaded = safetensors.torch.load_file(str(out_dir / "model.safetensors"))
    model.load_state_dict(loaded, strict=True)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k

    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()

    with torch.inference_mode():
        embeddings = model.embed(pixel_values)
        logits, hidden = model(pixel_values)
        # Independent check of what logits are: classifier(mean of the patch rows).
        re_logits = model.classifier(hidden.sum(dim=1) / num_patches)
        mean_vs_sum_diff = float((re_logits - logits).abs().max())
        assert mean_vs_sum_diff < 1e-5, mean_vs_sum_diff
        attn = fresh.vit.encoder.layer[0].attention.attention
        assert attn.config._attn_implementation == "eager"
        fresh.set_attn_implementation("sdpa")
        assert attn.config._attn_implementation == "sdpa"
        sdpa_diff = float((model(pixel_values)[0] - logits).abs().max())
        fresh.set_attn_implementation("eager")
        assert torch.equal(model(pixel_values)[0], logits)
        batch_vs_alone = max(float((model(pixel_values[i:i + 1])[0][0] - logits[i]).abs().max())
                             for i in range(2))
    assert logits.shape == (2, config.num_labels)
    assert hidden.shape == (2, num_patches, d)

    doc = {
        "generator": "scripts/reference/vit.py",
        "name": name,
        "versions": versions(),
        "seed": seed,
        "input_seed": input_seed,
        "init": "random (see init_weights) on a ViTForImageClassification: linear/conv weights "
                "N(0, initializer_range), cls_token and position_embeddings N(0, 1), biases "
                "N(0, 0.05), LayerNorm weight 1+N(0, 0.1), bias N(0, 0.1); then cls_token "
                "dropped and position_embeddings[:, 1:] kept (the N patch rows)",
        "torch_threads": threads,
        "attn_implementation": "eager",
        "pooling": "mean",
        "hf_cls_composition_check": "the same modules composed by hand with the class token "
                                    "give ViTForImageClassification's logits bit for bit",
        "config": {
            "model_type": config.model_type,
            "architectures": config.architectures,
            "image_size": s,
            "patch_size": p,
            "num_channels": c,
            "num_patches": num_patches,
            "seq_len": num_patches,
            "hidden_size": d,
            "num_attention_heads": config.num_attention_heads,
            "head_dim": d // config.num_attention_heads,
            "num_hidden_layers": config.num_hidden_layers,
            "intermediate_size": config.intermediate_size,
            "hidden_act": config.hidden_act,
            "layer_norm_eps": config.layer_norm_eps,
            "qkv_bias": config.qkv_bias,
            "initializer_range": config.initializer_range,
            "num_labels": config.num_labels,
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "pooler_saved": False,
            "cls_token_saved": "vit.embeddings.cls_token" in tensor_names,
        },
        "config_json_note": "config.json is a plain ViTConfig for documentation; transformers "
                            "cannot load this checkpoint (no cls_token, N position rows)",
        "files": {
            "model.safetensors": {
                "sha256": sha256(out_dir / "model.safetensors"),
                "writer": "safetensors.torch.save_file",
                "metadata": st_meta,
                "dtypes": tensor_dtypes,
                "tensors": tensor_shapes,
            },
            "config.json": {"sha256": sha256(out_dir / "config.json")},
        },
        "forward": "x = vit.embeddings.patch_embeddings(pixel_values) (conv, flatten(2), "
                   "transpose(1, 2)) + vit.embeddings.position_embeddings [1, N, D]; no class "
                   "token; x = vit.encoder(x).last_hidden_state (HF ViTEncoder, pre-LN blocks); "
                   "x = vit.layernorm(x); logits = classifier(x.mean(dim=1))",
        "pixel_values_init": f"torch.rand((2, {c}, {s}, {s}), generator=manual_seed({input_seed})) * 2 - 1",
        "pixel_values": f32_list(pixel_values.numpy()),
        "logits": f32_list(logits.numpy()),
        "argmax": logits.argmax(-1).tolist(),
        "top1_top2_margin": [short_f32(margin(row)) for row in logits],
        "embeddings_image0_doc": "patch embeddings + position embeddings of image 0 (N rows, "
                                 "no class token), before the first layer",
        "embeddings_image0": f32_list(embeddings[0].numpy()),
        "last_hidden_state_image0_doc": "the N patch states of image 0 AFTER the final "
                                        "vit.layernorm (what the mean is taken over)",
        "last_hidden_state_image0": f32_list(hidden[0].numpy()),
        "sdpa_vs_eager_max_abs_logit_diff": sdpa_diff,
        "batch_vs_alone_max_abs_logit_diff": batch_vs_alone,
        "mean_vs_sum_over_n_max_abs_logit_diff": mean_vs_sum_diff,
    }
    write_json(out_dir / "reference.json", doc)

    print(f"== {name} (mean pooling, no class token; seed {seed}, input seed {input_seed})")
    print(f"  tensors ({len(tensor_names)}), dtypes {tensor_dtypes}")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    print(f"  logits {[[round(v, 4) for v in row] for row in logits.tolist()]}")
    print(f"  argmax {doc['argmax']} margins {doc['top1_top2_margin']}")
    print(f"  sdpa vs eager max|dlogit| {sdpa_diff:.3e}; batch vs alone {batch_vs_alone:.3e}")
    total = 0
    for fpath in sorted(out_dir.iterdir()):
        total += fpath.stat().st_size
        print(f"  {fpath.name}: {fpath.stat().st_size} bytes")
    print(f"  total: {total} bytes")
    assert total < 1_000_000, total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--only", action="append", choices=sorted(CONFIGS) + sorted(MEAN_CONFIGS))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives the most reproducible numbers)")
    v5.add_flag(ap)
    args = ap.parse_args()
    v5.require(args.transformers5)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()

    out_root = pathlib.Path(args.out)
    n = check_resampler_against_pil()
    print(f"numpy re-implementation of Pillow {PIL.__version__} BILINEAR matches on {n} size pairs")
    if args.transformers5:
        # The pictures are the 4.57 run's (shared by every variant): read, not rewritten. The
        # mean-pooled checkpoint is written by hand, not by save_pretrained: no _v5 of it.
        check_images(out_root)
        for name in args.only or list(CONFIGS):
            if name in MEAN_CONFIGS:
                sys.exit(f"{name}: no transformers 5.x variant (safetensors.save_file, not save_pretrained)")
            write_fixture(name, out_root, args.threads, tf5=True)
        return
    write_images(out_root)
    for name in args.only or list(CONFIGS) + list(MEAN_CONFIGS):
        if name in MEAN_CONFIGS:
            write_mean_fixture(name, out_root, args.threads)
        else:
            write_fixture(name, out_root, args.threads)


if __name__ == "__main__":
    main()
