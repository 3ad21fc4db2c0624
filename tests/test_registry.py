import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TinyAudioConfig, TinyAudioTokenizer, TinyImageConfig, TinyImageTokenizer, official_to_ours

import zoo
from zoo import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.hub import WeightSource

REPO = "test-org/tiny-image-official"
FILE = "weights.safetensors"

zoo.register("test-tiny-image-a", TinyImageTokenizer, TinyImageConfig(), description="tiny", license="Apache-2.0")
zoo.register("test-tiny-image-b", TinyImageTokenizer, TinyImageConfig(width=8), description="tiny", license="MIT",
             source=WeightSource(REPO, FILE), converter=official_to_ours)
zoo.register("test-tiny-audio", TinyAudioTokenizer, TinyAudioConfig(), description="tiny", license="MIT")


def official_state(config=TinyImageConfig(width=8)):
    return {f"net.{k}": v.clone() for k, v in TinyImageTokenizer(config).state_dict().items()}


def put_in_hf_cache(cache, repo_id, filename, tensors, revision="0123456789abcdef0123456789abcdef01234567"):
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file(tensors, str(snapshot / filename))
    return snapshot / filename


def test_wildcards():
    assert zoo.list_models("test-tiny-image-*") == ["test-tiny-image-a", "test-tiny-image-b"]
    assert zoo.list_models("test-tiny-?udio") == ["test-tiny-audio"]
    assert zoo.list_models("nothing-like-this-*") == []
    assert set(zoo.list_models("test-*")) <= set(zoo.list_models())


def test_create_builds_the_registered_config_with_overrides():
    model = zoo.create("test-tiny-image-a", width=4)
    assert model.config.width == 4 and model.name == "test-tiny-image-a" and not model.training
    assert zoo.create("test-tiny-image-a").config.width == 16


def test_registration_rules():
    with pytest.raises(ValueError, match="registered twice"):
        zoo.register("test-tiny-image-a", TinyImageTokenizer, TinyImageConfig(), description="", license="")
    with pytest.raises(ValueError, match="lower-case"):
        zoo.register("Bad_Name", TinyImageTokenizer, TinyImageConfig(), description="", license="")
    with pytest.raises(TypeError, match="needs a converter"):
        zoo.register("test-no-converter", TinyImageTokenizer, TinyImageConfig(), description="", license="",
                     source=WeightSource("a/b", "c"))


def test_unknown_name_suggests_close_ones():
    with pytest.raises(TokenizerError, match="Did you mean test-tiny-image-a"):
        zoo.load("test-tiny-imag-a")


def test_model_without_weights_says_how_to_get_one():
    with pytest.raises(WeightsUnavailableError, match=r"zoo.create\('test-tiny-image-a'\)"):
        zoo.load("test-tiny-image-a")


def test_offline_error_names_model_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.load("test-tiny-image-b")
    message = str(info.value)
    for part in ("test-tiny-image-b", FILE, REPO, "HF_HUB_OFFLINE", str(tmp_path / "empty-cache"),
                 f"hf download {REPO} {FILE}", "checkpoint="):
        assert part in message


def test_official_weights_from_the_hf_cache_are_converted(tmp_path, monkeypatch):
    state = official_state()
    put_in_hf_cache(tmp_path, REPO, FILE, state)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = zoo.load("test-tiny-image-b")
    assert torch.equal(model.decoder.weight, state["net.decoder.weight"])


def test_recorded_sha256_is_checked(tmp_path, monkeypatch):
    path = put_in_hf_cache(tmp_path, "test-org/hashed", FILE, official_state())
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo.register("test-tiny-image-hashed", TinyImageTokenizer, TinyImageConfig(width=8), description="", license="",
                 source=WeightSource("test-org/hashed", FILE, sha256=good), converter=official_to_ours)
    zoo.register("test-tiny-image-badhash", TinyImageTokenizer, TinyImageConfig(width=8), description="", license="",
                 source=WeightSource("test-org/hashed", FILE, sha256="0" * 64), converter=official_to_ours)
    assert zoo.load("test-tiny-image-hashed").config.width == 8
    with pytest.raises(CheckpointError, match="sha256"):
        zoo.load("test-tiny-image-badhash")


