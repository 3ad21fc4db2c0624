"""`zoo fit` / `zoo validate`: LightningCLI over the recipes in recipes/.

A recipe names a LightningModule and a LightningDataModule by class path; every field can be
overridden on the command line (`--trainer.max_steps 10`, `--model.init_args.lr 1e-4`)."""
from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def main(argv: list[str] | None = None) -> LightningCLI:
    """argv: e.g. ['fit', '--config', 'recipes/titok/tiny.yaml']."""
    argv = sys.argv[1:] if argv is None else argv
    return LightningCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        args=argv, save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
