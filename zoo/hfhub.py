"""The zoo's talk with the Hugging Face hub beyond downloads (zoo.hub.sources): a quick check that the
hub can be reached at all, and pushing a model folder.

The check sends one HEAD request to the hub endpoint with a short timeout, so that a machine without
network gets its one-sentence answer at once instead of after huggingface_hub's retries (five, with
back-off: about 25 s). Pushing uses huggingface_hub's
`HfApi.upload_folder`, private by default, with the token from the usual places (the HF_TOKEN
variable, or the one `hf auth login` saved).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from zoo.errors import TokenizerError

CHECK_TIMEOUT = 2.0  # seconds the reachability check waits for the hub; ZOO_HUB_CHECK_TIMEOUT changes it


def hub_endpoint() -> str:
    """The hub's address: HF_ENDPOINT as huggingface_hub reads it (default https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_unreachable(endpoint: str | None = None, timeout: float | None = None) -> str | None:
    """None when the hub endpoint answers one HEAD request (any HTTP status, through the proxy the
    environment names) within `timeout` seconds; otherwise the reason, as a phrase for an error
    message. One attempt, no retries."""
    endpoint = endpoint or hub_endpoint()
    if timeout is None:
        try:
            timeout = float(os.environ.get("ZOO_HUB_CHECK_TIMEOUT", CHECK_TIMEOUT))
        except ValueError:
            timeout = CHECK_TIMEOUT
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            urlopen(Request(endpoint, method="HEAD", headers={"User-Agent": "tokenizer-zoo"}), timeout=timeout).close()
            outcome["ok"] = True
        except HTTPError:  # an answer, if not a welcome one: the hub is there
            outcome["ok"] = True
        except (URLError, OSError, ValueError) as e:
            outcome["error"] = getattr(e, "reason", e)

    # name lookups have no timeout of their own: wait for the attempt in a thread
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return None
    if "error" in outcome:
        return f"{endpoint} cannot be reached ({outcome['error']})"
    return f"{endpoint} did not answer within {timeout:g} s (ZOO_HUB_CHECK_TIMEOUT sets how long to wait)"


def folder_files(folder: str | Path) -> list[str]:
    """The files a push sends: every file under `folder` but hidden ones, as sorted relative paths."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def push_folder(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None,
                commit_message: str | None = None, revision: str | None = None) -> str:
    """Upload a zoo model folder (config.json + model.safetensors + README.md card, as save_pretrained
    and `zoo export` write it) to Hugging Face repo `repo_id`, creating the repo (private unless
    `private=False`) when it does not exist. token: default the usual places (HF_TOKEN, `hf auth login`).
    Returns the commit's URL."""
    from huggingface_hub import HfApi, get_token

    from zoo.tokenizer import CONFIG_NAME, WEIGHTS_NAME

    folder = Path(folder)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise TokenizerError(f"{folder} is not a zoo model folder (no {', '.join(missing)}); push a folder written by "
                             "save_pretrained or `zoo export`.")
    if "/" not in repo_id:
        raise TokenizerError(f"repo id {repo_id!r} needs its owner: write OWNER/NAME, e.g. my-name/{repo_id}.")
    token = token or get_token()
    if not token:
        raise TokenizerError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again.")
    reason = hub_unreachable()
    if reason:
        raise TokenizerError(f"cannot push to {repo_id}: the hub {reason}.")
    files = folder_files(folder)
    message = commit_message or f"Upload {folder.resolve().name} with tokenizer-zoo ({', '.join(files)})"
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   commit_message=message, revision=revision, allow_patterns=files)
    except Exception as e:  # huggingface_hub's HTTP errors: one line is enough
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(f"pushing {folder} to {repo_id} failed ({type(e).__name__}: {detail}).") from None
    return str(getattr(commit, "commit_url", commit))
