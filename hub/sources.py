"""Getting weight files: the Hugging Face cache first, then a download, always hash-checked. Without
network (HF_HUB_OFFLINE, or a hub that one quick connection attempt cannot reach) the answer comes at
once, in one sentence naming the file and where to put it."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zoo.errors import CheckpointError, WeightsUnavailableError
from zoo.hfhub import hub_endpoint, hub_unreachable

_TRUE = {"1", "true", "yes", "on"}


def hf_offline() -> bool:
    """HF_HUB_OFFLINE, read when asked (huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
    """The hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, cache: Path | None = None) -> None:
    """Raise a CheckpointError when the file's sha256 is not the recorded one; a file of the hub cache
    `cache` is first taken out of it (that file only), so that the next attempt downloads it again."""
    actual = sha256_of(path)
    if actual == expected.lower():
        return
    if cache is None:
        then = "delete it and download again"
    else:
        then = (f"{remove_from_cache(path, cache)}, so the next load downloads it afresh (should that copy fail "
                "too, the upstream file changed: pass a checked copy with checkpoint=)")
    raise CheckpointError(f"{path} has sha256 {actual} but {expected} was recorded for it; the file is corrupt "
                          f"or changed upstream: {then}.")


def fetch_file(repo_id: str, filename: str, revision: str | None = None, sha256: str | None = None,
               model_name: str | None = None) -> Path:
    """Path of `filename` from Hugging Face repo `repo_id`: the cache, else a download."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hf_cache_dir()
    who = f"the weights of {model_name}" if model_name else f"{filename} of {repo_id}"
    # the cache, read without huggingface_hub's request machinery (which contacts the hub even for a
    # local_files_only look-up, to name its user agent)
    path = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if not isinstance(path, str):
        if hf_offline():
            raise WeightsUnavailableError(_unavailable(who, repo_id, filename, cache, model_name, "HF_HUB_OFFLINE is set"))
        # one quick request first: without network, huggingface_hub would retry for ~25 s
        endpoint = hub_endpoint()
        unreachable = hub_unreachable(endpoint)
        if unreachable:
            raise WeightsUnavailableError(_unavailable(who, repo_id, filename, cache, model_name,
                                                       f"no network: {unreachable}"))
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache, endpoint=endpoint)
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}"
            raise WeightsUnavailableError(_unavailable(who, repo_id, filename, cache, model_name, reason)) from None
    path = Path(path)
    if sha256:
        check_sha256(path, sha256, cache)
    return path


def remove_from_cache(path: Path, cache: Path) -> str:
    """Take one file out of the hub cache: its snapshot entry and, when no other snapshot entry points
    at it, the blob behind it. Nothing else in the cache is touched. Returns what was done, as a phrase."""
    path, cache = path.absolute(), cache.absolute()
    if not path.is_relative_to(cache):
        return f"{path} lies outside the hub cache {cache} and was left as it is"
    blob = path.resolve()
    repo = next((p for p in path.parents if p.parent == cache), None)
    path.unlink(missing_ok=True)
    if blob != path and repo is not None and blob.is_relative_to(repo.resolve() / "blobs") and blob.exists():
        others = [p for p in (repo / "snapshots").rglob("*") if p.is_symlink() and p.resolve() == blob]
        if not others:
            blob.unlink()
    return f"{path} was removed from the cache"


def fetch_pretrained_folder(repo_id: str, revision: str | None = None) -> Path:
    """A zoo hub folder (config.json + model.safetensors) from the cache or a download."""
    weights = fetch_file(repo_id, "model.safetensors", revision=revision)
    fetch_file(repo_id, "config.json", revision=revision)
    return weights.parent


def _unavailable(who: str, repo_id: str, filename: str, cache: Path, model_name: str | None, reason: str) -> str:
    load_hint = (f" or pass the file directly: zoo.load({model_name!r}, checkpoint='/path/to/{filename}')"
                 if model_name else "")
    return (
        f"cannot get {who}: file {filename!r} of Hugging Face repo {repo_id!r} is not in the cache {cache} "
        f"and could not be downloaded ({reason}); on a machine with network run "
        f"`hf download {repo_id} {filename}` and copy the cache folder here (or set HF_HUB_CACHE to it),"
        f"{load_hint}."
    )
