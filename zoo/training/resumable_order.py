"""The training order of a folder data module, resumable mid-epoch.

An uninterrupted run and one killed mid-epoch and resumed from its last checkpoint must see the same
items, in the same order, with the same random crops. A plain DataLoader shuffles from, and draws its
workers' seed out of, the global random state when an epoch's iterator is made, which a resumed run
does at another moment; so nothing here reads that state: each epoch's permutation and each item's
crop seed come from (seed, epoch) alone, and the loader's state in every checkpoint says how many
batches of the epoch were done.

Under DDP Lightning shards the data with its own sampler; there a resume is exact at epoch ends.
"""
from __future__ import annotations

import random
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

# a prime step between epochs' seeds, so that (seed, epoch) pairs do not collide for small seeds
_EPOCH_STRIDE = 1_000_003


class ResumableShuffle(Sampler):
    """Yields (index, item_seed) for every item of a map-style dataset of `size` items: a new
    permutation each epoch, drawn from (seed, epoch) only. `start_at(epoch, items_done)` makes the
    next pass over that epoch begin after its first `items_done` items (a mid-epoch resume)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        self.epoch = epoch

    def start_at(self, epoch: int, items_done: int) -> None:
        """Begin the next pass over `epoch` after its first `items_done` items."""
        if items_done >= self.size:  # saved at the epoch's end: the next one starts afresh
            self.epoch = epoch + 1
            return
        # set here too: Lightning creates the resumed epoch's iterator before it calls set_epoch
        self.epoch, self._resume = epoch, (epoch, items_done)

    def __len__(self) -> int:
        return self.size  # Lightning's epoch length counts the items done before a resume too

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # a generator: the epoch is read at the first item, after Lightning's set_epoch
        generator = torch.Generator().manual_seed(self.seed + _EPOCH_STRIDE * self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        item_seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        start = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        yield from zip(order[start:], item_seeds[start:])


def item_rng(key):
    """A dataset key -> (index, the random generator for its crop): ResumableShuffle's (index, seed)
    gets its own generator; a plain index (validation, DDP) uses the global one."""
    if isinstance(key, tuple):
        return key[0], random.Random(key[1])
    return key, random  # the module's randint / random draw from the global generator


class ResumableLoader(DataLoader):
    """The training DataLoader over ResumableShuffle. Lightning keeps its `state_dict` (the order's seed,
    the epoch and how many of its batches were trained, as `position()` tells) in every checkpoint and
    hands it back to `load_state_dict` on resume, before the first batch is drawn."""

    def __init__(self, dataset, batch_size: int, seed: int, position, **loader_args):
        # the loader's own generator: its worker seed draw must not move the global random state
        super().__init__(dataset, batch_size=batch_size, sampler=ResumableShuffle(len(dataset), seed),
                         generator=torch.Generator().manual_seed(seed), **loader_args)
        self.position = position  # () -> (epoch, batches of it trained)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the order's seed, the epoch and its batches done."""
        epoch, batches_done = self.position()
        return {"seed": self.sampler.seed, "epoch": epoch, "batches_done": batches_done}

    def load_state_dict(self, state: dict) -> None:
        """Continue the order where the checkpoint left it."""
        self.sampler.seed = int(state["seed"])
        self.sampler.start_at(int(state["epoch"]), int(state["batches_done"]) * self.batch_size)


class ResumableOrderData:
    """Mixin for a LightningDataModule with a map-style `train_set`: `resumable_train_loader` builds its
    training DataLoader."""

    trainer = None  # LightningDataModule sets it

    def _position(self) -> tuple[int, int]:
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def resumable_train_loader(self, dataset, batch_size: int, **loader_args) -> DataLoader:
        """ResumableLoader on one process; under DDP, a shuffling DataLoader that Lightning shards."""
        drop_last = len(dataset) > batch_size
        if self.trainer is not None and self.trainer.world_size > 1:
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, **loader_args)
        # seed_everything (every recipe sets it) fixes torch's initial seed, so the order is the recipe's
        return ResumableLoader(dataset, batch_size, torch.initial_seed() % 2**31, self._position,
                               drop_last=drop_last, **loader_args)
