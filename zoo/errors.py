"""Errors a user sees. Each message is one sentence naming the problem and what to do."""


class TokenizerError(ValueError):
    """Bad input, file or configuration given to the zoo."""


class CheckpointError(TokenizerError):
    """A weights file or folder that cannot be read into the model it is meant for."""


class WeightsUnavailableError(TokenizerError, FileNotFoundError):
    """Named weights that are neither local, nor cached, nor downloadable right now."""
