"""The user's journey: data -> fit -> checkpoint -> export -> load -> encode / decode -> share, with
clear, fast failures on the way (issue 19)."""
import json
import sys
from pathlib import Path

import pytest
import torch
from test_export import lightning_like_checkpoint
from test_registry import official_state  # noqa: F401  (registers the test models)

import zoo
from zoo.cli import main
from zoo.hub.registry import tiny_overrides
from zoo.io import write_image

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "onedpiece" / "tiny.yaml"


def random_images(folder: Path, count: int = 4, size: int = 64) -> Path:
    for i in range(count):
        write_image(folder / f"img{i}.png", torch.rand(3, size, size))
    return folder


# ---- 1. recipes that leave something behind ---------------------------------------------------

def test_a_five_step_fit_leaves_checkpoints_and_a_log_and_resumes_from_last(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    random_images(tmp_path / "images")
    quick = ["--data.init_args.train_dir", "images", "--data.init_args.batch_size", "2", "--data.init_args.repeat", "2",
             "--trainer.val_check_interval", "5", "--trainer.enable_progress_bar", "false"]
    assert main(["fit", "--config", str(TINY), "--trainer.max_steps", "5", *quick]) == 0
    run = Path("runs/onedpiece-tiny/version_0")
    out = capsys.readouterr().out
    assert f"zoo fit: onedpiece-tiny -> {run}/" in out and f"checkpoints: {run}/checkpoints/last.ckpt" in out
    assert f"zoo fit: done at step 5 -> {run}/" in out and f"zoo export {run}/checkpoints/last.ckpt" in out
    assert "best checkpoint: " in out and "(val/psnr " in out
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    log = (run / "metrics.csv").read_text()
    assert "train/loss" in log and "val/psnr" in log and (run / "config.yaml").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5 and ckpt["zoo_run"]["data"] == "train_dir images"
    assert ckpt["zoo_run"]["recipe"].endswith("recipes/onedpiece/tiny.yaml")

    # --ckpt_path last: the newest run's last.ckpt, continued in a new version folder
    assert main(["fit", "--config", str(TINY), "--trainer.max_steps", "7", "--ckpt_path", "last", *quick]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {run}/checkpoints/last.ckpt" in out and "done at step 7 -> runs/onedpiece-tiny/version_1/" in out
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5  # left as it was
    assert torch.load("runs/onedpiece-tiny/version_1/checkpoints/last.ckpt", weights_only=True)["global_step"] == 7


def test_a_run_without_a_checkpoint_to_resume_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(TINY), "--ckpt_path", "last"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: --ckpt_path last: no earlier run of onedpiece-tiny") and len(err.splitlines()) == 1


def test_training_never_reads_the_held_out_split(tmp_path):
    from zoo.errors import TokenizerError
    from zoo.training.image_data import ImageFolderData
    from zoo.training.speech_data import SpeechDataModule

    random_images(tmp_path / "set" / "train", 2)
    random_images(tmp_path / "set" / "val", 2)
    with pytest.raises(TokenizerError, match=r"holds the held-out folder val/ .* --data.init_args.train_dir .*set/train"):
        ImageFolderData(str(tmp_path / "set")).setup("fit")
    random_images(tmp_path / "set" / "train" / "some", 1)
    with pytest.raises(TokenizerError, match="lies inside train_dir"):
        ImageFolderData(str(tmp_path / "set" / "train"), val_dir=str(tmp_path / "set" / "train" / "some")).setup("fit")
    with pytest.raises(TokenizerError, match="held-out folder val/"):
        SpeechDataModule(str(tmp_path / "set")).setup("fit")
    data = ImageFolderData(str(tmp_path / "set" / "train"), val_dir=str(tmp_path / "set" / "val"), crop_size=32)
    data.setup("fit")
    assert len(data.train_set) == 3 and len(data.val_set) == 2


def test_every_recipe_reads_the_training_split_of_zoo_data():
    import yaml

    for path in sorted((ROOT / "recipes").glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())["data"]["init_args"]
        assert data["train_dir"].endswith("/train"), path
        trainer = yaml.safe_load(path.read_text())["trainer"]
        assert trainer.get("logger") is None and trainer.get("enable_checkpointing") is None, path  # zoo fit's run folder


# ---- 2. export that tells the truth -------------------------------------------------------------

def test_export_titles_the_card_with_its_name_and_takes_only_its_own_metrics(tmp_path, capsys):
    raw, average = lightning_like_checkpoint(tmp_path / "last.ckpt")
    images = random_images(tmp_path / "images", 2, 32)
    ckpt = str(tmp_path / "last.ckpt")
    assert main(["eval", "--model", ckpt, "--data", str(images), "--json", str(tmp_path / "own.json")]) == 0
    assert json.loads((tmp_path / "own.json").read_text())["weights_sha256"] == average.weights_sha256()
    assert main(["export", ckpt, "--out", str(tmp_path / "my-tok"), "--metrics", f"held-out={tmp_path / 'own.json'}"]) == 0
    card = (tmp_path / "my-tok" / "README.md").read_text()
    assert "\n# my-tok\n" in card and "test-tiny-image-a" not in card.split("## Training")[0].split("# my-tok")[1][:20]
    for row in ("| base model | test-tiny-image-a |", "| steps | 42 |", "| recipe | not recorded |", "| data |",
                "| started from | random weights |", "held-out) |"):
        assert row in card, row

    # a report of other weights: refused, or with --metrics-from-other-model labelled as such
    zoo.create("test-tiny-image-a", width=8).save_pretrained(tmp_path / "other")
    assert main(["eval", "--model", str(tmp_path / "other"), "--data", str(images), "--json", str(tmp_path / "other.json")]) == 0
    capsys.readouterr()
    assert main(["export", ckpt, "--out", str(tmp_path / "x"), "--metrics", str(tmp_path / "other.json")]) == 1
    err = capsys.readouterr().err
    assert "was measured on model" in err and "--metrics-from-other-model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert main(["export", ckpt, "--out", str(tmp_path / "y"), "--metrics", str(tmp_path / "other.json"),
                 "--metrics-from-other-model", "--name", "named"]) == 0
    card = (tmp_path / "y" / "README.md").read_text()
    assert "\n# named\n" in card and "measured on another model: " in card
    # the raw weights are other weights than the weight average the report measured
    assert main(["export", ckpt, "--out", str(tmp_path / "z"), "--no-ema", "--metrics", str(tmp_path / "own.json")]) == 1


