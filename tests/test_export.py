import json

import pytest
import torch
from test_registry import official_state  # noqa: F401  (registers the test models)

import zoo
from zoo import CheckpointError
from zoo.cli import main
from zoo.hub.export import export_checkpoint


def lightning_like_checkpoint(path, with_ema=True):
    """What a zoo training module's checkpoint holds: the tokenizer under `tokenizer.`, its weight
    average under `ema.model.`, and the registered name + overrides in the hyper-parameters."""
    raw = zoo.create("test-tiny-image-a", width=8)
    average = zoo.create("test-tiny-image-a", width=8)
    state = {f"tokenizer.{k}": v for k, v in raw.state_dict().items()}
    if with_ema:
        state |= {f"ema.model.{k}": v for k, v in average.state_dict().items()}
    state["discriminator.weight"] = torch.zeros(3)
    torch.save({"state_dict": state, "epoch": 1, "global_step": 42,
                "hyper_parameters": {"tokenizer": "test-tiny-image-a", "tokenizer_overrides": {"width": 8}, "lr": 1e-4}},
               path)
    return raw, average


def test_export_writes_a_folder_that_loads(tmp_path):
    raw, average = lightning_like_checkpoint(tmp_path / "last.ckpt")
    # a report of these very weights (the weight average, which export takes by default)
    (tmp_path / "report.json").write_text(json.dumps({"rows": [{"setting": {"tokens": 16}, "metrics": {"psnr": 20.5}}],
                                                      "weights_sha256": average.weights_sha256()}))
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "hub"),
                 "--metrics", str(tmp_path / "report.json")]) == 0
    exported = zoo.load(tmp_path / "hub")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(exported.encode(x).codes, average.encode(x).codes)  # the weight average by default
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| steps | 42 |" in card and "| psnr (tokens=16) | 20.5 |" in card and "moving average" in card
    assert json.loads((tmp_path / "hub" / "metrics.json").read_text())[""]["rows"][0]["metrics"] == {"psnr": 20.5}
    # labelled reports, facts about the run, and a clear error for a missing report
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "labelled"),
                 "--metrics", f"held-out={tmp_path / 'report.json'}", "--about", "hardware=2-core CPU",
                 "--description", "A test export.", "--name", "my-tok"]) == 0
    card = (tmp_path / "labelled" / "README.md").read_text()
    assert "| psnr (tokens=16, held-out) | 20.5 |" in card and "| hardware | 2-core CPU |" in card
    assert "# my-tok\n" in card and "A test export." in card and "held-out" in json.loads((tmp_path / "labelled" / "metrics.json").read_text())
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "x"), "--metrics", "nope.json"]) == 1
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "x"), "--about", "no-equals"]) == 1
    assert main(["export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "raw"), "--no-ema"]) == 0
    assert (tmp_path / "raw" / "README.md").read_text().split("\n---\n", 1)[1].lstrip().startswith("# raw\n")
    assert torch.equal(zoo.load(tmp_path / "raw").decoder.weight, raw.decoder.weight)


def test_export_refuses_what_is_not_a_training_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        export_checkpoint(tmp_path / "plain.pt", tmp_path / "out")
    torch.save({"state_dict": {}, "hyper_parameters": {"teacher": object()}}, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        export_checkpoint(tmp_path / "pickled.ckpt", tmp_path / "out")


def test_export_reads_a_checkpoint_with_library_names_and_training_overrides(tmp_path):
    """A checkpoint written before config.json held the architecture only and before the zoo named
    its quantizers' tensors: training knobs among the overrides, vector-quantize-pytorch's names."""
    from test_training_options import to_library_names

    architecture = {"encoder_depth": 1, "decoder_depth": 1}
    moved = {"kmeans_init": True, "threshold_ema_dead_code": 0.02, "commitment_weight": 0.25}
    model = zoo.create("zoo-image-onedpiece-64", **architecture)
    model.train()(torch.rand(2, 3, 64, 64))  # EMA statistics of their own
    model.eval()
    state = {f"tokenizer.{k}": v for k, v in to_library_names(model.state_dict()).items()}
    assert "tokenizer.quantizer.vq._codebook.embed" in state
    torch.save({"state_dict": state, "epoch": 0, "global_step": 7,
                "hyper_parameters": {"tokenizer": "zoo-image-onedpiece-64",
                                     "tokenizer_overrides": {**architecture, **moved}}}, tmp_path / "old.ckpt")
    folder = export_checkpoint(tmp_path / "old.ckpt", tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder_depth"] == 1 and not set(moved) & set(config)
    exported = zoo.load(folder)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(exported.encode(x).codes, model.encode(x).codes)
    assert torch.equal(exported.state_dict()["quantizer.code_usage"], model.state_dict()["quantizer.code_usage"])
    assert "kmeans_init" in (folder / "README.md").read_text()  # the card still tells how the run was trained
