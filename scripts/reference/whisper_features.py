#!/usr/bin/env python3
"""Write Whisper audio front-end fixtures under tests/fixtures/whisper_features/, computed with
Hugging Face transformers' WhisperFeatureExtractor (transformers 4.57.1) on the CPU.

    speech_16k.wav          3.7 s, mono, 16 kHz, 16-bit PCM: a chirp (100 Hz -> 4 kHz), two tones
                            (440 Hz, 3 kHz), seeded Gaussian noise, under a slow envelope
    tones_22050_stereo.wav  1.0 s, stereo, 22.05 kHz, 16-bit PCM, for the resampling path (tested
                            by its properties only: no resampler here is the one Whisper's
                            pipelines use). left = 0.4 sin(2π·1000 t) + 0.2 sin(2π·9500 t),
                            right = 0.4 sin(2π·1000 t) + 0.2 sin(2π·3000 t); their mean is
                            0.4 sin(1 kHz) + 0.1 sin(3 kHz) + 0.1 sin(9.5 kHz), the last above
                            16 kHz's Nyquist frequency, so a resampler must remove it
    formats/*.wav           0.05 s files written byte by byte here (not by a WAV library), one per
                            sample format the reader decodes, and a few it must refuse:
                              pcm8_mono.wav         8-bit unsigned PCM, 1 channel
                              pcm16_stereo.wav      16-bit PCM, 2 channels
                              pcm24_stereo.wav      24-bit PCM, 2 channels
                              pcm32_3ch.wav         32-bit PCM, 3 channels
                              float32_stereo.wav    32-bit IEEE float, 2 channels
                              ext_pcm24_mono.wav    WAVE_FORMAT_EXTENSIBLE, 24-bit PCM, 1 channel
                              ext_float32_4ch.wav   WAVE_FORMAT_EXTENSIBLE, 32-bit float, 4 channels
                              alaw.wav              A-law (format tag 6): unsupported
                              float64.wav           64-bit IEEE float: unsupported
                              ext_pcm20.wav         EXTENSIBLE, 20 valid bits in 24: unsupported
                              truncated.wav         16-bit PCM whose data chunk is cut short
    reference.safetensors   (all float32 unless noted)
        features_80         [80, HEAD]  WhisperFeatureExtractor()(speech)["input_features"][0],
                                        its first HEAD frames (the torch path, taken when torch is
                                        installed, as here)
        features_80_numpy   [80, HEAD]  the same from _np_extract_fbank_features (the path without
                                        torch; f64 inside, complex64 spectrum)
        tail_80             [1]         the value of every feature of frames HEAD..3000 (checked
                                        here: those frames see only the zero padding, so they are
                                        all the floor max - 8, scaled)
        features_128, features_128_numpy, tail_128   the same for feature_size=128 (large-v3)
        mel_filters_80      [201, 80]   float64, WhisperFeatureExtractor().mel_filters
                                        (mel_filter_bank(201, 80, 0, 8000, 16000, "slaney", "slaney"))
        mel_filters_128     [201, 128]  float64, the same with 128 filters
        mono_<format file>  [frames]    each readable formats/*.wav decoded and averaged over its
                                        channels: ints / 2^(bits-1) (8-bit: (u8 - 128) / 128),
                                        floats as stored; the mean in float64, then float32
    The features' HEAD is in the file's metadata (with the library versions). Reruns give the same
    tensors byte for byte; only the order of the metadata's keys may change (safetensors writes a
    hash map).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/whisper_features.py
"""
import os

# Never touch a model hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pathlib
import struct

import numpy as np
import safetensors
import torch
import transformers
from safetensors.numpy import save_file
from transformers import WhisperFeatureExtractor

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "whisper_features"

RATE = 16000
N_FRAMES = 3000

# ----------------------------------------------------------------------------- WAV writing

