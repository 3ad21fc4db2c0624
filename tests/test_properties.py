"""Property-based tests (hypothesis) of encode / decode for every family, at tiny size: over input shapes,
lengths, dtypes, values, option values and token counts, each case either raises one clear
TokenizerError or returns output of the documented shape, finite; well-formed cases always return; and
codes do not depend on the batch an item is encoded in, nor (speech) on chunking.

Examples are derandomized (the same cases on every machine and run), and the database is off."""
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import zoo
from zoo.errors import TokenizerError
from zoo.hub.registry import tiny_overrides

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def tiny(architecture: str):
    """A registered model of `architecture`, shrunk wherever its config has the fields."""
    import zoo.models  # noqa: F401  (the families register)

    name = next(n for n in zoo.list_models()
                if zoo.model_entry(n).model_class.architecture == architecture and not n.startswith("test-"))
    torch.manual_seed(0)
    return zoo.create(name, **tiny_overrides(name, image_size=32))


def _architectures(modality: str) -> list[str]:
    """The families of the registered models (not the tiny test ones other test modules define)."""
    classes = {zoo.model_entry(n).model_class for n in zoo.list_models() if not n.startswith("test-")}
    return sorted(cls.architecture for cls in classes if cls.modality == modality)


IMAGE_FAMILIES, AUDIO_FAMILIES = _architectures("image"), _architectures("audio")
MODELS: dict[str, zoo.Tokenizer] = {}


def model_of(architecture: str):
    if architecture not in MODELS:
        MODELS[architecture] = tiny(architecture)
    return MODELS[architecture]


