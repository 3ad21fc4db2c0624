"""KARL: the official checkpoint reader and converter, halting within a budget, quality binning, batch
independence and bad input. Tiny configurations with random weights; the comparison with the official
code itself is tests/parity_karl.py (it needs a checkout of the official repository)."""
import argparse
import pathlib

import pytest
import torch

import zoo
from zoo import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.hub.image_karl import (load_official_karl, official_key_map, official_shapes, read_official_checkpoint)
from zoo.models.image.karl import HALTING_THRESHOLD, KARL, QUALITY_BINS, KARLConfig, bin_quality

SIZES = dict(image_size=32, num_tokens=16, encoder_width=32, encoder_depth=1, encoder_heads=2, decoder_width=32,
             decoder_depth=1, decoder_heads=2, codebook_size=64)
VQGAN = dict(proxy_codebook_size=64, proxy_code_dim=16, pixel_decoder_channels=32,
             pixel_decoder_channel_mult=(1, 1, 1, 1, 1), pixel_decoder_res_blocks=1)
VAE = dict(base_tokenizer="vae", vae_latent_channels=4, vae_block_channels=(8, 8, 8, 8, 8), vae_layers_per_block=1,
           vae_norm_groups=4)
TINY = KARLConfig(**SIZES, **VQGAN)
TINY_VAE = KARLConfig(**SIZES, **VAE, quantize=False)

zoo.register("test-karl-tiny", KARL, TINY, description="tiny KARL", license="MIT",
             download_page="https://example.org/karl.pth", official_loader=lambda path: load_official_karl(path, TINY))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny(config=TINY, halting_bias: float | None = 1.0, seed: int = 0) -> KARL:
    """A tiny KARL with random weights, its target-error embeddings drawn at random (as initialised, each
    row is one value repeated, which the first LayerNorm maps to the same vector); `halting_bias` raises the
    halting head's logits so that some tokens halt (at initialisation every halting probability is near 0.5
    and none does)."""
    torch.manual_seed(seed)
    model = KARL(config).eval()
    with torch.no_grad():
        model.encoder.quality_embeddings.normal_()
    if halting_bias is not None:
        with torch.no_grad():
            head = model.encoder.halting_head
            head[0].weight.normal_(0.0, 0.3)
            head[2].weight.normal_(0.0, 0.3)
            head[2].bias.fill_(halting_bias)
    return model


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def official_formula(quality: float) -> int:
    """The official bin of a target error, written out as the official code computes it (float32 bins and
    target, the smallest bin that is at least the target, the last bin when none is)."""
    bins = torch.tensor(QUALITY_BINS)
    loss = torch.zeros(1, 1) + quality
    valid = bins.view(1, 1, -1) >= loss.unsqueeze(-1)
    diffs = bins.view(1, 1, -1) - loss.unsqueeze(-1)
    diffs[~valid] = float("inf")
    index = diffs.argmin(dim=-1)
    index[~valid.any(dim=-1)] = len(QUALITY_BINS) - 1
    return int(index)


# ---- the official checkpoint ------------------------------------------------------------------------

