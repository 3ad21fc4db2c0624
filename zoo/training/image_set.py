"""Build a small offline image set from photos that ship with Debian and scikit-image.

Sources: the scenes of Debian's plasma-workspace-wallpapers package (photos and artwork up to
5120x2880; `apt-get install plasma-workspace-wallpapers`) and scikit-image's bundled colour photos.
Each source image gives several square crops at a few scales, resized to `size`. The held-out split
is by source image (never crops of one photo on both sides): a fixed list of names. Crop positions
are drawn from a generator seeded by the source's name, so a photo gives the same crops on every
machine, whichever other sources are installed.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from zoo.errors import TokenizerError, require_extra

WALLPAPER_DIR = Path("/usr/share/wallpapers")
# scikit-image's colour photographs (the rest are grayscale, synthetic or microscopy)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
# Source images kept out of training, chosen once by name.
HELD_OUT = ("wallpaper-Autumn", "wallpaper-Kite", "wallpaper-MilkyWay", "wallpaper-Path", "wallpaper-Volna",
            "skimage-astronaut", "skimage-coffee")


def source_images() -> dict[str, Path | str]:
    """name -> the largest file of each wallpaper scene, or a scikit-image loader name."""
    sources: dict[str, Path | str] = {}
    if WALLPAPER_DIR.is_dir():
        for scene in sorted(WALLPAPER_DIR.iterdir()):
            files = [p for p in (scene / "contents" / "images").glob("*") if p.suffix.lower() in {".jpg", ".png"}]
            if files:
                sources[f"wallpaper-{scene.name}"] = max(files, key=lambda p: p.stat().st_size)
    # the held-out split names scikit-image photos too: without them the set would silently be another one
    require_extra("skimage", "data", "zoo data images (its scikit-image photos)")
    sources |= {f"skimage-{n}": n for n in SKIMAGE_PHOTOS}
    return sources


def _load(source: Path | str) -> torch.Tensor:
    if isinstance(source, Path):
        from zoo.io import read_image

        return read_image(source)
    import skimage.data

    array = getattr(skimage.data, source)()
    return torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float() / 255


def build_image_set(out: str | Path, size: int = 256, crops_per_image: int = 8, seed: int = 0,
                    progress: bool = True) -> dict:
    """Write `out/train/*.png` and `out/val/*.png` and `out/manifest.json`; returns the manifest."""
    from torchvision.transforms.functional import resize
    from tqdm.auto import tqdm

    from zoo.io import write_image

    sources = source_images()
    if not any(name.startswith("wallpaper-") for name in sources) and progress:
        print(f"zoo data images: no Debian wallpapers in {WALLPAPER_DIR} (apt-get install plasma-workspace-wallpapers "
              f"adds more photos): using scikit-image's {len(SKIMAGE_PHOTOS)} photos only.")
    out = Path(out)
    manifest = {"size": size, "crops_per_image": crops_per_image, "seed": seed, "train": [], "val": []}
    for name, source in tqdm(sources.items(), desc="image set", disable=not progress):
        image = _load(source)
        split = "val" if name in HELD_OUT else "train"
        rng = random.Random(f"{seed}:{name}")  # per source: a photo's crops do not depend on which others exist
        short = min(image.shape[-2:])
        for i in range(crops_per_image):
            side = int(short * rng.uniform(0.35, 1.0))  # from close-up detail to the whole scene
            top = rng.randint(0, image.shape[-2] - side)
            left = rng.randint(0, image.shape[-1] - side)
            crop = resize(image[:, top:top + side, left:left + side], [size, size], antialias=True).clamp(0, 1)
            path = write_image(out / split / f"{name}-{i}.png", crop)
            manifest[split].append(str(path.relative_to(out)))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