FLOATS = [torch.float32, torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPES = FLOATS + [torch.uint8, torch.int64, torch.bool]


def values(shape, kind: str, dtype, seed: int, low: float, high: float) -> torch.Tensor:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * (high - low) + low
    if kind == "wide":
        x = x * 4 - 2
    elif kind in ("nan", "inf") and x.numel():
        x.view(-1)[seed % x.numel()] = float(kind)
    elif kind == "constant":
        x = torch.full(shape, high)
    return x.to(dtype)


def token_step(model) -> int:
    """The token counts a family takes are multiples of this (ALIT: a rollout's tokens; others: 1)."""
    return int(model.info().get("tokens_per_rollout", 1))


def decode_options(model, defect: str | None) -> dict:
    """The family's decode options: well-formed, or with the defect asked for."""
    if model.architecture != "flextok":
        return {}
    return {"steps": {"steps 0": 0, "steps 1.5": 1.5}.get(defect, 1),
            "guidance_scale": float("nan") if defect == "guidance NaN" else 7.5}


def encode_and_decode(model, x, encode_options: dict, decode_options: dict, defect: str | None):
    """(tokens, output) of a case that must work, None for one that must be refused: a case with a defect
    raises one single-line TokenizerError, a well-formed one returns (warnings, the documented
    corrections, are silenced)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokens = model.encode(x, **encode_options)
            out = model.decode(tokens, **decode_options)
    except TokenizerError as e:
        assert defect is not None, f"a well-formed case was refused: {e}"
        assert "\n" not in str(e).strip()
        event("refused")
        return None
    assert defect is None, f"{defect}: accepted ({tuple(x.shape)} {x.dtype} {encode_options} {decode_options})"
    event("decoded")
    return tokens, out


# ---- images -----------------------------------------------------------------------------------------

IMAGE_DEFECTS = ["empty batch", "rank 3", "rank 5", "1 channel", "4 channels", "height 0", "width 1", "half size",
                 "larger", "uint8", "int64", "bool", "outside [0, 1]", "NaN", "Inf", "num_tokens 0", "num_tokens N+1",
                 "num_tokens True", "num_tokens 2.5", "num_tokens '3'", "lengths of another batch", "float lengths",
                 "a length of 0", "steps 0", "steps 1.5", "guidance NaN"]
FLOW_DEFECTS = {"steps 0", "steps 1.5", "guidance NaN"}  # of a rectified-flow decoder's options


@st.composite
def image_cases(draw, model):
    """(x, encode options, decode options, the defect or None): half the cases well-formed in every
    respect (random batch, dtype, values, token counts), half with exactly one defect."""
    size, n, step = model.image_size, model.num_tokens, token_step(model)
    defects = [d for d in IMAGE_DEFECTS if model.architecture == "flextok" or d not in FLOW_DEFECTS]
    defect = draw(st.one_of(st.none(), st.sampled_from(defects)))
    batch = 0 if defect == "empty batch" else draw(st.integers(1, 3))
    channels = {"1 channel": 1, "4 channels": 4}.get(defect, 3)
    height = {"height 0": 0, "half size": size // 2, "larger": size + 8}.get(defect, size)
    width = {"width 1": 1, "half size": size // 2, "larger": size + 8}.get(defect, size)
    dtype = {"uint8": torch.uint8, "int64": torch.int64, "bool": torch.bool}.get(defect) or draw(st.sampled_from(FLOATS))
    kind = {"outside [0, 1]": "wide", "NaN": "nan", "Inf": "inf"}.get(defect) or draw(st.sampled_from(["unit", "constant"]))
    shape = {"rank 3": (channels, height, width), "rank 5": (1, batch, channels, height, width)}.get(
        defect, (batch, channels, height, width))
    x = values(shape, kind, dtype, draw(st.integers(0, 2**16)), 0.0, 1.0)
    counts = {"num_tokens 0": 0, "num_tokens N+1": n + 1, "num_tokens True": True, "num_tokens 2.5": 2.5,
              "num_tokens '3'": "3"}
    if defect in counts:
        num_tokens = counts[defect]
    elif defect in ("lengths of another batch", "float lengths", "a length of 0") or draw(st.booleans()):
        lengths = [step * k for k in draw(st.lists(st.integers(1, n // step), min_size=max(batch, 1),
                                                   max_size=max(batch, 1)))]
        if defect == "lengths of another batch":
            lengths = lengths + [1]
        elif defect == "a length of 0":
            lengths[-1] = 0
        num_tokens = torch.tensor(lengths, dtype=torch.float32 if defect == "float lengths"
                                  else draw(st.sampled_from([torch.long, torch.int32])))
    else:
        num_tokens = draw(st.one_of(st.none(), st.integers(1, n // step).map(lambda k: step * k)))
    encode_options = {} if num_tokens is None else {"num_tokens": num_tokens}
    return x, encode_options, decode_options(model, defect), defect


@PROPERTY
@pytest.mark.parametrize("architecture", IMAGE_FAMILIES)
@given(data=st.data())
def test_image_encode_decode_is_an_output_of_the_documented_shape_or_one_clear_error(architecture, data):
    model = model_of(architecture)
    x, encode_options, decode_options, defect = data.draw(image_cases(model))
    done = encode_and_decode(model, x, encode_options, decode_options, defect)
    if done is None:
        return
    tokens, out = done
    batch, size = x.shape[0], model.image_size
    assert out.shape == (batch, 3, size, size) and bool(torch.isfinite(out).all())
    assert tokens.codes.shape[0] == batch
    counts = encode_options.get("num_tokens")
    if tokens.latents is None and counts is not None:
        kept = tokens.lengths if tokens.lengths is not None else torch.full((batch,), tokens.codes.shape[1])
        assert kept.tolist() == (counts.tolist() if isinstance(counts, torch.Tensor) else [counts] * batch)


@PROPERTY
@given(st.sampled_from(IMAGE_FAMILIES), st.integers(2, 3), st.integers(0, 2**16), st.booleans())
def test_image_codes_do_not_depend_on_the_batch(architecture, batch, seed, per_image):
    model = model_of(architecture)
    x = values((batch, 3, model.image_size, model.image_size), "unit", torch.float32, seed, 0.0, 1.0)
    n, step = model.num_tokens, token_step(model)
    lengths = step * torch.randint(1, n // step + 1, (batch,), generator=torch.Generator().manual_seed(seed)) \
        if per_image else None
    whole = model.encode(x, **({"num_tokens": lengths} if per_image else {}))
    for i in range(batch):
        one = model.encode(x[i:i + 1], **({"num_tokens": lengths[i:i + 1]} if per_image else {}))
        kept = int(lengths[i]) if per_image else whole.codes.shape[1]  # a batch pads its codes to its longest
        torch.testing.assert_close(one.codes[:, :kept], whole.codes[i:i + 1, :kept], rtol=0, atol=0)
        if whole.latents is not None:
            width = int(lengths[i]) if per_image else whole.latents.shape[1]  # latents are padded as codes are
            torch.testing.assert_close(one.latents[:, :width], whole.latents[i:i + 1, :width], rtol=1e-5, atol=1e-5)


# ---- speech -----------------------------------------------------------------------------------------

AUDIO_DEFECTS = ["empty batch", "rank 1", "rank 2", "rank 4", "stereo", "no samples", "1 sample", "under a frame",
                 "uint8", "int64", "bool", "NaN", "Inf", "n_q 0", "n_q too many", "n_q True", "n_q 2.5", "n_q '3'",
                 "chunk 0", "chunk -1", "chunk NaN"]


@st.composite
def audio_cases(draw, model):
    """(wav, encode options, the defect or None), as image_cases."""
    hop, layers = model.hop_length, len(model.codebook_sizes)
    # a family without n_q (one codebook) is asked for it anyway: an unknown option is a defect too
    defect = draw(st.one_of(st.none(), st.sampled_from(AUDIO_DEFECTS)))
    batch = 0 if defect == "empty batch" else draw(st.integers(1, 2))
    short = {"no samples": 0, "1 sample": 1, "under a frame": hop - 1}
    length = short[defect] if defect in short else (
        draw(st.integers(1, 5)) * hop + draw(st.sampled_from([0, 1, hop // 2, hop - 1])))
    channels = 2 if defect == "stereo" else 1
    shape = {"rank 1": (length,), "rank 2": (batch, length), "rank 4": (1, batch, 1, length)}.get(
        defect, (batch, channels, length))
    dtype = {"uint8": torch.uint8, "int64": torch.int64, "bool": torch.bool}.get(defect) or draw(st.sampled_from(FLOATS))
    kind = {"NaN": "nan", "Inf": "inf"}.get(defect) or draw(st.sampled_from(["unit", "constant", "loud"]))
    x = values(shape, "unit" if kind == "loud" else kind, torch.float32, draw(st.integers(0, 2**16)), -0.3, 0.3)
    wav = (x * 100 if kind == "loud" else x).to(dtype)  # loud: unscaled PCM, warned and still encoded
    n_q = {"n_q 0": 0, "n_q too many": layers + 1, "n_q True": True, "n_q 2.5": 2.5, "n_q '3'": "3"}.get(
        defect, draw(st.one_of(st.none(), st.integers(1, layers))) if "n_q" in model.declared_options("encode") else None)
    chunk = {"chunk 0": 0.0, "chunk -1": -1.0, "chunk NaN": float("nan")}.get(
        defect, draw(st.sampled_from([None, 20.0, 1.5 * hop / model.sample_rate]))
        if "chunk_seconds" in model.declared_options("encode") else None)
    return wav, {k: v for k, v in (("n_q", n_q), ("chunk_seconds", chunk)) if v is not None}, defect


@PROPERTY
@pytest.mark.parametrize("architecture", AUDIO_FAMILIES)
@given(data=st.data())
def test_audio_encode_decode_is_an_output_of_the_documented_shape_or_one_clear_error(architecture, data):
    model = model_of(architecture)
    wav, options, defect = data.draw(audio_cases(model))
    decode_options = {k: v for k, v in options.items() if k in model.declared_options("decode")}
    done = encode_and_decode(model, wav, options, decode_options, defect)
    if done is None:
        return
    tokens, out = done
    batch, length = wav.shape[0], wav.shape[-1]
    layers = options.get("n_q") or len(model.codebook_sizes)
    assert tokens.codes.shape[:2] == (batch, layers) and tokens.codes.shape[2] == math.ceil(length / model.hop_length)
    assert out.shape == (batch, 1, length) and bool(torch.isfinite(out).all())


@PROPERTY
@given(st.sampled_from(AUDIO_FAMILIES), st.integers(2, 3), st.integers(2, 12), st.integers(0, 2**16))
def test_audio_codes_do_not_depend_on_the_batch_or_on_chunking(architecture, batch, frames, seed):
    model = model_of(architecture)
    hop = model.hop_length
    wav = values((batch, 1, frames * hop + seed % hop), "unit", torch.float32, seed, -0.3, 0.3)
    whole = model.encode(wav)
    chunk = 2 * hop / model.sample_rate  # two frames a chunk: many chunk seams
    if "chunk_seconds" in model.declared_options("encode"):
        torch.testing.assert_close(model.encode(wav, chunk_seconds=chunk).codes, whole.codes, rtol=0, atol=0)
    for i in range(batch):
        torch.testing.assert_close(model.encode(wav[i:i + 1]).codes, whole.codes[i:i + 1], rtol=0, atol=0)
    if "chunk_seconds" in model.declared_options("decode"):  # a decoder that attends over all frames has none
        torch.testing.assert_close(model.decode(whole, chunk_seconds=chunk), model.decode(whole), rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
