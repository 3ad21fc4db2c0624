"""Image-folder data for tokenizer training: random crops for training, center crops for
validation. Every image file under the folder (recursively) is used; images whose shorter side
is below the crop size are first resized up (bicubic) so that the crop fits. A training folder that
holds a held-out folder (`val/`, `test/`) or the validation folder is refused."""
from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from zoo.errors import TokenizerError
from zoo.io import IMAGE_SUFFIXES
from zoo.training.resumable_order import ResumableOrderData


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted; a clear error when there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TokenizerError(f"image folder {folder} does not exist or is not a folder.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TokenizerError(
            f"image folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively); "
            "point the data at a folder of images."
        )
    return files


class ImageCrops(Dataset):
    """float (3, crop_size, crop_size) in [0, 1] per file: a random crop (optionally flipped) when
    `random_crop`, else the center crop. `resize_to`: first resize the shorter side to this size."""

    def __init__(self, files: list[Path], crop_size: int, random_crop: bool, resize_to: int | None = None,
                 horizontal_flip: bool = False):
        self.files, self.crop_size, self.random_crop = list(files), crop_size, random_crop
        self.resize_to, self.horizontal_flip = resize_to, horizontal_flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> torch.Tensor:
        """key: an index, or ResumableShuffle's (index, crop seed)."""
        from zoo.io import read_image
        from zoo.training.resumable_order import item_rng

        index, rng = item_rng(key)
        return crop_image(read_image(self.files[index]), self.crop_size, self.random_crop, self.resize_to,
                          self.horizontal_flip, rng)


def crop_image(x: torch.Tensor, crop_size: int, random_crop: bool, resize_to: int | None = None,
               horizontal_flip: bool = False, rng=random) -> torch.Tensor:
    """(3, H, W) -> (3, crop_size, crop_size): see ImageCrops. rng: what draws the crop (a random.Random)."""
    from torchvision.transforms.functional import center_crop, crop, hflip, resize

    from zoo.io import _bicubic

    shorter = resize_to if resize_to is not None else max(crop_size, min(x.shape[-2:]))
    if shorter != min(x.shape[-2:]):
        x = resize(x, shorter, interpolation=_bicubic(), antialias=True).clamp_(0, 1)
    h, w = x.shape[-2:]
    if h < crop_size or w < crop_size:
        raise TokenizerError(f"resize_to={resize_to} is smaller than crop_size={crop_size}.")
    if random_crop:
        top, left = rng.randint(0, h - crop_size), rng.randint(0, w - crop_size)
        x = crop(x, top, left, crop_size, crop_size)
        if horizontal_flip and rng.random() < 0.5:
            x = hflip(x)
    else:
        x = center_crop(x, [crop_size, crop_size])
    return x.contiguous()


class ImageFolderData(ResumableOrderData, LightningDataModule):
    """train_dir: folder of training images. val_dir: folder of validation images; when None,
    validation uses center crops of the first `num_val_images` training images (0: no validation).
    The training order resumes mid-epoch (zoo.training.resumable_order)."""

    def __init__(self, train_dir: str, val_dir: str | None = None, crop_size: int = 256,
                 resize_to: int | None = None, batch_size: int = 8, val_batch_size: int | None = None,
                 num_workers: int = 0, horizontal_flip: bool = True, num_val_images: int = 16,
                 repeat: int = 1):
        super().__init__()
        self.train_dir, self.val_dir, self.crop_size, self.resize_to = train_dir, val_dir, crop_size, resize_to
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.horizontal_flip, self.num_val_images = num_workers, horizontal_flip, num_val_images
        self.repeat = repeat  # list each training file this many times per epoch (tiny folders)

    def setup(self, stage: str | None = None) -> None:
        from zoo.training.common import check_held_out

        check_held_out(self.train_dir, self.val_dir)
        train_files = list_image_files(self.train_dir)
        self.train_set = ImageCrops(train_files * self.repeat, self.crop_size, True, self.resize_to, self.horizontal_flip)
        val_files = list_image_files(self.val_dir) if self.val_dir is not None else train_files[: self.num_val_images]
        self.val_set = ImageCrops(val_files, self.crop_size, False, self.resize_to) if val_files else None

    def train_dataloader(self) -> DataLoader:
        return self.resumable_train_loader(self.train_set, self.batch_size, num_workers=self.num_workers,
                                           persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers)


def _shard_image(sample, **crop) -> torch.Tensor:
    from zoo.training.shards import decode_image, pick

    return crop_image(decode_image(pick(sample, {s.lstrip(".") for s in IMAGE_SUFFIXES}, "image")[1]), **crop)


class ImageShardData(LightningDataModule):
    """Images streamed from WebDataset-style tar shards (zoo.training.shards): every sample's
    first image member (.jpg, .png, ...), cropped as ImageFolderData crops. train_shards /
    val_shards: tar names, a glob or a '{000..099}' pattern; validation reads its shards once, in
    order. Each rank and loader worker reads its own share of the shards."""

    def __init__(self, train_shards: str | list[str], val_shards: str | list[str] | None = None, crop_size: int = 256,
                 resize_to: int | None = None, batch_size: int = 8, val_batch_size: int | None = None,
                 num_workers: int = 0, horizontal_flip: bool = True, shuffle_buffer: int = 1000, seed: int = 0):
        super().__init__()
        self.train_shards, self.val_shards, self.crop_size, self.resize_to = train_shards, val_shards, crop_size, resize_to
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.horizontal_flip = num_workers, horizontal_flip
        self.shuffle_buffer, self.seed = shuffle_buffer, seed

    def _stream(self, shards, train: bool):
        from zoo.training.shards import MappedStream, ShardStream

        decode = partial(_shard_image, crop_size=self.crop_size, random_crop=train, resize_to=self.resize_to,
                         horizontal_flip=train and self.horizontal_flip)
        return MappedStream(ShardStream(shards, repeat=train, shuffle_buffer=self.shuffle_buffer, seed=self.seed), decode)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._stream(self.train_shards, True)
        self.val_set = self._stream(self.val_shards, False) if self.val_shards else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.val_batch_size, num_workers=self.num_workers)
