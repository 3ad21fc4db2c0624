"""The main job: encode and decode a bundled photo and a bundled spoken sentence with the embedded
default tokenizers (trained here, shipped in the package), write the reconstructions and print
what happened with the measured quality."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from zoo.hub.defaults import DEFAULT_IMAGE_MODEL, DEFAULT_SPEECH_MODEL

SAMPLES = Path(__file__).resolve().parent.parent / "hub" / "samples"


def samples_dir() -> Path:
    """The folder of bundled samples (the installed package's, else the source tree's)."""
    import zoo.hub

    packaged = Path(zoo.hub.__file__).resolve().parent / "samples"
    return packaged if packaged.is_dir() else SAMPLES


def run_image(out: Path, samples: Path) -> dict:
    """Encode and decode the bundled photo with the default image model; print and return what it did."""
    import zoo
    from zoo.eval.image_metrics import psnr, ssim
    from zoo.io import read_image, write_image

    model = zoo.load(DEFAULT_IMAGE_MODEL)
    image = read_image(samples / "astronaut.jpg", size=model.image_size)[None]
    start = time.perf_counter()
    tokens = model.encode(image)
    recon = model.decode(tokens).clamp(0, 1)
    seconds = time.perf_counter() - start
    write_image(out / "astronaut.png", image[0])
    write_image(out / "astronaut.recon.png", recon[0])
    size = image.shape[-1]
    print(f"image  {samples / 'astronaut.jpg'} -> {size}x{size} (held out of training)")
    print(f"       {DEFAULT_IMAGE_MODEL} (embedded weights): {tokens.codes.shape[-1]} tokens, "
          f"codes {tuple(tokens.codes.shape)}, {model.info()['bits_per_image']:.0f} bits; encode+decode {seconds:.2f} s")
    report = {"model": DEFAULT_IMAGE_MODEL, "codes": tuple(tokens.codes.shape), "by_tokens": {}}
    for k in sorted({1, 4, 16, tokens.codes.shape[-1]}):
        prefix = recon if k == tokens.codes.shape[-1] else model.decode(model.encode(image, num_tokens=k)).clamp(0, 1)
        if k != tokens.codes.shape[-1]:
            write_image(out / f"astronaut.recon-{k}.png", prefix[0])
        scores = {"psnr_db": float(psnr(image, prefix)), "ssim": float(ssim(image, prefix))}
        report["by_tokens"][k] = scores
        print(f"       {k:3d} tokens: PSNR {scores['psnr_db']:.2f} dB, SSIM {scores['ssim']:.3f}")
    print(f"       reconstructions -> {out}/astronaut.recon*.png")
    return report


def run_speech(out: Path, samples: Path) -> dict:
    """Encode and decode the bundled sentence with the default speech codec; print and return what it did."""
    import zoo
    from zoo.eval import audio_metrics as am
    from zoo.io import read_audio, write_audio

    codec = zoo.load(DEFAULT_SPEECH_MODEL)
    wav, rate = read_audio(samples / "speech.flac", sample_rate=codec.sample_rate)
    start = time.perf_counter()
    tokens = codec.encode(wav[None])
    wav_hat = codec.decode(tokens)[0, :, : wav.shape[-1]]
    seconds = time.perf_counter() - start
    write_audio(out / "speech.recon.wav", wav_hat, codec.sample_rate)
    duration = wav.shape[-1] / rate
    print(f"speech {samples / 'speech.flac'} ({duration:.2f} s at {rate} Hz; espeak-ng en-us, a training voice, in a sentence not trained on)")
    print(f"       {DEFAULT_SPEECH_MODEL} (embedded weights): codes {tuple(tokens.codes.shape)} (batch, quantizers, "
          f"frames), {codec.info()['bits_per_second']:.0f} bits/s; encode+decode {seconds:.2f} s "
          f"(real-time factor {seconds / duration:.2f})")
    scores = {"mel_distance": am.mel_distance(wav, wav_hat, rate), "snr_db": am.snr_db(wav, wav_hat)}
    for name, fn, package in (("stoi", am.stoi, "pystoi"), ("pesq_wb", am.pesq_wb, "pesq")):
        if importlib.util.find_spec(package):  # the eval extra; the base install has neither
            scores[name] = fn(wav, wav_hat, rate)
    print("       " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
          + ("" if "stoi" in scores else "  (STOI/PESQ: pip install 'tokenizer-zoo[eval]')"))
    print(f"       reconstruction -> {out / 'speech.recon.wav'}")
    return {"model": DEFAULT_SPEECH_MODEL, "codes": tuple(tokens.codes.shape), **scores}


def run_demo(out: Path) -> dict:
    """Run the image and the speech demo, writing their outputs under `out`; returns both reports."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = samples_dir()
    report = {"image": run_image(out, samples), "speech": run_speech(out, samples)}
    print("the model cards (zoo info NAME, or hub/weights/NAME/README.md) give each model's held-out metrics")
    return report
