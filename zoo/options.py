"""Encode / decode options: the keyword parameters a family's `_encode` and `_decode` declare.

A family declares an option as a keyword parameter of `_encode(self, x, *, ...)` or
`_decode(self, tokens, *, ...)`, with a default and an annotation that carries its type and a
one-line help through `typing.Annotated`:

    NumQuantizers = Annotated[int | None, "leading RVQ layers to use; default all"]

    def _encode(self, wav, *, n_q: NumQuantizers = None) -> Tokens: ...

`Tokenizer.encode(x, **options)` / `decode(tokens, **options)` check names and types against these
declarations before calling the family (an unknown name or a value of the wrong type is one
TokenizerError), `zoo info` lists them, and the CLI parses `--opt key=value` with the declared type.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch

from zoo.errors import TokenizerError

DIRECTIONS = ("encode", "decode")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class OptionSpec:
    """One declared option: its name, type (the annotation without its help), default and help."""

    name: str
    type: Any
    default: Any
    help: str

    @property
    def type_name(self) -> str:
        """The type as a user reads it, e.g. 'int | Tensor | None'."""
        return type_name(self.type)

    def accepts(self, value) -> bool:
        """Whether `value` is of the declared type (an int is accepted where a float is declared)."""
        return fits_type(value, self.type)

    def parse(self, text: str):
        """A command-line value -> a value of the declared type (the first alternative that reads it)."""
        alternatives = _alternatives(self.type)
        if type(None) in alternatives and text.strip().lower() in ("none", "null"):
            return None
        readable = [a for a in alternatives if a in (int, float, bool, str) or a is Any or _is_literal(a)]
        for kind in readable:
            try:
                return _parse_as(kind, text)
            except ValueError:
                continue
        if not readable:
            raise TokenizerError(f"option {self.name!r} takes {self.type_name}, which cannot be written on the "
                                 "command line; pass it from Python instead.")
        raise TokenizerError(f"option {self.name!r} takes {self.type_name}, got {text!r}.")

    def summary(self) -> dict:
        """JSON-able {type, default, help}, as `zoo info` prints it."""
        default = self.default if isinstance(self.default, (int, float, str, bool, type(None))) else repr(self.default)
        return {"type": self.type_name, "default": default, "help": self.help}


@functools.cache
def options_of(method) -> dict[str, OptionSpec]:
    """The options an `_encode` / `_decode` function declares: its parameters after self and the input."""
    where = getattr(method, "__qualname__", repr(method))
    try:  # string annotations (`from __future__ import annotations`) resolve in the family's module
        hints = typing.get_type_hints(method, include_extras=True)
    except Exception as e:
        raise TypeError(f"{where}: its annotations do not resolve in its module ({type(e).__name__}: {e}).") from None
    specs = {}
    for p in list(inspect.signature(method).parameters.values())[2:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{where} takes {p}; declare each option as a keyword parameter with a default.")
        if p.default is p.empty:
            raise TypeError(f"{where}: option {p.name!r} needs a default (what the option means when not given).")
        annotation = hints.get(p.name, Any)
        kind, help_text = annotation, ""
        if typing.get_origin(annotation) is Annotated:
            kind, *extras = typing.get_args(annotation)
            help_text = next((e for e in extras if isinstance(e, str)), "")
        specs[p.name] = OptionSpec(p.name, kind, p.default, help_text)
    return specs


def check_option_values(owner: str, direction: str, options: dict, declared: dict[str, OptionSpec]) -> None:
    """Raise a TokenizerError for the first option whose value is not of its declared type."""
    for name, value in options.items():
        if not declared[name].accepts(value):
            raise TokenizerError(f"{direction} option {name!r} of {owner} takes {declared[name].type_name}, "
                                 f"got {describe_value(value)}.")


def unknown_options_message(owner: str, modality: str, asked: str, unknown: list[str],
                            declared: dict[str, dict[str, OptionSpec]],
                            families: dict[str, tuple[str, set[str]]]) -> str:
    """The error for options `owner` does not declare. asked: "encode", "decode" or "reconstruct";
    declared: the owner's options by direction; families: architecture -> (modality, its option names),
    to say where a misplaced option belongs (the other direction, another family or modality)."""
    directions = DIRECTIONS if asked == "reconstruct" else (asked,)
    known = [n for d in directions for n in declared[d]]
    notes = []
    for name in unknown:
        other = [d for d in DIRECTIONS if d not in directions and name in declared[d]]
        owners = sorted(arch for arch, (_, names) in families.items() if name in names)
        close = difflib.get_close_matches(name, known, n=1)
        if other:
            notes.append(f" ({name!r} is {'an' if other[0] == 'encode' else 'a'} {other[0]} option here: "
                         f"pass it to {other[0]}())")
        elif owners and modality not in {families[a][0] for a in owners}:
            kinds = " and ".join(sorted({families[a][0] for a in owners}))
            notes.append(f" ({name!r} is an option of {kinds} tokenizers such as {', '.join(owners[:3])}, "
                         f"not of {modality} ones)")
        elif owners:
            notes.append(f" ({name!r} is an option of {', '.join(owners[:3])})")
        elif close:
            notes.append(f" (did you mean {close[0]!r}?)")
    listing = "; ".join(f"its {d} options are {', '.join(declared[d])}" if declared[d] else f"it takes no {d} options"
                        for d in directions)
    return f"{owner} has no {asked} option {', '.join(map(repr, unknown))}{''.join(notes)}; {listing}."


def type_name(kind) -> str:
    """'int | Tensor | None' for int | torch.Tensor | None."""
    if kind is Any:
        return "any"
    if kind is type(None) or kind is None:
        return "None"
    if _is_union(kind):
        return " | ".join(type_name(a) for a in typing.get_args(kind))
    if _is_literal(kind):
        return " | ".join(repr(a) for a in typing.get_args(kind))
    if kind is torch.Tensor:
        return "Tensor"
    return getattr(kind, "__name__", str(kind))


def describe_value(value) -> str:
    """A short description of a value for an error message (a tensor by shape and dtype)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)} {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def _is_union(kind) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _is_literal(kind) -> bool:
    return typing.get_origin(kind) is Literal


def _alternatives(kind) -> tuple:
    return typing.get_args(kind) if _is_union(kind) else (kind,)


def fits_type(value, kind) -> bool:
    """Whether `value` is of the annotated type `kind` (unions, Literal, None, tensors; an int is a float)."""
    if kind is Any:
        return True
    if kind is type(None) or kind is None:
        return value is None
    if _is_union(kind):
        return any(fits_type(value, a) for a in typing.get_args(kind))
    if _is_literal(kind):
        return value in typing.get_args(kind)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    origin = typing.get_origin(kind)  # tuple[int, ...], list[str]: the container type only
    if isinstance(origin, type):
        return isinstance(value, origin)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _parse_as(kind, text: str):
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(text)
    if _is_literal(kind):
        for choice in typing.get_args(kind):
            if str(choice) == text:
                return choice
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text  # str or any
