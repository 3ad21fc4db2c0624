"""`zoo fit` / `zoo validate`: LightningCLI over the recipes in recipes/.

A recipe names a LightningModule and a LightningDataModule by class path; every field can be
overridden on the command line (`--trainer.max_steps 10`, `--model.init_args.lr 1e-4`).

Every `zoo fit` leaves its run in one folder, printed when it starts and when it ends:

    runs/<recipe>/version_<n>/          (under --trainer.default_root_dir when that is given)
      checkpoints/last.ckpt             the newest state: written at each validation, at the end of each
                                        epoch and of training, every --save_every_n_steps, and on Ctrl-C
      checkpoints/best.ckpt             the best by the regime's validation metric (val/psnr for images,
                                        val/mel for codecs), when the run validates
      metrics.csv, hparams.yaml         the losses and validation metrics (CSVLogger), plus TensorBoard
                                        events when tensorboard is installed
      config.yaml                       the full configuration of the run

<recipe> is the config's path under recipes/ with '/' -> '-' (recipes/onedpiece/tiny.yaml ->
onedpiece-tiny). `--ckpt_path last` resumes from the newest run of the same recipe that has a
last.ckpt, in a new version folder (an earlier run's files are never written over). A recipe's own
`trainer.logger` or `trainer.enable_checkpointing: false` is respected.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar as BaseProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from zoo.errors import TokenizerError

RUNS = "runs"
LAST, BEST = "last.ckpt", "best.ckpt"
# Lightning's notes that say nothing about a zoo run: the weight average and frozen teachers are in eval
# mode on purpose, the recipes' data fit in the main process, and a resumed run gets a new folder
QUIET = ("Found .* module\\(s\\) in eval mode", "The '.*dataloader' does not have many workers",
         "The dirpath has changed from", "Checkpoint directory .* exists and is not empty",
         "LightningCLI's args parameter is intended")  # main() passes its arguments on purpose


def recipe_name(config_paths) -> str:
    """The run name of a recipe: its path under recipes/ with '/' -> '-' and no suffix
    (recipes/onedpiece/tiny.yaml -> onedpiece-tiny); a config elsewhere gives its file name."""
    if not config_paths:
        return "run"
    path = Path(str(getattr(config_paths[0], "absolute", config_paths[0]))).with_suffix("")
    parts = path.parts
    if "recipes" in parts:
        index = len(parts) - 1 - parts[::-1].index("recipes")
        if index < len(parts) - 1:
            return "-".join(parts[index + 1:])
    return path.name


def versions(folder: Path) -> list[int]:
    """The n of every version_<n> folder in `folder`, sorted."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name)))


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt, always the newest state of the run: written after each validation, at
    the end of each epoch and of training, every `every_n_steps` optimizer steps, and on Ctrl-C
    (one process). Written to a side file first and moved into place, so an interrupted save never
    leaves a broken last.ckpt."""

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        super().__init__(dirpath=dirpath, filename="last", save_top_k=0, save_last=False, enable_version_counter=False)
        self.every_n_steps = every_n_steps
        self._saved_at = -1
        self._periodic_at = 0

    def write(self, trainer) -> None:
        """Save the trainer's state as last.ckpt (once per optimizer step)."""
        if trainer.sanity_checking or trainer.global_step == self._saved_at or trainer.global_step == 0:
            return
        path = Path(self.dirpath) / LAST
        part = path.with_name(LAST + ".part")
        try:
            trainer.save_checkpoint(str(part), weights_only=False)
        except OSError as e:  # a full disk, a quota, a folder gone: the previous last.ckpt is untouched
            part.unlink(missing_ok=True)
            kept = f"{path} still holds the last good state" if path.is_file() else "no earlier checkpoint exists"
            raise TokenizerError(f"writing the checkpoint of step {trainer.global_step} to {part} failed "
                                 f"({type(e).__name__}: {e}); {kept}: free the space and resume with --ckpt_path last.") from None
        if trainer.is_global_zero:
            os.replace(part, path)
        self.last_model_path, self._saved_at = str(path), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step >= self._periodic_at + self.every_n_steps:
            self._periodic_at = trainer.global_step
            self.write(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.write(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1:
            self.write(trainer)


class BestCheckpoint(ModelCheckpoint):
    """checkpoints/best.ckpt: the state with the best `monitor` seen at a validation (`mode` 'max' or
    'min'); nothing while the run has not validated."""

    def __init__(self, dirpath: str, monitor: str, mode: str):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                         save_last=False, auto_insert_metric_name=False, enable_version_counter=False)

    def _ready(self, trainer) -> bool:
        return self.monitor in trainer.callback_metrics

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if self._ready(trainer):
            super().on_train_batch_end(trainer, *args, **kwargs)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._ready(trainer):
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._ready(trainer):
            super().on_train_epoch_end(trainer, pl_module)


def shown(path) -> str:
    """A path as the user typed it: relative to the current folder when it lies inside it."""
    for where, here in ((os.path.abspath(path), os.getcwd()), (os.path.realpath(path), os.path.realpath(os.getcwd()))):
        try:  # as written first (a recipes/ symlink stays recipes/), then with links resolved
            return str(Path(where).relative_to(here))
        except ValueError:
            pass
    return str(path)


class RunReport(Callback):
    """Says where the run keeps its files when fitting starts, and what it left there at the end."""

    def __init__(self, folder: Path, recipe: str, recipe_file: str | None, resumed_from: str | None):
        self.folder, self.recipe, self.recipe_file, self.resumed_from = folder, recipe, recipe_file, resumed_from
        self.facts: dict[str, str] = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Record the recipe, the data and the run folder in the checkpoint (`zoo export` puts them in the card)."""
        checkpoint["zoo_run"] = dict(self.facts)

    @staticmethod
    def _files(trainer) -> tuple[LastCheckpoint | None, BestCheckpoint | None, str | None]:
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        best = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint)), None)
        log = next((str(Path(lg.log_dir) / "metrics.csv") for lg in trainer.loggers
                    if type(lg).__name__ == "CSVLogger"), None)
        return last, best, log

    def on_fit_start(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        folders = [f"{key} {getattr(data, key)}" for key in ("train_dir", "val_dir", "train_shards", "val_shards")
                   if getattr(data, key, None) not in (None, "", [])]
        self.facts = {"recipe": self.recipe_file or "none (options on the command line)",
                      "data": ", ".join(folders) or type(data).__name__ if data is not None else "not recorded",
                      "run folder": str(self.folder)}
        self._say_start(trainer)

    @rank_zero_only
    def _say_start(self, trainer) -> None:
        last, best, log = self._files(trainer)
        lines = [f"zoo fit: {self.recipe} -> {shown(self.folder)}/"]
        if self.resumed_from:
            lines.append(f"  resuming from {shown(self.resumed_from)}")
        if last is not None:
            by = (f", {shown(Path(best.dirpath) / BEST)} (the best {best.monitor} at a validation, "
                  f"{'higher' if best.mode == 'max' else 'lower'} is better)" if best is not None else "")
            lines.append(f"  checkpoints: {shown(Path(last.dirpath) / LAST)}{by}")
        else:
            lines.append("  checkpoints: none (enable_checkpointing is false)")
        lines.append(f"  log: {shown(log)}" if log else "  log: the recipe's own logger" if trainer.loggers
                     else "  log: none (logger is false)")
        print("\n".join(lines), flush=True)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        last, best, log = self._files(trainer)
        lines = [f"zoo fit: done at step {trainer.global_step} -> {shown(self.folder)}/"]
        if last is not None and last.last_model_path:
            lines.append(f"  last checkpoint: {shown(last.last_model_path)}")
        if best is not None and best.best_model_path:
            lines.append(f"  best checkpoint: {shown(best.best_model_path)} ({best.monitor} {float(best.best_model_score):.4g})")
        if log:
            lines.append(f"  log: {shown(log)}")
        if last is not None and last.last_model_path:
            lines.append(f"  next: zoo export {shown(last.last_model_path)} --out out/my-tok")
        print("\n".join(lines), flush=True)


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without the logger's version number (the run folder says it)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        """The bar's numbers: the losses and validation metrics the regime marks for it."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class ZooCLI(LightningCLI):
    """LightningCLI whose `fit` keeps every run's checkpoints and logs in runs/<recipe>/version_<n>/."""

    def add_arguments_to_parser(self, parser) -> None:
        """--save_every_n_steps: also write last.ckpt every N optimizer steps (long runs without validation)."""
        parser.add_argument("--save_every_n_steps", type=int | None, default=None,
                            help="also write checkpoints/last.ckpt every N optimizer steps (default: at each "
                                 "validation, at the end of each epoch and of training)")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then lay out the run folder and resolve `--ckpt_path last` (before Lightning reads the checkpoint)."""
        super().parse_arguments(parser, args)
        self.run_folder = self.resumed_from = None
        if self.config.get("subcommand") != "fit":
            return
        config = self.config.fit
        self.recipe = recipe_name(config.get("config"))
        root = Path(config.trainer.get("default_root_dir") or ".") / RUNS / self.recipe
        if config.get("ckpt_path") == "last":
            found = [root / f"version_{v}" / "checkpoints" / LAST for v in versions(root)]
            found = [p for p in found if p.is_file()]
            if not found:
                raise TokenizerError(f"--ckpt_path last: no earlier run of {self.recipe} left a checkpoint "
                                     f"({root}/version_*/checkpoints/{LAST}); start without --ckpt_path, or give a checkpoint file.")
            config.ckpt_path = self.resumed_from = str(found[-1])
        elif config.get("ckpt_path"):
            self.resumed_from = str(config.ckpt_path)  # a checkpoint file given: say so as for `last`
        existing = versions(root)
        self.run_folder = root / f"version_{existing[-1] + 1 if existing else 0}"

    def instantiate_trainer(self, **kwargs):
        """The trainer, with the run folder's loggers and checkpoints unless the recipe chose its own."""
        if self.run_folder is None:
            return super().instantiate_trainer(**kwargs)
        trainer_config = self._get(self.config_init, "trainer", default={})
        folder, extra = self.run_folder, {}
        logger = trainer_config.get("logger")
        if logger is None or logger is True:  # Lightning's default: ours instead
            extra["logger"] = run_loggers(folder)
        elif logger is False:
            extra["default_root_dir"] = str(folder)  # config.yaml still lands in the run folder
        callbacks = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("enable_checkpointing", True) is not False:
            callbacks.append(LastCheckpoint(str(folder / "checkpoints"), self.config.fit.get("save_every_n_steps")))
            metric_of = getattr(self.model, "checkpoint_metric", None)
            metric = metric_of() if callable(metric_of) else None
            if metric is not None and trainer_config.get("limit_val_batches") != 0:  # 0: the run never validates
                callbacks.append(BestCheckpoint(str(folder / "checkpoints"), *metric))
        configs = self.config.fit.get("config") or []
        recipe_file = ", ".join(shown(str(getattr(c, "absolute", c))) for c in configs) or None
        callbacks.append(RunReport(folder, self.recipe, recipe_file, self.resumed_from))
        if trainer_config.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, BaseProgressBar) for c in callbacks):
            callbacks.append(ProgressBar())
        return super().instantiate_trainer(**{**extra, "callbacks": callbacks, **kwargs})


def run_loggers(folder: Path) -> list:
    """A CSVLogger writing `folder`/metrics.csv, and a TensorBoardLogger beside it when tensorboard is installed."""
    import importlib.util

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    where = dict(save_dir=str(folder.parent.parent), name=folder.parent.name, version=folder.name)
    loggers = [CSVLogger(**where)]
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TensorBoardLogger(**where, default_hp_metric=False))
    return loggers


def _no_tips(record: logging.LogRecord) -> bool:
    return "Tip:" not in str(record.msg)  # Lightning's advertisements for its cloud services


def main(argv: list[str] | None = None) -> LightningCLI:
    """argv: e.g. ['fit', '--config', 'recipes/titok/tiny.yaml']."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)
    # `zoo fit ...` passes sys.argv on unchanged: let LightningCLI read it itself then
    args = None if argv == sys.argv[1:] else argv
    return ZooCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        args=args, save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
