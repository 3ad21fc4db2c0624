"""Metrics, the `zoo eval` runner and the `zoo bench` timer."""
from __future__ import annotations

from zoo.errors import TokenizerError


def import_object(spec: str, option: str):
    """The object named by 'package.module:attribute' (what --asr and --vs take); modules in the current
    folder are found too."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TokenizerError(f"{option} takes 'package.module:attribute', got {spec!r}.")
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `zoo` (a console script) starts without the current folder on the path
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise TokenizerError(f"cannot import {spec!r} for {option} ({e}).") from None