PCM, IEEE_FLOAT, ALAW, EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT: the format tag, then 00000000-0010-8000-00aa00389b71.
GUID_TAIL = bytes([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71])


def wav_bytes(tag, channels, rate, container_bits, data, valid_bits=None, sub_tag=None):
    """A RIFF/WAVE file: a `fmt ` chunk (16 bytes, or 40 for WAVE_FORMAT_EXTENSIBLE) and `data`."""
    block_align = channels * container_bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, container_bits)
    if tag == EXTENSIBLE:
        fmt += struct.pack("<HHI", 22, valid_bits or container_bits, 0) + struct.pack("<H", sub_tag) + GUID_TAIL
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def quantize(x, bits):
    """float in [-1, 1] -> signed integers of `bits` bits (rounded, clipped)."""
    full = 2 ** (bits - 1)
    return np.clip(np.round(x * full), -full, full - 1).astype(np.int64)


def int_data(ints, bits):
    """Interleaved little-endian integers of bits/8 bytes each (8-bit: unsigned, offset 128)."""
    if bits == 8:
        return (ints + 128).astype(np.uint8).tobytes()
    width = bits // 8
    return b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints.reshape(-1))


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ----------------------------------------------------------------------------- signals

def speech_like():
    """3.7 s at 16 kHz: chirp + two tones + noise under an envelope, in [-1, 1)."""
    n = int(3.7 * RATE)
    t = np.arange(n) / RATE
    f0, f1, dur = 100.0, 4000.0, n / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * dur) * t**2)  # linear chirp
    x = 0.3 * np.sin(phase) + 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)  # slow envelope, so frames differ in loudness
    x += 0.02 * np.random.default_rng(19).standard_normal(n)
    return x


def stereo_tones():
    n = 22050
    t = np.arange(n) / 22050
    tone = 0.4 * np.sin(2 * np.pi * 1000 * t)
    left = tone + 0.2 * np.sin(2 * np.pi * 9500 * t)
    right = tone + 0.2 * np.sin(2 * np.pi * 3000 * t)
    return np.stack([left, right], axis=1)


def format_signal(frames, channels, seed):
    """Distinct channels: a tone per channel plus noise, within [-0.9, 0.9]."""
    t = np.arange(frames) / RATE
    rng = np.random.default_rng(seed)
    cols = [0.5 * np.sin(2 * np.pi * (300 + 250 * c) * t + c) + 0.1 * rng.uniform(-1, 1, frames)
            for c in range(channels)]
    return np.stack(cols, axis=1)


# ----------------------------------------------------------------------------- features

def features(extractor, samples):
    out = extractor(samples, sampling_rate=RATE, return_tensors="np")["input_features"][0]
    assert out.shape == (extractor.feature_size, N_FRAMES) and out.dtype == np.float32, out.shape
    return out


def numpy_features(extractor, samples):
    padded = np.zeros(extractor.n_samples, dtype=np.float32)
    padded[: len(samples)] = samples[: extractor.n_samples]
    out = extractor._np_extract_fbank_features(padded[None, :], "cpu")[0].astype(np.float32)
    assert out.shape == (extractor.feature_size, N_FRAMES)
    return out


def head_and_tail(feats, head):
    tail = feats[:, head:]
    assert (tail == tail[0, 0]).all(), "frames past the head are not all the floor"
    return np.ascontiguousarray(feats[:, :head]), np.array([tail[0, 0]], dtype=np.float32)


