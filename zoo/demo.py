"""The main job: encode and decode a bundled photo and a bundled spoken sentence, print what happened."""
from __future__ import annotations

import time
from pathlib import Path

import torch

SAMPLES = Path(__file__).resolve().parent.parent / "hub" / "samples"
# The default tokenizers. Until trained weights ship in hub/, the demo builds these registered
# architectures with random weights and says so.
DEFAULT_IMAGE_MODEL = "onedpiece-s-256"
DEFAULT_SPEECH_MODEL = "speechtokenizer-hubert-avg"


def samples_dir() -> Path:
    import zoo.hub

    packaged = Path(zoo.hub.__file__).resolve().parent / "samples"
    return packaged if packaged.is_dir() else SAMPLES


def _get_model(name: str):
    import zoo

    entry = zoo.model_entry(name)
    if entry.embedded is not None:
        return zoo.load(name), "trained weights embedded in the package"
    torch.manual_seed(0)
    # an untrained k-means codebook is all zeros until its first training batch: use random rows instead
    overrides = {"kmeans_init": False} if getattr(entry.config, "kmeans_init", False) else {}
    return zoo.create(name, **overrides), "RANDOM weights (no trained default ships yet): the reconstruction is noise; this run shows the pipeline only"


def run_demo(out: Path) -> dict:
    from zoo.eval.audio_metrics import snr_db
    from zoo.eval.image_metrics import psnr
    from zoo.io import read_audio, read_image, write_audio, write_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = samples_dir()
    report = {}

    image_model, image_weights = _get_model(DEFAULT_IMAGE_MODEL)
    image = read_image(samples / "astronaut.jpg", size=image_model.image_size)[None]
    start = time.perf_counter()
    tokens = image_model.encode(image)
    recon = image_model.decode(tokens)
    seconds = time.perf_counter() - start
    write_image(out / "astronaut.recon.png", recon[0])
    report["image"] = {"model": DEFAULT_IMAGE_MODEL, "codes": tuple(tokens.codes.shape), "psnr_db": float(psnr(image, recon.clamp(0, 1)).mean())}
    print(f"image  {samples / 'astronaut.jpg'} ({image.shape[-1]}x{image.shape[-2]})")
    print(f"       model {DEFAULT_IMAGE_MODEL}: {image_weights}")
    print(f"       {tokens.codes.shape[-1]} tokens, codes {tuple(tokens.codes.shape)}, "
          f"{image_model.info()['bits_per_image']:.0f} bits per image; encode+decode {seconds:.2f} s")
    print(f"       reconstruction -> {out / 'astronaut.recon.png'}  PSNR {report['image']['psnr_db']:.2f} dB")

    codec, codec_weights = _get_model(DEFAULT_SPEECH_MODEL)
    wav, rate = read_audio(samples / "speech.flac", sample_rate=codec.sample_rate)
    wav = wav[None]
    start = time.perf_counter()
    tokens = codec.encode(wav)
    wav_hat = codec.decode(tokens)[..., : wav.shape[-1]]
    seconds = time.perf_counter() - start
    write_audio(out / "speech.recon.wav", wav_hat[0], codec.sample_rate)
    report["speech"] = {"model": DEFAULT_SPEECH_MODEL, "codes": tuple(tokens.codes.shape), "snr_db": snr_db(wav, wav_hat)}
    duration = wav.shape[-1] / rate
    print(f"speech {samples / 'speech.flac'} ({duration:.2f} s at {rate} Hz)")
    print(f"       model {DEFAULT_SPEECH_MODEL}: {codec_weights}")
    print(f"       codes {tuple(tokens.codes.shape)} (batch, quantizers, frames), "
          f"{codec.info()['bits_per_second']:.0f} bits/s; encode+decode {seconds:.2f} s "
          f"(real-time factor {seconds / duration:.2f})")
    print(f"       reconstruction -> {out / 'speech.recon.wav'}  SNR {report['speech']['snr_db']:.2f} dB")
    return report
