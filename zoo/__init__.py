"""Tokenizer zoo: image and speech tokenizers behind one API.

    import zoo
    zoo.list_models("titok-*")
    tok = zoo.load("titok-l-32")
    tokens = tok.encode(images)          # float (B, 3, H, W) in [0, 1]
    recon = tok.decode(tokens)
"""
from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.tokenizer import AudioTokenizer, ImageTokenizer, Tokenizer, TokenizerConfig, TokenizerOutput
from zoo.tokens import Tokens
import zoo.models  # noqa: E402,F401  (registers every family's architecture, before the hub names them)
from zoo.hub import ModelEntry, WeightSource, create, list_models, load, model_entry, register  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "AudioTokenizer", "CheckpointError", "ImageTokenizer", "ModelEntry", "Tokenizer", "TokenizerConfig",
    "TokenizerError", "TokenizerOutput", "Tokens", "WeightSource", "WeightsUnavailableError", "create",
    "list_models", "load", "model_entry", "register",
]