def main():
    tensors, meta = {}, {}

    # The 16 kHz clip, and its features.
    ints = quantize(speech_like(), 16)
    write(OUT / "speech_16k.wav", wav_bytes(PCM, 1, RATE, 16, int_data(ints, 16)))
    samples = (ints / 32768.0).astype(np.float32)  # what the reader gives

    # Frames t >= first_silent see only padding: their window [160t - 200, 160t + 200) starts
    # past the clip. Keep a few more, rounded up to 16.
    first_silent = -(-(len(samples) + 200) // 160)
    head = -(-(first_silent + 4) // 16) * 16
    meta["head_frames"] = str(head)
    for mels in (80, 128):
        extractor = WhisperFeatureExtractor(feature_size=mels)
        assert extractor.mel_filters.dtype == np.float64
        tensors[f"mel_filters_{mels}"] = np.ascontiguousarray(extractor.mel_filters)
        torch_path = features(extractor, samples)
        numpy_path = numpy_features(extractor, samples)
        print(f"{mels} mels: torch vs numpy path max |d| = {np.abs(torch_path - numpy_path).max():.3e}")
        tensors[f"features_{mels}"], tensors[f"tail_{mels}"] = head_and_tail(torch_path, head)
        tensors[f"features_{mels}_numpy"], tensors[f"tail_{mels}_numpy"] = head_and_tail(numpy_path, head)

    # The stereo clip for resampling.
    stereo = quantize(stereo_tones(), 16)
    write(OUT / "tones_22050_stereo.wav", wav_bytes(PCM, 2, 22050, 16, int_data(stereo, 16)))

    # One file per sample format, and the mono signal each must decode to.
    frames = 800
    readable = {
        # name: (tag, channels, container bits, valid bits, sub-format tag, float?)
        "pcm8_mono": (PCM, 1, 8, None, None, False),
        "pcm16_stereo": (PCM, 2, 16, None, None, False),
        "pcm24_stereo": (PCM, 2, 24, None, None, False),
        "pcm32_3ch": (PCM, 3, 32, None, None, False),
        "float32_stereo": (IEEE_FLOAT, 2, 32, None, None, True),
        "ext_pcm24_mono": (EXTENSIBLE, 1, 24, 24, PCM, False),
        "ext_float32_4ch": (EXTENSIBLE, 4, 32, 32, IEEE_FLOAT, True),
    }
    for seed, (name, (tag, channels, bits, valid, sub, is_float)) in enumerate(readable.items()):
        signal = format_signal(frames, channels, seed)
        if is_float:
            values = signal.astype(np.float32)
            data = values.astype("<f4").tobytes()
            decoded = values.astype(np.float64)
        else:
            ints = quantize(signal, bits)
            data = int_data(ints, bits)
            decoded = ints / float(2 ** (bits - 1))
        write(OUT / "formats" / f"{name}.wav", wav_bytes(tag, channels, RATE, bits, data, valid, sub))
        tensors[f"mono_{name}"] = decoded.mean(axis=1).astype(np.float32)

    alaw = np.full(frames, 0xD5, dtype=np.uint8).tobytes()  # A-law "zero"
    write(OUT / "formats" / "alaw.wav", wav_bytes(ALAW, 1, RATE, 8, alaw))
    f64 = format_signal(frames, 1, 99).astype("<f8").tobytes()
    write(OUT / "formats" / "float64.wav", wav_bytes(IEEE_FLOAT, 1, RATE, 64, f64))
    ints20 = quantize(format_signal(frames, 1, 98), 20) * 16  # 20 valid bits, left-justified in 24
    write(OUT / "formats" / "ext_pcm20.wav", wav_bytes(EXTENSIBLE, 1, RATE, 24, int_data(ints20, 24), 20, PCM))
    full = wav_bytes(PCM, 1, RATE, 16, int_data(quantize(format_signal(frames, 1, 97), 16), 16))
    write(OUT / "formats" / "truncated.wav", full[: len(full) - 301])  # header says 1600 bytes

    meta.update(transformers=transformers.__version__, torch=torch.__version__, numpy=np.__version__,
                safetensors=safetensors.__version__)
    save_file(tensors, str(OUT / "reference.safetensors"), metadata=meta)
    (OUT / "reference.safetensors").chmod(0o644)  # save_file leaves 0600
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes), head frames {head}")


if __name__ == "__main__":
    main()