def test_export_never_writes_over_its_inputs(tmp_path, capsys):
    lightning_like_checkpoint(tmp_path / "last.ckpt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "out"),
                 "--metrics", str(tmp_path / "out" / "metrics.json"), "--metrics-from-other-model"]) == 1
    assert "one of this command's inputs" in capsys.readouterr().err
    assert (tmp_path / "out" / "metrics.json").read_text() == "{}"


# ---- 3. share -------------------------------------------------------------------------------------

class FakeHfApi:
    """Records what would be sent to the hub."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, revision=None, allow_patterns=None):
        from zoo.hfhub import folder_files

        sent = [f for f in folder_files(folder_path) if f in allow_patterns]
        self.calls.append(("upload_folder", repo_id, sent, commit_message, self.token))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture()
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_from_the_usual_places")
    monkeypatch.setattr("zoo.hfhub.hub_unreachable", lambda: None)  # no network in tests: the hub is the fake
    return FakeHfApi.calls


def test_zoo_push_uploads_the_folder_privately(tmp_path, fake_hub, capsys):
    folder = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "my-tok")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk").write_text("x")
    assert main(["push", str(folder), "me/my-tok"]) == 0
    assert fake_hub == [
        ("create_repo", "me/my-tok", True, True, "model"),
        ("upload_folder", "me/my-tok", ["README.md", "config.json", "model.safetensors"],
         "Upload my-tok with tokenizer-zoo (README.md, config.json, model.safetensors)", "hf_from_the_usual_places"),
    ]
    assert "https://huggingface.co/me/my-tok/commit/abc" in capsys.readouterr().out
    assert main(["push", str(folder), "me/pub", "--public", "--message", "first"]) == 0
    assert fake_hub[-2][2] is False and fake_hub[-1][3] == "first"


def test_push_to_hub_sends_what_save_pretrained_writes(fake_hub):
    tok = zoo.create("test-tiny-image-a")
    assert tok.push_to_hub("me/tiny", token="hf_given").endswith("/commit/abc")
    (_, repo, private, _, _), (_, _, files, message, token) = fake_hub
    assert (repo, private, token) == ("me/tiny", True, "hf_given")
    assert files == ["README.md", "config.json", "model.safetensors"] and message.startswith("Upload tiny with")


def test_push_says_what_is_missing(tmp_path, fake_hub, monkeypatch, capsys):
    import huggingface_hub

    assert main(["push", str(tmp_path), "me/x"]) == 1
    assert "is not a zoo model folder (no config.json, model.safetensors)" in capsys.readouterr().err
    folder = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "m")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", str(folder), "me/x"]) == 1
    assert "no Hugging Face token: run `hf auth login` or set HF_TOKEN" in capsys.readouterr().err
    assert fake_hub == []


# ---- 4. token files that travel; no command writes over its inputs --------------------------------

def test_a_token_file_decodes_from_another_folder_and_checks_the_weights(tmp_path, monkeypatch, capsys):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    zoo.create("test-tiny-image-a").save_pretrained(work / "model")
    write_image(work / "img.png", torch.rand(3, 32, 32))
    monkeypatch.chdir(work)
    assert main(["encode", "--model", "model", "img.png", "--out", "."]) == 0  # a relative folder
    meta = zoo.Tokens.load(work / "img.tokens.safetensors").meta
    assert meta["model"] == str(work / "model") and meta["source_file"] == str(work / "img.png")
    assert meta["weights_sha256"] == zoo.load(work / "model").weights_sha256()
    before = (work / "img.png").read_bytes()
    assert main(["decode", "img.tokens.safetensors", "--out", "."]) == 0  # the input image is not written over
    assert (work / "img.png").read_bytes() == before and (work / "img.decoded.png").is_file()
    monkeypatch.chdir(elsewhere)
    assert main(["decode", str(work / "img.tokens.safetensors"), "--out", "dec"]) == 0
    assert (elsewhere / "dec" / "img.decoded.png").is_file()

    # the folder now holds other weights: said, not decoded into garbage
    zoo.create("test-tiny-image-a").save_pretrained(work / "model")
    capsys.readouterr()
    assert main(["decode", str(work / "img.tokens.safetensors"), "--out", "dec2"]) == 1
    err = capsys.readouterr().err
    assert "was encoded by weights with sha256" in err and "now holds other weights" in err and len(err.splitlines()) == 1
    assert main(["decode", str(work / "img.tokens.safetensors"), "--model", str(work / "model"), "--out", "dec2"]) == 0
    assert "zoo: note: " in capsys.readouterr().err


def test_no_command_writes_over_its_inputs_or_its_own_outputs(tmp_path, capsys):
    folder = zoo.create("test-tiny-image-a").save_pretrained(tmp_path / "model")
    for sub in ("a", "b"):
        write_image(tmp_path / sub / "x.png", torch.rand(3, 32, 32))
    both = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    assert main(["encode", "--model", str(folder), *both, "--out", str(tmp_path / "tok")]) == 1
    assert "two outputs of this command would both be" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
    write_image(tmp_path / "a" / "x.jpg", torch.rand(3, 32, 32))  # same stem, another suffix
    assert main(["encode", "--model", str(folder), both[0], str(tmp_path / "a" / "x.jpg"), "--out", str(tmp_path / "tok")]) == 1
    assert "two outputs of this command would both be" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
    assert main(["reconstruct", "--model", str(folder), *both, "--out", str(tmp_path / "rec")]) == 1
    # a decoded image named like the photo it was encoded from
    write_image(tmp_path / "c" / "y.decoded.png", torch.rand(3, 32, 32))
    photo = (tmp_path / "c" / "y.decoded.png").read_bytes()
    assert main(["encode", "--model", str(folder), str(tmp_path / "c" / "y.decoded.png"), "--out", str(tmp_path / "c")]) == 0
    (tmp_path / "c" / "y.decoded.tokens.safetensors").rename(tmp_path / "c" / "y.tokens.safetensors")
    assert main(["decode", str(tmp_path / "c" / "y.tokens.safetensors"), "--out", str(tmp_path / "c")]) == 1
    assert "one of this command's inputs" in capsys.readouterr().err
    assert (tmp_path / "c" / "y.decoded.png").read_bytes() == photo
    assert main(["eval", "--model", str(folder), "--data", str(tmp_path / "a"), "--json", str(tmp_path / "r"),
                 "--num-tokens", "4,8", "--plot", str(tmp_path / "r")]) == 1
    assert "two outputs of this command would both be" in capsys.readouterr().err


# ---- 5. random models work ------------------------------------------------------------------------

def registered_names() -> list[str]:
    return [n for n in zoo.list_models() if not n.startswith("test-")]


@pytest.mark.parametrize("name", registered_names())
def test_every_registered_random_model_encodes_and_decodes(name, one_thread):
    model = zoo.create(name, **tiny_overrides(name))  # at the registered image size
    if model.modality == "image":
        x = torch.rand(1, 3, model.image_size, model.image_size)
    else:
        x = 0.1 * torch.randn(1, 1, model.sample_rate // 4)
    tokens = model.encode(x)
    assert model.decode(tokens).shape == x.shape
    if tokens.codes.numel():
        assert int(tokens.codes.max()) < max(model.codebook_sizes)
    assert "random weights" in zoo.cli.info_index()[name]["random_weights"]


# ---- 6. clear, fast failures ----------------------------------------------------------------------

def hide_modules(monkeypatch, *names):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


def test_a_missing_extra_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys):
    hide_modules(monkeypatch, "matplotlib", "skimage")
    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    assert main(["eval", "--model", "zoo-image-onedpiece-64", "--data", str(tmp_path), "--num-tokens", "4,16",
                 "--plot", str(tmp_path / "r.png")]) == 1
    err = capsys.readouterr().err
    assert err == "zoo: error: --plot needs the matplotlib package, which is not installed: pip install 'tokenizer-zoo[eval]'.\n"
    assert main(["data", "images", "--out", str(tmp_path / "set")]) == 1
    assert "pip install 'tokenizer-zoo[data]'" in capsys.readouterr().err and not (tmp_path / "set").exists()


def test_offline_named_load_makes_one_connection_attempt_and_no_retries(tmp_path, monkeypatch):
    """An unreachable endpoint (a closed local port): one request, no download call, so none of
    huggingface_hub's retries; the message is the offline one."""
    import socket

    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    attempts, downloads = [], []
    real_connect, real_download = socket.create_connection, huggingface_hub.hf_hub_download
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a[0]) or real_connect(*a, **k))

    def counting_download(*args, **kwargs):
        downloads.append(kwargs.get("local_files_only", False))
        return real_download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counting_download)
    with pytest.raises(zoo.WeightsUnavailableError) as info:
        zoo.load("test-tiny-image-b")
    assert attempts == [("127.0.0.1", port)]  # one quick check: no request, so none of huggingface_hub's retries
    assert downloads == []
    message = str(info.value)
    assert f"no network: http://127.0.0.1:{port} cannot be reached" in message and "hf download test-org/tiny-image-official" in message


