"""Errors a user sees. Each message is one sentence naming the problem and what to do."""


class TokenizerError(ValueError):
    """Bad input, file or configuration given to the zoo."""


class CheckpointError(TokenizerError):
    """A weights file or folder that cannot be read into the model it is meant for."""


class WeightsUnavailableError(TokenizerError, FileNotFoundError):
    """Named weights that are neither local, nor cached, nor downloadable right now."""


class TrainingDiverged(TokenizerError):
    """A training loss became NaN or infinite; the run stops before it writes any checkpoint of that state."""


class MissingExtraError(TokenizerError, ImportError):
    """An optional package the command needs is not installed."""


def require_extra(module: str, extra: str, needed_for: str) -> None:
    """Raise a MissingExtraError, one sentence naming the extra to install, when `module` is not
    installed (looked up without importing it, so that the check is cheap and comes first)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(f"{needed_for} needs the {module} package, which is not installed: "
                                f"pip install 'tokenizer-zoo[{extra}]'.")
