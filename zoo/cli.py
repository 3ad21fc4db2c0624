"""The `zoo` command: list, info, encode, decode, reconstruct, eval, bench, data, export, push, demo, fit."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.errors import TokenizerError

FIT_COMMANDS = ("fit", "validate")
INFO_INDEX = "hub/info.json"  # `zoo info --all` of every registered name: `zoo info NAME` reads it without torch


def main(argv: list[str] | None = None) -> int:
    """Run the `zoo` command with `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["bench", "kernels"]:
        from zoo.kernels.bench import main as kernels_bench

        return kernels_bench(argv[2:]) or 0
    if argv and argv[0] in FIT_COMMANDS:
        from zoo.training.cli import main as lightning_main  # Lightning is imported only here

        try:
            lightning_main(argv)
        except TokenizerError as e:
            print(f"zoo: error: {e}", file=sys.stderr)
            return 1
        return 0
    args = _parser().parse_args(argv)
    if not hasattr(args, "run"):
        _parser().print_help()
        return 2
    try:
        return args.run(args) or 0
    except TokenizerError as e:
        print(f"zoo: error: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="Image and speech tokenizers behind one API.")
    sub = p.add_subparsers(metavar="COMMAND")

    c = sub.add_parser("list", help="registered model names (wildcards allowed)")
    c.add_argument("pattern", nargs="?", default="*")
    c.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")
    c.set_defaults(run=_list)

    c = sub.add_parser("info", help="what a registered model is, its token budget, source and licence")
    c.add_argument("name", nargs="?", help="a registered name (`zoo list` shows them)")
    c.add_argument("--live", action="store_true", help="build the facts from the registry instead of reading "
                   f"the package's index ({INFO_INDEX}, which tests keep equal to the registry)")
    c.add_argument("--all", action="store_true", help=f"every registered name, live, as one JSON object (what {INFO_INDEX} holds)")
    c.add_argument("--data", type=Path, default=None, help="a folder of images: the tokens the model chooses for each "
                   "(adaptive tokenizers), their mean and spread; needs the weights (--checkpoint, or a folder as NAME)")
    c.add_argument("--checkpoint", type=Path, default=None, help="with --data: the weights file of a registered NAME")
    c.add_argument("--quality", type=float, default=None, help="with --data: the target error to encode at")
    c.add_argument("--num-tokens", type=int, default=None, help="with --data: the token budget")
    c.set_defaults(run=_info)

    for command, helptext, run in (("encode", "files -> tokens (.safetensors)", _encode),
                                   ("reconstruct", "files -> encode -> decode -> PNG / WAV", _reconstruct)):
        c = sub.add_parser(command, help=helptext)
        _add_model_args(c)
        c.add_argument("inputs", nargs="+", type=Path, help="image or audio files")
        c.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
        c.add_argument("--num-tokens", type=int, default=None, help="tokens per image (flexible-length models); "
                       "short for --opt num_tokens=N")
        c.add_argument("--n-q", type=int, default=None, help="leading quantizers to use (RVQ codecs); short for --opt n_q=N")
        c.add_argument("--quality", type=float, default=None, help="target reconstruction error (adaptive tokenizers "
                       "such as KARL; `zoo info NAME` gives its metric and range); short for --opt quality=Q")
        _add_option_arg(c, "an encode or decode" if command == "reconstruct" else "an encode")
        c.add_argument("--mix-to-mono", action="store_true", help="average the channels of multi-channel audio")
        c.set_defaults(run=run)

    c = sub.add_parser("decode", help="tokens (.safetensors) -> PNG / WAV")
    _add_model_args(c, required=False)
    c.add_argument("inputs", nargs="+", type=Path, help="token files written by `zoo encode`")
    c.add_argument("--out", type=Path, default=Path("out"))
    c.add_argument("--allow-download", action="store_true",
                   help="let the model a token file names be downloaded from the hub (default: the cache and local files only)")
    c.add_argument("--other-model", action="store_true",
                   help="decode with --model although the token files name another model (e.g. a fine-tuned copy)")
    _add_option_arg(c, "a decode")
    c.set_defaults(run=_decode)

    c = sub.add_parser("eval", help="reconstruction quality and bitrate over a folder of files")
    _add_model_args(c)
    c.add_argument("--data", type=Path, required=True, help="folder of images, or of audio clips (+ <clip>.txt transcripts)")
    c.add_argument("--num-tokens", type=_int_list, default=None, help="token counts to sweep, e.g. 8,16,32")
    c.add_argument("--n-q", type=_int_list, default=None, help="quantizer counts to sweep, e.g. 1,2,8")
    c.add_argument("--quality", type=_float_list, default=None, help="adaptive tokenizers (KARL, ALIT): target errors, e.g. "
                   "0.05,0.1,0.2; per target the tokens chosen, the error reached, PSNR and passes per image")
    c.add_argument("--search", choices=["linear", "binary"], default=None,
                   help="with --quality: how the tokenizer searches for the tokens (ALIT); short for its encode option")
    c.add_argument("--compare", default=None, metavar="NAME", help="with --quality: a flexible-length tokenizer "
                   "(One-D-Piece) at fixed token counts on the same images, beside the targets' rows and plot")
    c.add_argument("--steps", type=int, default=None, help="sampler steps (flow decoders); short for --opt steps=N")
    c.add_argument("--seed", type=int, default=None, help="sampler seed (flow decoders); short for --opt seed=N")
    _add_option_arg(c, "a decode")
    c.add_argument("--limit", type=int, default=None, help="use only the first N files")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    c.add_argument("--plot", type=Path, default=None, help="write a PNG of the sweep here")
    c.add_argument("--baseline", default=None,
                   help="classical codecs on the same files: images thumbnail,jpeg,webp (at each row's bits per image); "
                        "speech codec2,opus (apt-get install codec2 opus-tools)")
    c.add_argument("--asr", default=None, help="speech: whisper (tiny.en, offline with the whisper extra), wav2vec2:/path/to/weights.pth, "
                   "or package.module:function(wav, sample_rate) -> text")
    c.add_argument("--no-speaker", action="store_true", help="speech: skip speaker similarity (resemblyzer)")
    c.add_argument("--lpips-vgg", type=Path, default=None, help="images: torchvision VGG16 weights file")
    c.add_argument("--lpips-linear", type=Path, default=None, help="images: LPIPS linear-layer weights file")
    c.add_argument("--inception", type=Path, default=None, help="images: Inception-v3 weights file for rFID")
    c.set_defaults(run=_eval)

    c = sub.add_parser("bench", help="encode/decode speed and peak memory ('zoo bench kernels': fused kernels)")
    c.add_argument("--model", required=True, help="registered name (`zoo bench kernels` benches the fused kernels instead)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--dtypes", type=lambda s: s.split(","), default=["fp32"], help="fp32,bf16")
    c.add_argument("--batch-sizes", type=_int_list, default=[1, 4])
    c.add_argument("--compile", action="store_true", help="torch.compile the encode and decode passes")
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--seconds", type=float, default=4.0, help="audio length per clip")
    c.add_argument("--weights", action="store_true", help="load the model's weights (default: random, same speed)")
    c.add_argument("--vs", default=None, help="another implementation: package.module:factory(name, device), or "
                   "'official': the family's official code with the same weights (timed in turn with ours, outputs compared)")
    c.add_argument("--official-path", default=None, help="with --vs official: a checkout of the official code "
                   "(default: ZOO_OFFICIAL_<FAMILY>, else an installed package)")
    c.add_argument("--json", type=Path, default=None)
    c.set_defaults(run=_bench)

    c = sub.add_parser("data", help="build the small offline training/eval sets (images or speech), or pack a folder into tar shards")
    c.add_argument("kind", choices=["images", "speech", "shards"])
    c.add_argument("--out", type=str, required=True, help="a folder; for shards a name with '{}' for the shard number")
    c.add_argument("--src", type=Path, help="shards: the folder of images or audio (+ .txt transcripts) to pack")
    c.add_argument("--per-shard", type=int, default=1000, help="shards: samples per tar file")
    c.add_argument("--size", type=int, default=256, help="images: side of the square crops")
    c.add_argument("--crops", type=int, default=8, help="images: crops per source photo")
    c.add_argument("--train", type=int, default=64, help="speech: training utterances")
    c.add_argument("--val", type=int, default=16, help="speech: held-out utterances (other voices and sentences)")
    c.set_defaults(run=_data)

    c = sub.add_parser("export", help="Lightning checkpoint -> hub folder (safetensors, config, card)")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--metrics", action="append", default=[], metavar="[LABEL=]REPORT",
                   help="a `zoo eval --json` report to put in the card (repeatable; LABEL names the data)")
    c.add_argument("--about", action="append", default=[], metavar="KEY=VALUE",
                   help="a fact for the card's training table, e.g. hardware='2-core CPU' (repeatable)")
    c.add_argument("--metrics-from-other-model", action="store_true",
                   help="accept --metrics reports measured on other weights (the card labels them so); by default a "
                        "report must come from `zoo eval --model CHECKPOINT` of this very checkpoint")
    c.add_argument("--name", default=None, help="the model's name, the card's title (default: the --out folder's name)")
    c.add_argument("--description", default=None, help="the card's first paragraph")
    c.add_argument("--license", default=None, help="licence of the weights (default: the base model's)")
    c.add_argument("--no-ema", action="store_true", help="export the raw weights even when a weight average exists")
    c.set_defaults(run=_export)

    c = sub.add_parser("push", help="upload a model folder (zoo export / save_pretrained) to the Hugging Face hub")
    c.add_argument("folder", type=Path, help="a folder with config.json, model.safetensors and README.md")
    c.add_argument("repo_id", help="OWNER/NAME on the hub (created when it does not exist)")
    c.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    c.add_argument("--message", default=None, help="the commit message (default: names the folder and its files)")
    c.add_argument("--token", default=None, help="a Hugging Face token (default: HF_TOKEN, or `hf auth login`'s)")
    c.set_defaults(run=_push)

    c = sub.add_parser("demo", help="encode and decode a bundled photo and spoken sentence")
    c.add_argument("--out", type=Path, default=Path("out/demo"))
    c.set_defaults(run=_demo)

    sub.add_parser("fit", help="train with a recipe: zoo fit --config recipes/... (LightningCLI)", add_help=False)
    return p


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_option_arg(c, which: str) -> None:
    c.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help=f"{which} option of the model, read with its declared type (repeatable; "
                        "`zoo info NAME` lists them)")


def _add_model_args(c, required: bool = True) -> None:
    c.add_argument("--model", required=required, help="registered name, save_pretrained folder, or hub repo id")
    c.add_argument("--checkpoint", type=Path, default=None, help="weights file/folder (ours or the official layout)")


def _load_model(args):
    import zoo

    return zoo.load(args.model, checkpoint=args.checkpoint)


def model_reference(name: str, checkpoint: Path | None, model) -> dict:
    """What a token file records about the model that made it, so that it decodes from any folder: a
    registered name or hub repo id as given, a local folder or checkpoint as an absolute path, and the
    sha256 of the weights."""
    import zoo

    local = Path(name).expanduser()
    ref = {"model": name if name in zoo.list_models() or not local.exists() else str(local.resolve())}
    if checkpoint is not None:
        ref["checkpoint"] = str(Path(checkpoint).expanduser().resolve())
    ref["weights_sha256"] = model.weights_sha256()
    return ref


def check_outputs(inputs, outputs) -> None:
    """Refuse a command whose outputs would write over one of its inputs or over each other, or whose
    output folder is an existing file."""
    for out in outputs:
        for folder in Path(out).expanduser().parents:
            if folder.exists() and not folder.is_dir():
                raise TokenizerError(f"{folder} is a file, so outputs cannot be written into it; choose another --out.")
    seen: dict[Path, Path] = {}
    protected = {Path(p).expanduser().resolve(): Path(p) for p in inputs if p is not None}
    for out in outputs:
        resolved = Path(out).expanduser().resolve()
        if resolved in protected:
            raise TokenizerError(f"{out} would be written over {protected[resolved]}, one of this command's inputs; "
                                 "choose another --out.")
        if resolved in seen:
            raise TokenizerError(f"two outputs of this command would both be {out}; give inputs with different "
                                 "names, or run them into different --out folders.")
        seen[resolved] = Path(out)


# ---- commands -------------------------------------------------------------------------------

def _list(args) -> int:
    import zoo

    names = zoo.list_models(args.pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r}")
        return 1
    print("\n".join(model_table(names, markdown=args.markdown)))
    return 0


def model_table(names: list[str], markdown: bool = False) -> list[str]:
    """Rows of name, modality, weight source and licence (aligned text, or a Markdown table)."""
    import zoo

    rows = [("name", "modality", "weights", "licence")]
    for n in names:
        e = zoo.model_entry(n)
        weights = ("embedded" if e.embedded else e.source.repo_id if e.source else
                   "manual download" if e.download_page else "none (random init)")
        rows.append((n, e.model_class.modality, weights, e.license))
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        return [lines[0], "|---|---|---|---|", *lines[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _info(args) -> int:
    if args.all:
        import zoo

        print(json.dumps({n: model_info(n) for n in zoo.list_models() if not n.startswith("test-")}, indent=2))
        return 0
    if not args.name:
        raise TokenizerError("say which model: zoo info NAME (`zoo list` shows the names).")
    if args.data is not None:
        print(json.dumps(tokens_chosen(args), indent=2))
        return 0
    indexed = None if args.live else info_index().get(args.name)
    print(json.dumps(indexed if indexed is not None else model_info(args.name), indent=2))
    return 0


def tokens_chosen(args) -> dict:
    """`zoo info NAME --data FOLDER`: the tokens the model keeps for each image of the folder (at its
    --quality / --num-tokens), with their mean, spread and range."""
    import zoo
    from zoo.eval.adaptive import check_image_model, encode_each, image_files, kept, spread

    model = zoo.load(args.name, checkpoint=args.checkpoint)
    check_image_model(model, args.name)
    files = image_files(args.data)
    options = model.check_options("encode", command_options(args, model, ("encode",), ("num_tokens", "quality")))
    counts = {str(path.relative_to(args.data)): kept(tokens)[0] for path, _, tokens in encode_each(model, files, options)}
    values = list(counts.values())
    return {"model": args.name, "data": str(args.data), "options": options, "images": len(values),
            "tokens": spread(values), "per_image": counts}


def info_index() -> dict:
    """{name: facts} as `zoo info --all` wrote them into the package (hub/info.json), read without
    importing torch or the families; empty when the file is missing."""
    import importlib.util

    spec = importlib.util.find_spec("zoo.hub")  # the folder only: zoo.hub itself is not imported
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / Path(INFO_INDEX).name if spec else None
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, json.JSONDecodeError):
        return {}


def model_info(name: str) -> dict:
    """What `zoo info NAME` prints: the entry's facts, the token budget, the options and the config."""
    import torch

    import zoo

    e = zoo.model_entry(name)
    try:
        with torch.device("meta"):  # shapes only: building a large model's random weights takes seconds
            model = e.build()
    except Exception:  # a family whose constructor computes with its tensors
        model = e.build()
    return {
        "name": e.name, "description": e.description, "paper": e.paper, "licence": e.license,
        "weights": ("embedded in the package" if e.embedded else
                    {"repo_id": e.source.repo_id, "file": e.source.filename, "sha256": e.source.sha256,
                     "official_layout": e.source.official_layout} if e.source else
                    f"download by hand from {e.download_page}" if e.download_page else "none (random init only)"),
        "random_weights": f"zoo.create({e.name!r}) builds it with random weights, codebooks included (drawn from "
                          "torch's generator, so torch.manual_seed repeats them): it encodes and decodes at once, "
                          "offline, to try shapes, speed and the API",
        **model.info(),
        "encode_options": model.options_summary()["encode"], "decode_options": model.options_summary()["decode"],
        "config": model.config.to_dict(),
    }


def _read_input(path: Path, model, mix_to_mono: bool):
    from zoo.io import read_audio, read_image

    if model.modality == "image":
        return read_image(path, size=model.image_size)[None]
    wav, _ = read_audio(path, sample_rate=model.sample_rate, mix_to_mono=mix_to_mono)
    return wav[None]


def command_options(args, model, directions: tuple[str, ...],
                    shorthands: tuple[str, ...] = ("num_tokens", "n_q", "quality")) -> dict:
    """--opt KEY=VALUE items (and the shorthand flags, --num-tokens / --n-q / --quality by default) -> options,
    each value read with the type `model` declares for it in `directions`; an unknown key is left
    as text for the model's own check to name."""
    options = {}
    for key in shorthands:
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    for item in getattr(args, "opt", None) or []:  # `zoo info --data` has no --opt
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TokenizerError(f"--opt {item!r} is not KEY=VALUE; write e.g. --opt chunk_seconds=5.")
        if key in options:
            raise TokenizerError(f"option {key!r} is given twice (--opt or its shorthand flag); give it once.")
        spec = next((model.declared_options(d)[key] for d in directions if key in model.declared_options(d)), None)
        try:
            options[key] = spec.parse(text) if spec else text
        except TokenizerError as e:
            raise TokenizerError(f"--opt {item}: {e}") from None
    return options


def _encode(args) -> int:
    model = _load_model(args)
    options = model.check_options("encode", command_options(args, model, ("encode",)))
    targets = [args.out / f"{path.stem}.tokens.safetensors" for path in args.inputs]
    check_outputs(args.inputs, targets)
    reference = model_reference(args.model, args.checkpoint, model)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, target in zip(args.inputs, targets):
        if model.modality == "audio":  # streamed from disk where the family encodes in chunks
            tokens = model.encode_file(path, mix_to_mono=args.mix_to_mono, **options)
        else:
            tokens = model.encode(_read_input(path, model, args.mix_to_mono), **options)
        tokens.meta.update(reference, source_file=str(path.expanduser().resolve()), modality=model.modality)
        tokens.save(target)
        print(f"{path} -> {target}  codes {tuple(tokens.codes.shape)}")
    return 0


def _decode(args) -> int:
    import zoo
    from zoo.tokens import Tokens

    files = [(path, Tokens.load(path)) for path in args.inputs]
    # one output per item: a file holding a batch of B writes NAME.decoded.0 .. NAME.decoded.{B-1}
    targets = [[_output_path(args.out / (f"{path.name.replace('.tokens.safetensors', '')}.decoded"
                                         + (f".{i}" if tokens.batch_size > 1 else "")), tokens)
                for i in range(tokens.batch_size)] for path, tokens in files]
    # the file each token file was encoded from is an input of the journey too: never written over
    check_outputs([*args.inputs, *(t.meta.get("source_file") for _, t in files)], [t for ts in targets for t in ts])
    models: dict[tuple, object] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for (path, tokens), target in zip(files, targets):
        key = (args.model, args.checkpoint) if args.model else (tokens.meta.get("model"), tokens.meta.get("checkpoint"))
        if key[0] is None:
            raise TokenizerError(f"{path} does not name the model that made it; say which with --model NAME.")
        for recorded in key:
            if not args.model and recorded and Path(recorded).is_absolute() and not Path(recorded).exists():
                raise TokenizerError(f"{path} was made by the model at {recorded}, which is not on this machine; "
                                     "copy it there, or say where it is with --model FOLDER.")
        if key not in models:
            models[key] = _load_named_by_tokens(path, key, allow_download=args.allow_download or bool(args.model))
            _check_same_weights(path, tokens, models[key], explicit=args.model is not None)
        model = models[key]
        options = model.check_options("decode", command_options(args, model, ("decode",)))
        decoded = model.decode(tokens, other_model_ok=args.other_model, **options)
        written = [_write_output(t.with_suffix(""), model, decoded[i:i + 1]) for i, t in enumerate(target)]  # = target
        print(f"{path} -> {', '.join(map(str, written))}")
    return 0


def _load_named_by_tokens(path: Path, key: tuple, allow_download: bool):
    """The model a token file names, from local files and the cache only unless downloads are allowed:
    a file's metadata must not make the command reach out to a repo it names."""
    import os

    import zoo
    from zoo.errors import WeightsUnavailableError

    if allow_download:
        return zoo.load(key[0], checkpoint=key[1])
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return zoo.load(key[0], checkpoint=key[1])
    except WeightsUnavailableError as e:
        raise TokenizerError(f"{path} names the model {key[0]}, which is not on this machine ({e}); pass "
                             "--allow-download to fetch it, or --model NAME_OR_FOLDER to decode with a local one.") from None
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def _output_path(stem: Path, tokens) -> Path:
    audio = tokens.meta.get("modality") == "audio" or "sample_rate" in tokens.meta
    return stem.parent / (stem.name + (".wav" if audio else ".png"))  # the name _write_output gives


def _check_same_weights(path: Path, tokens, model, explicit: bool) -> None:
    """Token files record the weights that made them: decoding with others gives garbage, so say so."""
    made_by = tokens.meta.get("weights_sha256")
    if not made_by:
        return
    found = model.weights_sha256()
    if found == made_by:
        return
    where = tokens.meta.get("model")
    if explicit:
        print(f"zoo: note: {path} was encoded by weights with sha256 {made_by[:12]}..., not by the --model given "
              f"(sha256 {found[:12]}...); decoding with it anyway.", file=sys.stderr)
        return
    raise TokenizerError(f"{path} was encoded by weights with sha256 {made_by[:12]}..., but {where} now holds other "
                         f"weights (sha256 {found[:12]}...); decode with the model that made it, or pass --model to use "
                         "this one anyway.")


def _write_output(stem: Path, model, x) -> Path:
    from zoo.io import write_audio, write_image

    if model.modality == "image":
        return write_image(stem.parent / f"{stem.name}.png", x[0])
    return write_audio(stem.parent / f"{stem.name}.wav", x[0], model.sample_rate)


def _reconstruct(args) -> int:
    model = _load_model(args)
    encode_options, decode_options = model.split_options(command_options(args, model, ("encode", "decode")))
    model.check_options("encode", encode_options)
    model.check_options("decode", decode_options)
    suffix = ".png" if model.modality == "image" else ".wav"
    check_outputs(args.inputs, [args.out / f"{path.stem}.recon{suffix}" for path in args.inputs])
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        x = _read_input(path, model, args.mix_to_mono)
        tokens = model.encode(x, **encode_options)
        x_hat = model.decode(tokens, **decode_options)
        target = _write_output(args.out / f"{path.stem}.recon", model, x_hat)
        print(f"{path} -> {target}  codes {tuple(tokens.codes.shape)}  {_quality(model, x, x_hat)}")
    return 0


def _quality(model, x, x_hat) -> str:
    if model.modality == "image":
        from zoo.eval.image_metrics import psnr

        return f"PSNR {float(psnr(x, x_hat.clamp(0, 1)).mean()):.2f} dB"
    from zoo.eval.audio_metrics import snr_db

    return f"SNR {snr_db(x, x_hat):.2f} dB"


def _eval(args) -> int:
    from zoo.errors import require_extra
    from zoo.eval import runner

    if args.quality is not None:
        return _eval_adaptive(args)
    if args.search or args.compare:
        raise TokenizerError("--search and --compare go with --quality (the target errors of an adaptive tokenizer).")
    # what the run will need, checked before the long part
    if args.plot:
        if len(args.num_tokens or args.n_q or []) < 2 and not args.baseline:
            raise TokenizerError("--plot needs a sweep: give several --num-tokens or --n-q values, or --baseline.")
        require_extra("matplotlib", "eval", "--plot")
    if args.asr:
        require_extra("jiwer", "eval", "--asr (word error rates)")
        if args.asr == "whisper" or args.asr.startswith("whisper:"):
            require_extra("faster_whisper", "whisper", "--asr whisper")
    check_outputs([args.model, args.checkpoint], [p for p in (args.json, args.plot) if p is not None])
    model = _load_model(args)
    decode_options = model.check_options("decode", command_options(args, model, ("decode",), ("steps", "seed")))
    baselines = []
    if args.baseline:
        from zoo.eval.baselines import get_baselines

        baselines = get_baselines(args.baseline, model.modality)
    if model.modality == "image":
        lpips = None
        if args.lpips_vgg or args.lpips_linear:
            from zoo.eval.image_metrics import LPIPS

            lpips = LPIPS(args.lpips_vgg, args.lpips_linear)
        report = runner.evaluate_images(model, args.data, args.num_tokens, args.batch_size, args.limit,
                                        lpips=lpips, fid_weights=args.inception, decode_options=decode_options,
                                        baselines=baselines)
    else:
        from zoo.eval.audio_metrics import load_asr

        report = runner.evaluate_speech(model, args.data, args.n_q, args.limit,
                                        asr=load_asr(args.asr) if args.asr else None,
                                        speaker_similarity=not args.no_speaker, decode_options=decode_options,
                                        baselines=baselines)
    report.model = args.model
    return _print_report(args, report, runner.plot_sweep)


def _print_report(args, report, plot) -> int:
    """An eval report as a table, and as --json and --plot (drawn by `plot(report, path)`) when given."""
    print(report.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json())
        print(f"report -> {args.json}")
    if args.plot:
        print(f"plot -> {plot(report, args.plot)}")
    return 0


def _eval_adaptive(args) -> int:
    """`zoo eval --quality`: the rate-quality report of an adaptive tokenizer (zoo.eval.adaptive)."""
    import zoo
    from zoo.errors import require_extra
    from zoo.eval.adaptive import check_targets, evaluate_adaptive, plot_adaptive

    others = [flag for flag, given in (("--num-tokens", args.num_tokens), ("--n-q", args.n_q), ("--baseline", args.baseline),
                                       ("--lpips-vgg", args.lpips_vgg), ("--lpips-linear", args.lpips_linear),
                                       ("--inception", args.inception)) if given]
    if others:
        raise TokenizerError(f"--quality reports the tokens an adaptive tokenizer chooses; leave out {', '.join(others)}.")
    if args.plot:
        require_extra("matplotlib", "eval", "--plot")
    check_outputs([args.model, args.checkpoint], [p for p in (args.json, args.plot) if p is not None])
    model = _load_model(args)
    check_targets(model, args.model, args.quality)  # before the compared model is loaded
    decode_options = model.check_options("decode", command_options(args, model, ("decode",), ("steps", "seed")))
    report = evaluate_adaptive(model, args.data, args.quality, label=args.model, limit=args.limit, search=args.search,
                               decode_options=decode_options, compare=zoo.load(args.compare) if args.compare else None,
                               compare_label=args.compare or "")
    return _print_report(args, report, plot_adaptive)


def _bench(args) -> int:
    from zoo.eval.bench import bench, device_name, format_results, results_as_dicts

    results = bench(args.model, args.device, args.dtypes, args.batch_sizes, args.compile, args.repeats,
                    args.seconds, args.weights, args.vs, official_path=args.official_path)
    print(f"{args.model} on {device_name(args.device)}")
    print(format_results(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results_as_dicts(results), indent=2) + "\n")
    return 0


def _data(args) -> int:
    if args.kind == "shards":
        from zoo.training.shards import shard_folder

        if args.src is None:
            raise TokenizerError("zoo data shards needs --src, the folder to pack.")
        names = shard_folder(args.src, args.out, args.per_shard)
        print(f"wrote {len(names)} shards: {names[0]} .. {names[-1]}")
        return 0
    args.out = Path(args.out)
    if args.kind == "images":
        from zoo.training.image_set import build_image_set

        manifest = build_image_set(args.out, size=args.size, crops_per_image=args.crops)
        print(f"wrote {len(manifest['train'])} training and {len(manifest['val'])} held-out images to {args.out}")
        return 0
    from zoo.training.speech_synth import SENTENCES, VOICES, make_speech_set

    # Held out: the last two voices and the last three sentences, never heard in training.
    train = make_speech_set(args.out / "train", args.train, voices=VOICES[:-2], sentences=SENTENCES[:-3])
    val = make_speech_set(args.out / "val", args.val, voices=VOICES[-2:], sentences=SENTENCES[-3:])
    print(f"wrote {len(train)} training and {len(val)} held-out utterances (+ transcripts) to {args.out}")
    return 0


def _export(args) -> int:
    from zoo.hub.export import export_checkpoint

    reports = {}
    for item in args.metrics:
        label, _, file = item.rpartition("=")  # LABEL=REPORT or REPORT
        if not Path(file).is_file():
            raise TokenizerError(f"--metrics {file} does not exist; write it with zoo eval --json.")
        reports[label] = json.loads(Path(file).read_text())
    about = {}
    for item in args.about:
        key, sep, value = item.partition("=")
        if not sep:
            raise TokenizerError(f"--about {item!r} is not KEY=VALUE; write e.g. --about hardware='2-core CPU'.")
        about[key] = value
    from zoo.hub.export import METRICS_NAME
    from zoo.tokenizer import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

    check_outputs([args.checkpoint, *(Path(item.rpartition("=")[2]) for item in args.metrics)],
                  [args.out / n for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, METRICS_NAME)])
    folder = export_checkpoint(args.checkpoint, args.out, reports=reports, use_ema=not args.no_ema, about=about,
                               description=args.description, license=args.license, name=args.name,
                               metrics_from_other_model=args.metrics_from_other_model)
    print(f"{args.checkpoint} -> {folder} (config.json, model.safetensors, README.md"
          f"{', metrics.json' if reports else ''})")
    return 0


def _push(args) -> int:
    from zoo.hfhub import push_folder

    url = push_folder(args.folder, args.repo_id, private=not args.public, token=args.token, commit_message=args.message)
    print(f"{args.folder} -> {url} ({'public' if args.public else 'private unless the repo existed already'})")
    return 0


def _demo(args) -> int:
    from zoo.demo import run_demo

    run_demo(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