def test_a_hub_that_accepts_but_never_answers_is_given_up_quickly_saying_what_was_tried(tmp_path, monkeypatch):
    import socket
    import time

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("ZOO_HUB_CHECK_TIMEOUT", "0.5")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
        began = time.monotonic()
        with pytest.raises(zoo.WeightsUnavailableError) as info:
            zoo.load("test-tiny-image-b")
        waited = time.monotonic() - began
    message = str(info.value)
    assert waited < 5  # huggingface_hub alone would wait 10 s per try, with retries
    assert f"is not in the cache {tmp_path / 'empty-cache'}" in message
    assert f"no network: {endpoint} did not answer within 0.5 s (ZOO_HUB_CHECK_TIMEOUT sets how long to wait)" in message


def test_zoo_info_reads_the_index_without_torch_and_the_index_is_the_registry():
    import subprocess

    code = "import sys; from zoo.cli import main; main(['info', 'titok-l-32']); assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["parameters"] == 641005583
    live = subprocess.run([sys.executable, "-m", "zoo.cli", "info", "--all"], capture_output=True, text=True, check=True)
    assert live.stdout == (ROOT / "hub" / "info.json").read_text(), \
        "hub/info.json is stale: regenerate it with `zoo info --all > hub/info.json`"


def test_vs_and_asr_find_a_module_in_the_current_folder(tmp_path, monkeypatch):
    """`zoo` is a console script: the current folder is not on its path unless the zoo puts it there."""
    from zoo.eval import import_object

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "my_impl.py").write_text("def factory(name, device):\n    return name\n")
    assert import_object("my_impl:factory", "--vs")("x", "cpu") == "x"