def test_a_sha256_mismatch_takes_that_file_out_of_the_cache_and_nothing_else(tmp_path, monkeypatch):
    from safetensors.torch import save

    revision = "89abcdef0123456789abcdef0123456789abcdef"

    def cached(repo_id, files):  # huggingface_hub's layout: snapshot entries are links to content blobs
        folder = tmp_path / f"models--{repo_id.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(revision)
        (folder / "snapshots" / revision).mkdir(parents=True)
        (folder / "blobs").mkdir()
        for name, data in files.items():
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (folder / "snapshots" / revision / name).symlink_to(Path("../..") / "blobs" / blob.name)
        return folder

    weights = save(official_state())
    repo = cached("test-org/mismatch", {FILE: weights[:-7] + b"garbage", "config.json": b"{}"})
    neighbour = cached("test-org/neighbour", {FILE: weights})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo.register("test-tiny-image-mismatch", TinyImageTokenizer, TinyImageConfig(width=8), description="", license="",
                 source=WeightSource("test-org/mismatch", FILE, sha256=hashlib.sha256(weights).hexdigest()),
                 converter=official_to_ours)
    with pytest.raises(CheckpointError) as error:
        zoo.load("test-tiny-image-mismatch")
    message = str(error.value)
    assert f"{FILE} has sha256 {hashlib.sha256(weights[:-7] + b'garbage').hexdigest()} but" in message
    assert "was removed from the cache, so the next load downloads it afresh" in message and len(message.splitlines()) == 1
    gone = {Path(repo.name) / "snapshots" / revision / FILE,
            Path(repo.name) / "blobs" / hashlib.sha256(weights[:-7] + b"garbage").hexdigest()}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == sorted(set(before) - gone)
    assert (neighbour / "snapshots" / revision / FILE).read_bytes() == weights
    with pytest.raises(WeightsUnavailableError, match="is not in the cache"):  # now simply missing
        zoo.load("test-tiny-image-mismatch")


def test_download_goes_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False, endpoint=None):
        calls.append(local_files_only)
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(put_in_hf_cache(tmp_path, repo_id, filename, official_state()))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(zoo.hub.sources, "hub_unreachable", lambda endpoint: None)  # as if the hub answered
    assert zoo.load("test-tiny-image-b").config.width == 8
    assert calls == [False]  # not in the cache (read without huggingface_hub's requests), so a download


def test_checkpoint_argument_takes_official_layout_and_ours(tmp_path):
    save_file(official_state(), str(tmp_path / "official.safetensors"))
    official = zoo.load("test-tiny-image-b", checkpoint=tmp_path / "official.safetensors")
    torch.save(dict(official.state_dict()), tmp_path / "ours.bin")
    ours = zoo.load("test-tiny-image-b", checkpoint=tmp_path / "ours.bin")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(official.encode(x).codes, ours.encode(x).codes)
    save_file({"net.decoder.weight": torch.zeros(1)}, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="no key 'net.encoder.weight'"):
        zoo.load("test-tiny-image-b", checkpoint=tmp_path / "broken.safetensors")


def test_pickles_are_not_loaded(tmp_path):
    torch.save({"encoder.weight": torch.zeros(1), "evil": object()}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        zoo.load("test-tiny-image-b", checkpoint=tmp_path / "evil.bin")


def test_hub_repo_id_of_a_zoo_folder_from_the_cache(tmp_path, monkeypatch):
    model = zoo.create("test-tiny-audio")
    exported = model.save_pretrained(tmp_path / "export")
    revision = "fedcba9876543210fedcba9876543210fedcba98"
    folder = tmp_path / "cache" / "models--someone--tiny-codec"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots").mkdir()
    (exported).rename(folder / "snapshots" / revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = zoo.load("someone/tiny-codec")
    wav = torch.randn(1, 1, 1600) * 0.1
    assert torch.equal(loaded.encode(wav).codes, model.encode(wav).codes)


def test_a_bare_weights_file_needs_a_model_name(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(TokenizerError, match="pass the model it belongs to"):
        zoo.load(tmp_path / "w.safetensors")


def test_weights_published_outside_the_hub_say_where():
    zoo.register("test-tiny-manual", TinyImageTokenizer, TinyImageConfig(), description="", license="",
                 converter=official_to_ours, download_page="https://example.org/weights")
    with pytest.raises(WeightsUnavailableError, match=r"published at https://example.org/weights.*checkpoint=PATH"):
        zoo.load("test-tiny-manual")