def official_layout(model: KARL) -> dict[str, torch.Tensor]:
    """`model`'s weights under the official names and shapes, plus training-only tensors a release carries."""
    state = model.state_dict()
    shapes = official_shapes(model.config)
    out = {official: state[ours].reshape(shapes[official]).clone()
           for ours, official in official_key_map(model.config).items()}
    out["gan_losses.0.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    return out


def save_release(path: pathlib.Path, model: KARL, **args) -> pathlib.Path:
    """A .pth laid out as the official training saves it: 'model', 'ema', 'args' (a Namespace), and more."""
    ema = official_layout(model)
    other = {k: v + 1.0 for k, v in ema.items()}  # 'model' holds other weights: the EMA ones must be taken
    namespace = argparse.Namespace(model="karl_small", base_tokenizer=model.config.base_tokenizer,
                                   quantize_latent=model.config.quantize, factorize_latent=True, input_size=256,
                                   output_dir="./output_dir", **args)
    torch.save({"model": other, "ema": ema, "args": namespace, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)
    return path


@pytest.mark.parametrize("config", [TINY, KARLConfig(**SIZES, **VQGAN, quantize=False), TINY_VAE,
                                    KARLConfig(**SIZES, **VAE)], ids=["vqgan", "vqgan-continuous", "vae-continuous", "vae"])
def test_an_official_release_converts_to_the_same_tokens_and_images(tmp_path, config):
    model = tiny(config)
    if model.quantizer is not None:  # the official codebook is looked up l2-normalized, and stored so here
        with torch.no_grad():
            model.quantizer.codebook.copy_(torch.nn.functional.normalize(model.quantizer.codebook, dim=-1))
    checkpoint = read_official_checkpoint(save_release(tmp_path / "karl.pth", model))
    assert checkpoint.part == "ema" and checkpoint.args["base_tokenizer"] == config.base_tokenizer
    assert checkpoint.args["input_size"] == 256  # the training arguments, read as data
    loaded = load_official_karl(tmp_path / "karl.pth", config)
    x = images(2)
    ours, theirs = model.encode(x, quality=0.05), loaded.encode(x, quality=0.05)
    assert torch.equal(ours.lengths, theirs.lengths) and torch.equal(ours.codes, theirs.codes)
    if ours.latents is not None:
        torch.testing.assert_close(ours.latents, theirs.latents)
    torch.testing.assert_close(model.decode(ours), loaded.decode(theirs), rtol=0, atol=1e-5)


def test_the_official_key_names_are_those_of_the_official_code():
    """Names and shapes as the official KARLTokenizer (karl_small over the released base tokenizers) holds them."""
    vqgan = official_shapes(KARLConfig())
    assert vqgan["encoder_positional_embedding"] == (1024, 64, 64)
    assert vqgan["patch_embed.weight"] == (768, 3, 16, 16)  # the width beside the VQGAN's 256 latent channels
    assert vqgan["latent_tokens"] == vqgan["decoder_latent_tokens_timestep_embed"] == (512, 1024)
    assert vqgan["rec_loss_embeddings"] == (19, 1024) and vqgan["decoder.ffn.2.weight"] == (1024, 2048)
    assert vqgan["halting_mlp.0.weight"] == (512, 1024) and vqgan["quantize.embedding.weight"] == (4096, 12)
    for name in ("encoder.transformer.7.attn.in_proj_weight", "encoder.transformer.0.mlp.c_fc.weight",
                 "decoder.transformer.7.ln_2.bias", "encoder_ln_post_halt.weight", "encoder_ln_post.bias",
                 "pre_quantizer_mlp.weight", "decoder_embed.weight", "decoder_mask_token", "decoder.ln_pre.weight",
                 "base_tokenizer.vqgan.encoder.mid.block_2.conv2.weight",
                 "base_tokenizer.vqgan.encoder.down.2.block.0.nin_shortcut.weight",
                 "base_tokenizer.vqgan.decoder.up.3.block.0.nin_shortcut.weight",
                 "base_tokenizer.vqgan.decoder.up.1.upsample.conv.weight"):
        assert name in vqgan, name
    assert vqgan["base_tokenizer.vqgan.quantize.embedding.weight"] == (1024, 256)
    vae = official_shapes(KARLConfig(base_tokenizer="vae", quantize=False))
    assert vae["patch_embed.weight"] == (1008, 3, 16, 16) and "quantize.embedding.weight" not in vae
    assert vae["base_tokenizer.vae.encoder.down.4.attn.1.proj_out.weight"] == (512, 512, 1, 1)
    assert vae["base_tokenizer.vae.decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert vae["base_tokenizer.vae.decoder.up.0.block.2.conv1.weight"] == (128, 128, 3, 3)  # LDM: up.0 is full size
    assert vae["base_tokenizer.vae.decoder.up.4.upsample.conv.weight"] == (512, 512, 3, 3)
    assert vae["base_tokenizer.vae.quant_conv.weight"] == (32, 32, 1, 1)
    assert "base_tokenizer.vae.decoder.up.0.upsample.conv.weight" not in vae


def test_zoo_load_reads_a_release_through_its_registered_name(tmp_path):
    model = tiny()
    loaded = zoo.load("test-karl-tiny", checkpoint=save_release(tmp_path / "karl.pth", model))
    assert loaded.name == "test-karl-tiny" and not loaded.training
    x = images(2)
    assert torch.equal(loaded.encode(x).codes, model.encode(x).codes)
    torch.save(official_layout(model), tmp_path / "flat.pth")  # a bare official state dict loads as well
    assert torch.equal(zoo.load("test-karl-tiny", checkpoint=tmp_path / "flat.pth").encode(x).codes, model.encode(x).codes)


def test_a_release_of_another_variant_or_with_code_in_it_is_refused(tmp_path):
    model = tiny()
    path = tmp_path / "karl.pth"
    torch.save({"ema": official_layout(model), "args": argparse.Namespace(base_tokenizer="vae", quantize_latent=True)}, path)
    with pytest.raises(CheckpointError, match=r"trained with base_tokenizer='vae' \(this model: 'vqgan'\)"):
        zoo.load("test-karl-tiny", checkpoint=path)
    torch.save({"ema": official_layout(model), "args": argparse.Namespace(output_dir=pathlib.PurePosixPath("/x"))}, path)
    with pytest.raises(CheckpointError, match="weights_only=True, argparse.Namespace allowed"):
        zoo.load("test-karl-tiny", checkpoint=path)
    state = official_layout(model)
    del state["halting_mlp.2.bias"]
    torch.save({"ema": state}, path)
    with pytest.raises(CheckpointError, match="missing keys: halting_mlp.2.bias"):
        zoo.load("test-karl-tiny", checkpoint=path)


def test_without_a_checkpoint_a_release_names_its_download_page():
    for name in zoo.list_models("karl-*"):
        with pytest.raises(WeightsUnavailableError, match=r"published at https://www\.dropbox\.com/.*checkpoint=PATH"):
            zoo.load(name)
    assert zoo.list_models("karl-*") == ["karl-small-vae-continuous-in100", "karl-small-vae-in100",
                                          "karl-small-vqgan-continuous-in100", "karl-small-vqgan-in100",
                                          "karl-small-vqgan-in1k"]


# ---- halting, budget and quality --------------------------------------------------------------------

def test_quality_is_binned_as_the_official_code_bins_it():
    values = [0.0, 1e-4, 0.005, 0.0050001, 0.0099999, 0.01, 0.05, 0.050000001, 0.051, 0.085, 0.1, 0.2000001,
              0.37, 0.38, *QUALITY_BINS]
    ours = bin_quality(torch.tensor(values, dtype=torch.float64)).tolist()
    assert ours == [official_formula(v) for v in values]
    assert [QUALITY_BINS[i] for i in ours[:9]] == [0.005, 0.005, 0.005, 0.01, 0.01, 0.01, 0.05, 0.05, 0.06]


def test_targets_in_one_bin_give_the_same_tokens_and_other_bins_condition_differently():
    model, x = tiny(), images(2)
    same = [model.encode(x, quality=q) for q in (0.041, 0.05)]
    assert torch.equal(same[0].codes, same[1].codes) and torch.equal(same[0].lengths, same[1].lengths)
    bins = bin_quality(torch.tensor([0.041, 0.2]))
    with torch.no_grad():
        base = model.base_latents(x)
        features = [model.encoder(x, base, torch.full((2,), int(b)), 16).tokens for b in bins]
    assert not torch.allclose(features[0], features[1])  # the condition reaches the tokens


def test_halting_keeps_what_the_head_does_not_halt_within_the_budget():
    model, x = tiny(), images(3)
    with torch.no_grad():
        base = model.base_latents(x)
    for budget, quality in ((16, 0.05), (9, 0.005), (5, 0.38)):
        with torch.no_grad():
            logits = model.encoder(x, base, bin_quality(torch.full((3,), quality)), budget).halting_logits
        expected = (budget - (torch.sigmoid(logits) > HALTING_THRESHOLD).sum(dim=1)).clamp(min=1)
        tokens = model.encode(x, num_tokens=budget, quality=quality)
        assert torch.equal(tokens.lengths, expected) and tokens.codes.shape == (3, int(expected.max()))
        assert bool((tokens.lengths >= 1).all() and (tokens.lengths <= budget).all())
    lengths = model.encode(x).lengths  # the official defaults: 0.05 within the largest budget
    assert torch.equal(lengths, model.encode(x, quality=0.05, num_tokens=16).lengths)
    assert int(lengths.max()) < 16  # some tokens halt


def test_a_budget_alone_keeps_exactly_that_many_tokens():
    model, x = tiny(halting_bias=10.0), images(2)  # a head that would halt every token
    assert model.encode(x, num_tokens=7).lengths.tolist() == [7, 7]
    assert model.encode(x, num_tokens=torch.tensor([3, 11])).lengths.tolist() == [3, 11]
    assert model.encode(x, quality=0.05).lengths.tolist() == [1, 1]  # all halted: one token is kept


def test_a_batch_gives_each_image_what_it_gets_alone():
    model, x = tiny(), images(4)
    budgets, qualities = torch.tensor([16, 12, 16, 6]), torch.tensor([0.005, 0.05, 0.2, 0.38])
    for options in ({"quality": 0.05}, {"num_tokens": budgets, "quality": qualities}, {"num_tokens": budgets}):
        batch = model.encode(x, **options)
        if len(options) == 2:
            assert len(set(batch.lengths.tolist())) > 1  # a padded batch of different lengths
        decoded = model.decode(batch)
        for i in range(4):
            alone_options = {k: v[i:i + 1] if isinstance(v, torch.Tensor) else v for k, v in options.items()}
            alone = model.encode(x[i:i + 1], **alone_options)
            n = int(alone.lengths[0])
            assert int(batch.lengths[i]) == n and torch.equal(batch.codes[i, :n], alone.codes[0])
            assert bool((batch.codes[i, n:] == 0).all())  # padding past the length
            torch.testing.assert_close(decoded[i:i + 1], model.decode(alone), rtol=0, atol=1e-4)
    continuous = tiny(TINY_VAE)
    batch = continuous.encode(x, quality=qualities)
    for i in range(4):
        alone = continuous.encode(x[i:i + 1], quality=qualities[i:i + 1])
        n = int(alone.lengths[0])
        assert int(batch.lengths[i]) == n and batch.codes.shape == (4, 0)
        torch.testing.assert_close(batch.latents[i, :n], alone.latents[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(continuous.decode(batch)[i:i + 1], continuous.decode(alone), rtol=0, atol=1e-4)


def test_info_names_the_quality_metric_and_its_range():
    from zoo.cli import model_info

    info = model_info("karl-small-vqgan-in100")
    assert info["quality"]["range"] == [0.0, 0.38] and "mean absolute error" in info["quality"]["metric"]
    assert info["tokens_per_image"] == 256 and info["codebook_sizes"] == [4096]
    assert set(info["encode_options"]) == {"num_tokens", "quality"}
    assert "download by hand from https://www.dropbox.com/" in info["weights"]
    assert model_info("karl-small-vae-continuous-in100")["codebook_sizes"] == []


# ---- bad input --------------------------------------------------------------------------------------

def test_bad_input_gets_one_clear_error():
    model, x = tiny(), images(2)
    for quality in (-0.01, 0.39, float("nan"), torch.tensor([0.05]), torch.tensor([1, 2])):
        with pytest.raises(TokenizerError, match="quality"):
            model.encode(x, quality=quality)
    with pytest.raises(TokenizerError, match="quality"):
        model.encode(x, quality=True)
    for budget in (0, 17, torch.tensor([1, 17])):
        with pytest.raises(TokenizerError, match=r"num_tokens must lie in \[1, 16\]"):
            model.encode(x, num_tokens=budget)
    with pytest.raises(TokenizerError, match="32"):
        model.encode(torch.rand(1, 3, 48, 48))
    with pytest.raises(TokenizerError, match="1 <= N <= 16"):
        model.decode(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TokenizerError, match="continuous tokens"):
        tiny(TINY_VAE).decode(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TokenizerError, match="base_tokenizer"):
        KARL(TINY.replace(base_tokenizer="vit"))


def test_zoo_encode_takes_a_target_quality(tmp_path, capsys):
    from zoo.cli import main
    from zoo.io import write_image
    from zoo.tokens import Tokens

    model, x = tiny(), images(1)
    folder = model.save_pretrained(tmp_path / "karl")
    write_image(tmp_path / "a.png", x[0])
    image = zoo.io.read_image(tmp_path / "a.png", size=32)[None]
    for quality in (0.005, 0.38):
        assert main(["encode", str(tmp_path / "a.png"), "--model", str(folder), "--quality", str(quality),
                     "--out", str(tmp_path / f"q{quality}")]) == 0
        saved = Tokens.load(tmp_path / f"q{quality}" / "a.tokens.safetensors")
        assert torch.equal(saved.lengths, zoo.load(str(folder)).encode(image, quality=quality).lengths)
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "a.png"), "--model", str(folder), "--quality", "0.9",
                 "--out", str(tmp_path / "x")]) == 1
    assert "must lie in [0, 0.38], the range KARL was trained on, got 0.9." in capsys.readouterr().err


def test_zoo_info_counts_the_tokens_chosen_over_a_folder(tmp_path, capsys):
    import json

    from zoo.cli import main
    from zoo.io import read_image, write_image

    model = tiny()
    folder = model.save_pretrained(tmp_path / "karl")
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images(3, seed=5)):
        write_image(tmp_path / "images" / f"{i}.png", image)
    capsys.readouterr()
    assert main(["info", str(folder), "--data", str(tmp_path / "images"), "--quality", "0.1"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = zoo.load(str(folder))
    expected = [int(loaded.encode(read_image(tmp_path / "images" / f"{i}.png", size=32)[None], quality=0.1).lengths[0])
                for i in range(3)]
    assert list(report["per_image"].values()) == expected and report["images"] == 3
    assert report["tokens"]["mean"] == pytest.approx(sum(expected) / 3) and report["tokens"]["max"] == max(expected)
    assert main(["info", str(folder), "--data", str(tmp_path / "images"), "--num-tokens", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == {"mean": 5, "std": 0, "min": 5, "max": 5}
    assert main(["info", str(folder), "--data", str(tmp_path / "missing")]) == 1
    assert "is not a folder of images" in capsys.readouterr().err
