"""Tokenizer zoo: image and speech tokenizers behind one API.

    import zoo
    zoo.list_models("titok-*")
    tok = zoo.load("titok-l-32")
    tokens = tok.encode(images)          # float (B, 3, H, W) in [0, 1]
    recon = tok.decode(tokens)

`import zoo` itself is light: the library (torch, every family's architecture, the hub's registry)
loads on the first use of any of its names or submodules, all of it at once, as if imported here.
That keeps the command line quick where it needs no model (`zoo --help`, `zoo info NAME`).
"""
from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError

__version__ = "0.1.0"
__all__ = [
    "AudioTokenizer", "CheckpointError", "ImageTokenizer", "ModelEntry", "Tokenizer", "TokenizerConfig",
    "TokenizerError", "TokenizerOutput", "Tokens", "WeightSource", "WeightsUnavailableError", "create",
    "list_models", "load", "model_entry", "register",
]
_HOMES = {
    "AudioTokenizer": "zoo.tokenizer", "ImageTokenizer": "zoo.tokenizer", "Tokenizer": "zoo.tokenizer",
    "TokenizerConfig": "zoo.tokenizer", "TokenizerOutput": "zoo.tokenizer", "Tokens": "zoo.tokens",
    "ModelEntry": "zoo.hub", "WeightSource": "zoo.hub", "create": "zoo.hub", "list_models": "zoo.hub",
    "load": "zoo.hub", "model_entry": "zoo.hub", "register": "zoo.hub",
}


def _load_library() -> None:
    import zoo.models  # noqa: F401  (registers every family's architecture, before the hub names them)
    import zoo.hub  # noqa: F401


def __getattr__(name: str):
    import importlib

    if name in _HOMES:
        _load_library()
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            module = importlib.import_module(f"zoo.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"zoo.{name}":
                raise
        else:
            _load_library()
            return module
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
