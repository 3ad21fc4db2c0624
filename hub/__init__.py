"""The hub (installed as `zoo.hub`): named tokenizers, weight sources, converters, export.

Each family's registrations live in a module of their own, imported here."""
from zoo.hub.registry import ModelEntry, WeightSource, create, list_models, load, model_entry, register
from zoo.hub import image_titok  # noqa: F401,E402
from zoo.hub import audio_rvq  # noqa: F401,E402
from zoo.hub import audio_wavtokenizer  # noqa: F401,E402
from zoo.hub import audio_lmspt  # noqa: F401,E402
from zoo.hub import image_flextok  # noqa: F401,E402
from zoo.hub import image_karl  # noqa: F401,E402
from zoo.hub import image_alit  # noqa: F401,E402
from zoo.hub import defaults  # noqa: F401,E402

__all__ = ["ModelEntry", "WeightSource", "create", "list_models", "load", "model_entry", "register"]
