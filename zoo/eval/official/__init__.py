"""`zoo bench --vs official`: the official implementation of a family, built with our model's weights.

Each covered family has one small adapter module here. An adapter finds the official code (a checkout
given as `--official-path`, the folder in ZOO_OFFICIAL_<FAMILY>, or an installed package), imports it
with the run-time shims it needs (stand-ins for training-only imports, never an edit to the checkout),
builds the official model for our config, loads our weights converted into the official layout (the
inverse of the converters in zoo.hub) and calls it the way the official code's own examples do.

Nothing is downloaded: when the code is not found, the error says what to clone or install.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.errors import TokenizerError


@dataclass(frozen=True)
class OfficialCode:
    """Where a family's official code comes from and how its presence is recognised."""

    family: str           # the readable name, e.g. "TiTok"
    env: str              # environment variable that may hold a checkout's path
    marker: str           # a file every checkout has, relative to its root
    clone: str            # the repository to clone
    package: str | None   # an importable installed package that holds the same code, if one exists
    requires: tuple[str, ...] = ()  # pip packages the official code imports

    def how_to_get(self) -> str:
        """One sentence: what to run to get the code, and how to point the bench at it."""
        pip = f"`pip install {self.package}`, or " if self.package else ""
        folder = self.clone.rstrip("/").rsplit("/", 1)[-1]
        needs = f"; it imports {', '.join(self.requires)} (pip install {' '.join(self.requires)})" if self.requires else ""
        return (f"get it with {pip}`git clone {self.clone}` and pass `--official-path {folder}` "
                f"(or set {self.env}=PATH){needs}")


class OfficialAdapter:
    """The official model of one family, built with our weights. Subclasses fill in the four calls."""

    code: OfficialCode

    def encode(self, x: torch.Tensor):
        """The official encode of x, in the official output format."""
        raise NotImplementedError

    def decode(self, encoded):
        """The official decode of what `from_tokens` gives: the reconstruction, shaped like ours."""
        raise NotImplementedError

    def from_tokens(self, tokens):
        """Our Tokens in the official decode's input format (so both decoders read the same codes)."""
        raise NotImplementedError

    def codes(self, encoded) -> torch.Tensor | None:
        """The official codes in our layout (Tokens.codes), or None for continuous tokens."""
        raise NotImplementedError

    def latents(self, encoded) -> torch.Tensor | None:
        """The official continuous tokens in our layout (Tokens.latents), or None for codes."""
        return None


# our model architecture -> the adapter module (zoo.eval.official.<module>) that covers it
ADAPTERS = {"titok": "titok", "onedpiece": "titok", "speechtokenizer": "rvq_codec", "dmcodec": "rvq_codec"}


def covered_architectures() -> list[str]:
    """The architectures that have an official adapter."""
    return sorted(ADAPTERS)


def adapter_module(architecture: str):
    """The adapter module for a model architecture; any other gets one clear sentence."""
    if architecture not in ADAPTERS:
        raise TokenizerError(f"no official adapter for this family yet ({architecture!r}); `--vs official` covers "
                             f"{', '.join(covered_architectures())}; `--vs package.module:factory` times any other.")
    return importlib.import_module(f"zoo.eval.official.{ADAPTERS[architecture]}")


def official_adapter(model, official_path: str | Path | None = None, device: str = "cpu") -> OfficialAdapter:
    """The official implementation of `model`'s family with `model`'s weights, on `device`."""
    module = adapter_module(model.architecture)
    return module.build(model, module.official_code(model.architecture), official_path, device)


def locate(code: OfficialCode, official_path: str | Path | None = None) -> tuple[Path, Path]:
    """(the folder to import the official code from, the folder its own modules lie in): `official_path`,
    else the environment variable (a checkout: both are the checkout), else an installed package (the
    folder above it, and the package's own folder)."""
    for source, given in (("--official-path", official_path), (code.env, os.environ.get(code.env))):
        if given:
            root = Path(given).expanduser()
            if not (root / code.marker).is_file():
                raise TokenizerError(f"{source} {given} does not hold the official {code.family} code (no {code.marker}); "
                                     f"{code.how_to_get()}.")
            return root.resolve(), root.resolve()
    if code.package:
        spec = importlib.util.find_spec(code.package)  # finds without running the package's __init__
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0]).parent
            if (root / code.marker).is_file():
                return root.resolve(), (root / code.package).resolve()
    raise TokenizerError(f"the official {code.family} code was not found: {code.how_to_get()}.")


@contextlib.contextmanager
def official_imports(root: Path, scope: Path, code: OfficialCode, stubs: dict[str, dict] | None = None,
                     bare_packages: tuple[str, ...] = ()):
    """Import from the checkout at `root` inside this context: `root` leads sys.path; `stubs` (module name ->
    attributes) stand in for imports the inference path never uses, only when the real module is missing;
    `bare_packages` are made importable without running their __init__ (which may import a trainer).
    On exit the path, the stand-ins and every module imported from `scope` are removed again, so that two
    checkouts with the same package names do not meet; the objects built stay usable."""
    before = set(sys.modules)
    added = []
    for name, attributes in (stubs or {}).items():
        if name in sys.modules or _importable(name):
            continue
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        module.__path__ = []  # a package, so that submodules can be stubbed beside it
        sys.modules[name] = module
        added.append(name)
    replaced = {name: sys.modules[name] for name in bare_packages if name in sys.modules}
    for name in bare_packages:
        package = types.ModuleType(name)
        package.__path__ = [str(root / name)]
        sys.modules[name] = package
        added.append(name)
    sys.path.insert(0, str(root))
    try:
        # the official code's deprecation warnings and import-time prints are not ours to show
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    except ModuleNotFoundError as e:
        raise TokenizerError(f"the official {code.family} code at {root} needs the package {e.name!r}, which is not "
                             f"installed: pip install {e.name}"
                             + (f" (it imports {', '.join(code.requires)})" if code.requires else "") + ".") from e
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if name in added or Path(file).resolve().is_relative_to(scope):
                del sys.modules[name]
        sys.modules.update(replaced)  # a package imported before, by its own __init__, stays as it was


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing
        return False
