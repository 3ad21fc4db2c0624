"""ALIT: the official checkpoint reader and converter, rollouts and their tokens, the quality searches and
the passes they cost, batch independence, padded decoding, the training pass and bad input. Tiny
configurations with random weights; the comparison with the official code itself is tests/parity_alit.py
(it needs a checkout of the official repository)."""
import argparse
import pathlib

import pytest
import torch

import zoo
from zoo import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.hub.image_alit import load_official_alit, official_key_map, official_shapes
from zoo.hub.image_karl import read_official_checkpoint
from zoo.models.image import alit as alit_module
from zoo.models.image.alit import ALIT, ALITConfig

# 4 tokens a rollout, 4 rollouts (16 tokens at most), a 4x4 grid of base latents over 32x32 images
SIZES = dict(image_size=32, tokens_per_rollout=4, max_rollouts=4, encoder_width=32, encoder_depth=1, encoder_heads=2,
             decoder_width=32, decoder_depth=1, decoder_heads=2, codebook_size=64)
VQGAN = dict(proxy_codebook_size=64, proxy_code_dim=16, pixel_decoder_channels=32,
             pixel_decoder_channel_mult=(1, 1, 1, 1), pixel_decoder_res_blocks=1)
VAE = dict(base_tokenizer="vae", vae_latent_channels=4, vae_block_channels=(8, 8, 8, 8), vae_layers_per_block=1,
           vae_norm_groups=4)
TINY = ALITConfig(**SIZES, **VQGAN)
TINY_VAE = ALITConfig(**SIZES, **VAE, quantize=False)
PASSES = ("encoder_passes", "decoder_passes", "reconstructions")

zoo.register("test-alit-tiny", ALIT, TINY, description="tiny ALIT", license="MIT",
             download_page="https://example.org/alit.pth", official_loader=lambda path: load_official_alit(path, TINY))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny(config=TINY, seed: int = 0) -> ALIT:
    """A tiny ALIT with random weights; the decoder's code logits sharpened (x20) so that reconstructions
    depend on the tokens (a random head's softmax is near uniform)."""
    torch.manual_seed(seed)
    model = ALIT(config).eval()
    with torch.no_grad():
        model.decoder.head[2].weight.mul_(20.0)
    return model


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def errors_by_rollout(model: ALIT, x: torch.Tensor) -> torch.Tensor:
    """(B, rollouts) reconstruction L1 of each image at each token count, through encode / decode."""
    step = model.config.tokens_per_rollout
    return torch.stack([(model.decode(model.encode(x, num_tokens=step * r)) - x).abs().flatten(1).mean(1)
                        for r in range(1, model.config.max_rollouts + 1)], dim=1)


# ---- the official checkpoint ------------------------------------------------------------------------

def official_layout(model: ALIT) -> dict[str, torch.Tensor]:
    """`model`'s weights under the official names and shapes, plus a training-only tensor a release carries."""
    state = model.state_dict()
    shapes = official_shapes(model.config)
    out = {official: state[ours].reshape(shapes[official]).clone()
           for ours, official in official_key_map(model.config).items()}
    out["gan_losses.0.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    return out


def save_release(path: pathlib.Path, model: ALIT, **args) -> pathlib.Path:
    """A .pth laid out as the official training saves it: 'model', 'ema', 'args' (a Namespace), and more."""
    ema = official_layout(model)
    other = {k: v + 1.0 for k, v in ema.items()}  # 'model' holds other weights: the EMA ones must be taken
    namespace = argparse.Namespace(base_tokenizer=model.config.base_tokenizer, quantize_latent=model.config.quantize,
                                   factorize_latent=True, input_size=256, output_dir="./output_dir", **args)
    torch.save({"model": other, "ema": ema, "args": namespace, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)
    return path


def normalized_codebook(model: ALIT) -> ALIT:
    """The official codebook is looked up l2-normalized, and stored so by the converter."""
    if model.quantizer is not None:
        with torch.no_grad():
            model.quantizer.codebook.copy_(torch.nn.functional.normalize(model.quantizer.codebook, dim=-1))
    return model


@pytest.mark.parametrize("config", [TINY, ALITConfig(**SIZES, **VQGAN, quantize=False), TINY_VAE,
                                    ALITConfig(**SIZES, **VAE)], ids=["vqgan", "vqgan-continuous", "vae-continuous", "vae"])
def test_an_official_release_converts_to_the_same_tokens_and_images(tmp_path, config):
    model = normalized_codebook(tiny(config))
    checkpoint = read_official_checkpoint(save_release(tmp_path / "alit.pth", model), family="ALIT")
    assert checkpoint.part == "ema" and checkpoint.args["base_tokenizer"] == config.base_tokenizer
    assert checkpoint.args["input_size"] == 256  # the training arguments, read as data
    loaded = load_official_alit(tmp_path / "alit.pth", config)
    x = images(2)
    ours, theirs = model.encode(x, num_tokens=8), loaded.encode(x, num_tokens=8)
    assert torch.equal(ours.lengths, theirs.lengths) and torch.equal(ours.codes, theirs.codes)
    if ours.latents is not None:
        torch.testing.assert_close(ours.latents, theirs.latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.decode(ours), loaded.decode(theirs), rtol=0, atol=1e-5)


def test_the_official_key_names_are_those_of_the_official_code():
    """Names and shapes as the official AdaptiveLengthImageTokenizer holds them at the released sizes."""
    small = official_shapes(zoo.model_entry("alit-small-vqgan-in100").config)
    assert small["encoder_positional_embedding"] == small["decoder_positional_embedding"] == (257, 1024)
    assert small["timestep_embedding"] == (8, 32, 1024)
    assert small["latent_tokens"] == small["latent_token_positional_embedding"] == (32, 1024)
    assert small["decoder.latent_token_positional_embedding"] == (256, 1024)
    assert small["patch_embed.weight"] == (768, 3, 16, 16)  # beside the VQGAN's 256 latent channels
    assert small["encoder_class_embedding"] == (1, 1024) and small["encoder_mask_token"] == (1, 1, 1024)
    assert small["decoder.ffn.2.weight"] == (1024, 2048) and small["quantize.embedding.weight"] == (4096, 12)
    assert small["pre_quantizer_mlp.weight"] == (12, 1024) and small["decoder.decoder_embed.weight"] == (1024, 12)
    for name in ("encoder.transformer.7.attn.in_proj_weight", "encoder.transformer.0.mlp.c_fc.weight",
                 "decoder.transformer.7.ln_2.bias", "encoder_ln_pre.weight", "encoder_ln_recursive.bias",
                 "encoder_ln_post.weight", "decoder.ln_pre.weight", "decoder.ln_post.bias", "decoder_class_embedding",
                 "decoder_mask_token", "base_tokenizer.vqgan.encoder.mid.block_2.conv2.weight",
                 "base_tokenizer.vqgan.decoder.up.1.upsample.conv.weight"):
        assert name in small, name
    assert small["base_tokenizer.vqgan.quantize.embedding.weight"] == (1024, 256)
    base = official_shapes(zoo.model_entry("alit-base-vqgan-in100").config)
    assert base["encoder.transformer.11.attn.in_proj_weight"] == (2304, 768) and "encoder.transformer.12.ln_1.weight" not in base
    semilarge = official_shapes(zoo.model_entry("alit-semilarge-vqgan-in100").config)
    assert semilarge["decoder.transformer.15.mlp.c_proj.weight"] == (1024, 4096)
    vae = official_shapes(zoo.model_entry("alit-small-vae-continuous-in100").config)
    assert vae["patch_embed.weight"] == (1008, 3, 16, 16) and "quantize.embedding.weight" not in vae
    assert vae["decoder.ffn.2.weight"] == (16, 2048)
    assert vae["base_tokenizer.vae.decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)


def test_zoo_load_reads_a_release_through_its_registered_name(tmp_path):
    model = normalized_codebook(tiny())
    loaded = zoo.load("test-alit-tiny", checkpoint=save_release(tmp_path / "alit.pth", model))
    assert loaded.name == "test-alit-tiny" and not loaded.training
    x = images(2)
    assert torch.equal(loaded.encode(x).codes, model.encode(x).codes)
    torch.save(official_layout(model), tmp_path / "flat.pth")  # a bare official state dict loads as well
    assert torch.equal(zoo.load("test-alit-tiny", checkpoint=tmp_path / "flat.pth").encode(x).codes,
                       model.encode(x).codes)


def test_a_release_of_another_variant_or_with_a_wrong_key_is_refused(tmp_path):
    model, path = tiny(), tmp_path / "alit.pth"
    for args, message in ((dict(base_tokenizer="vae"), r"trained with base_tokenizer='vae' \(this model: 'vqgan'\)"),
                          (dict(quantize_latent=False), r"quantize_latent=False \(this model: True\)")):
        torch.save({"ema": official_layout(model), "args": argparse.Namespace(**args)}, path)
        with pytest.raises(CheckpointError, match=message + r".*zoo list 'alit-\*'"):
            zoo.load("test-alit-tiny", checkpoint=path)
    big = zoo.model_entry("alit-small-vqgan-in100").config
    with pytest.raises(CheckpointError, match=r"model='alit_base' \(this model: 'alit_small'\)"):
        alit_module_hub().check_official_args({"model": "alit_base"}, big, "x.pth")
    with pytest.raises(CheckpointError, match=r"factorize_latent=False \(this model: True\)"):
        alit_module_hub().check_official_args({"factorize_latent": False}, TINY_VAE, "x.pth")
    torch.save({"ema": official_layout(model), "args": argparse.Namespace(output_dir=pathlib.PurePosixPath("/x"))}, path)
    with pytest.raises(CheckpointError, match="weights_only=True, argparse.Namespace allowed"):
        zoo.load("test-alit-tiny", checkpoint=path)
    state = official_layout(model)
    del state["encoder_ln_recursive.weight"]
    torch.save({"ema": state}, path)
    with pytest.raises(CheckpointError, match="official ALIT layout.*missing keys: encoder_ln_recursive.weight"):
        zoo.load("test-alit-tiny", checkpoint=path)
    state = official_layout(model)
    state["timestep_embedding"] = torch.zeros(8, 4, 32)  # the released 8 rollouts in a 4-rollout model
    torch.save({"ema": state}, path)
    with pytest.raises(CheckpointError, match=r"timestep_embedding: file \(8, 4, 32\) vs expected \(4, 4, 32\)"):
        zoo.load("test-alit-tiny", checkpoint=path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not the dictionary of an official ALIT checkpoint"):
        zoo.load("test-alit-tiny", checkpoint=path)


def alit_module_hub():
    from zoo.hub import image_alit

    return image_alit


def test_without_a_checkpoint_a_release_names_its_download_page():
    names = zoo.list_models("alit-*")
    assert names == ["alit-base-vqgan-in100", "alit-semilarge-vqgan-in100", "alit-small-vae-continuous-in100",
                     "alit-small-vae-in100", "alit-small-vqgan-continuous-in100", "alit-small-vqgan-in100",
                     "alit-small-vqgan-in1k"]
    for name in names:
        with pytest.raises(WeightsUnavailableError, match=r"published at https://www\.dropbox\.com/.*checkpoint=PATH"):
            zoo.load(name)


# ---- rollouts and their tokens ----------------------------------------------------------------------

def test_num_tokens_runs_that_many_rollouts_whose_tokens_all_change():
    model, x = tiny(), images(2)
    tokens = {k: model.encode(x, num_tokens=k) for k in (4, 8, 16)}
    for k, t in tokens.items():
        assert t.lengths.tolist() == [k, k] and t.codes.shape == (2, k)
        assert t.meta["encoder_passes"] == [k // 4] * 2 and t.meta["reconstructions"] == [0, 0]
        assert t.meta["decoder_passes"] == [k // 4 - 1] * 2  # the VQGAN's halting decodes between rollouts
    assert torch.equal(model.encode(x).codes, tokens[16].codes)  # the default: every rollout
    # a later rollout updates the earlier tokens: 8 tokens are rollout 2's, not a prefix of rollout 4's
    assert not torch.equal(tokens[8].codes, tokens[16].codes[:, :8])
    # the training pass (eval mode: the deterministic halting mask) gives each rollout's codes
    with torch.no_grad():
        passes = model.rollout_outputs(x).rollouts
    for k, t in tokens.items():
        assert passes[k // 4 - 1].num_tokens == k and torch.equal(passes[k // 4 - 1].codes, t.codes)
    vae = tiny(TINY_VAE)
    assert vae.encode(x, num_tokens=12).meta["decoder_passes"] == [0, 0]  # no halting over the VAE


def test_halting_masks_the_reconstructed_2d_tokens_of_a_vqgan_base(monkeypatch):
    model, x = tiny(), images(2)
    monkeypatch.setattr(alit_module, "HALTING_THRESHOLD", 2.0)  # no cell is ever masked
    never = {k: model.encode(x, num_tokens=k).codes for k in (4, 16)}
    monkeypatch.setattr(alit_module, "HALTING_THRESHOLD", 0.0)  # every cell is "reconstructed"
    always = {k: model.encode(x, num_tokens=k).codes for k in (4, 16)}
    assert torch.equal(always[4], never[4])  # rollout 1 precedes any halting
    assert not torch.equal(always[16], never[16])  # the mask reaches the later rollouts
    logits, codes = 3 * torch.randn(2, 16, 64), torch.randint(0, 64, (2, 16))
    p = logits.softmax(-1).gather(-1, codes[..., None])[..., 0]
    drawn = model.halting_mask(logits, codes, [torch.Generator().manual_seed(5) for _ in range(2)])
    u = torch.rand(16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn, u[None] < p)  # Bernoulli(p), each image drawing from its own generator
    monkeypatch.setattr(alit_module, "HALTING_THRESHOLD", 0.3)
    assert torch.equal(model.halting_mask(logits, codes), p >= 0.3)  # deterministic: every cell over it
    seeded = [model.encode(x, halting_seed=7) for _ in range(2)]
    assert torch.equal(seeded[0].codes, seeded[1].codes)  # a seed draws the same masks again
    assert torch.equal(model.encode(x[1:], halting_seed=7).codes, seeded[0].codes[1:])  # per image, not per batch


def between(errors: torch.Tensor) -> float:
    """A target halfway between the two middle errors: about half the (image, rollout) pairs meet it, and
    none is within float rounding of it."""
    values = errors.flatten().sort().values
    middle = values.numel() // 2
    return float(values[middle - 1] + values[middle]) / 2


# ---- the quality searches ---------------------------------------------------------------------------

def test_linear_search_keeps_the_first_rollout_that_reaches_the_target():
    model, x = tiny(), images(4)
    errors = errors_by_rollout(model, x)  # (4, 4): at 4, 8, 12, 16 tokens
    q = between(errors)
    meets = errors <= q
    expected = torch.where(meets[:, :-1].any(1), meets[:, :-1].float().argmax(1) + 1, 4)  # else the full count
    assert 1 < len(set(expected.tolist()))  # images of different lengths
    tokens = model.encode(x, quality=q)
    assert tokens.lengths.tolist() == (4 * expected).tolist()
    assert tokens.meta["encoder_passes"] == expected.tolist()
    assert tokens.meta["reconstructions"] == expected.clamp(max=3).tolist()  # the last rollout is kept unchecked
    assert tokens.meta["decoder_passes"] == expected.clamp(max=3).tolist()  # each also gave the halting mask
    reached = (model.decode(tokens) - x).abs().flatten(1).mean(1)
    assert bool((reached[expected < 4] <= q).all())
    for i in range(4):
        n = int(tokens.lengths[i])
        assert torch.equal(tokens.codes[i, :n], model.encode(x[i:i + 1], num_tokens=n).codes[0])
    capped = model.encode(x, quality=q, num_tokens=8)  # within a budget
    assert capped.lengths.tolist() == (4 * expected.clamp(max=2)).tolist()


def decreasing_errors(monkeypatch, scale: torch.Tensor):
    """Stand in for the reconstruction error: scale[image] / rollouts, a decreasing error per image."""
    def error(self, rollout):
        self.output(rollout)
        self.passes["reconstructions"] += 1
        return scale[self.rows] / rollout

    monkeypatch.setattr(alit_module._Rollouts, "error", error)


def test_binary_and_linear_search_agree_when_the_error_decreases(monkeypatch):
    model = tiny(ALITConfig(**{**SIZES, "max_rollouts": 8}, **VQGAN))
    x, scale = images(5), torch.tensor([0.05, 0.3, 0.5, 0.9, 2.0])
    decreasing_errors(monkeypatch, scale)
    previous = None
    for q in (0.05, 0.1, 0.2, 0.3, 0.6):
        linear, binary = model.encode(x, quality=q), model.encode(x, quality=q, search="binary")
        meets = (scale[:, None] / torch.arange(1, 8) <= torch.tensor(q)).tolist()  # in float32, as encode compares
        expected = [next((r for r in range(1, 8) if m[r - 1]), 8) for m in meets]
        assert linear.lengths.tolist() == binary.lengths.tolist() == [4 * r for r in expected]
        assert torch.equal(linear.codes, binary.codes)
        assert linear.meta["reconstructions"] == [min(r, 7) for r in expected]
        assert max(binary.meta["reconstructions"]) <= 3  # log2 of 8 candidates
        # the encoder only goes forwards: at most the largest count a bisection tried, at least the answer
        assert all(r <= e <= 8 for r, e in zip(expected, binary.meta["encoder_passes"]))
        if previous is not None:
            assert bool((linear.lengths <= previous).all())  # a looser target never keeps more tokens
        previous = linear.lengths
    assert binary.meta["encoder_passes"][0] == 4  # 0.05 / r <= 0.6 from r = 1: probes 4, 2, 1
    capped = model.encode(x, quality=0.1, num_tokens=torch.tensor([8, 8, 8, 20, 32]), search="binary")
    assert capped.lengths.tolist() == [4, 8, 8, 20, 32]


# ---- batches and decoding ---------------------------------------------------------------------------

def test_a_batch_gives_each_image_what_it_gets_alone():
    model, x = tiny(), images(4)
    q = between(errors_by_rollout(model, x))
    budgets = torch.tensor([16, 4, 12, 8])
    for options in ({"quality": q}, {"quality": q, "search": "binary"}, {"num_tokens": budgets},
                    {"quality": torch.tensor([q, 1.0, q, 0.0]), "num_tokens": budgets}):
        batch = model.encode(x, **options)
        decoded = model.decode(batch)
        for i in range(4):
            alone_options = {k: v[i:i + 1] if isinstance(v, torch.Tensor) else v for k, v in options.items()}
            alone = model.encode(x[i:i + 1], **alone_options)
            n = int(alone.lengths[0])
            assert int(batch.lengths[i]) == n and torch.equal(batch.codes[i, :n], alone.codes[0])
            assert bool((batch.codes[i, n:] == 0).all())  # padding past the length
            assert all(batch.meta[k][i] == alone.meta[k][0] for k in PASSES)
            torch.testing.assert_close(decoded[i:i + 1], model.decode(alone), rtol=0, atol=1e-5)
    continuous = tiny(TINY_VAE)
    batch = continuous.encode(x, num_tokens=budgets)
    assert batch.codes.shape == (4, 0) and batch.lengths.tolist() == budgets.tolist()
    for i in range(4):
        alone = continuous.encode(x[i:i + 1], num_tokens=budgets[i:i + 1])
        n = int(budgets[i])
        torch.testing.assert_close(batch.latents[i, :n], alone.latents[0], rtol=0, atol=1e-5)
        assert bool((batch.latents[i, n:] == 0).all())
        torch.testing.assert_close(continuous.decode(batch)[i:i + 1], continuous.decode(alone), rtol=0, atol=1e-5)


def test_a_padded_batch_decodes_as_its_images_alone():
    from zoo.tokens import Tokens

    model = tiny()
    codes = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([12, 4, 8])
    decoded = model.decode(Tokens(codes, lengths))
    for i in range(3):
        n = int(lengths[i])
        torch.testing.assert_close(decoded[i:i + 1], model.decode(codes[i:i + 1, :n]), rtol=0, atol=1e-5)
    changed = codes.clone()
    changed[1, 4:] = 5  # what lies past a length is hidden
    torch.testing.assert_close(model.decode(Tokens(changed, lengths)), decoded, rtol=0, atol=1e-6)


# ---- the training pass ------------------------------------------------------------------------------

def test_the_training_pass_gives_every_rollout_and_its_gradients(monkeypatch):
    model = tiny().train()
    out = model.rollout_outputs(images(2), rollouts=3, decode_pixels=True)
    assert [r.num_tokens for r in out.rollouts] == [4, 8, 12] and out.targets.shape == (2, 16)
    assert out.targets.dtype == torch.long and int(out.targets.max()) < 64
    first = out.rollouts[0]
    assert first.logits.shape == (2, 16, 64) and first.reconstruction.shape == (2, 3, 32, 32)
    assert first.aux_loss.ndim == 0 and first.codes.shape == (2, 4)
    loss = sum(r.logits.logsumexp(-1).mean() + r.aux_loss + r.reconstruction.mean() for r in out.rollouts)
    loss.backward()
    for p in (model.encoder.rollout_embedding, model.encoder.norm_recursive.weight, model.encoder.latent_tokens,
              model.decoder.token_positions):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    assert bool(model.encoder.rollout_embedding.grad[3].abs().sum() == 0)  # rollout 4 was not run
    model = tiny()  # a fresh one: training mode moved the codebook (its EMA update)
    with torch.no_grad():  # the last rollout only, nothing masked before it (the official fine-tuning step)
        monkeypatch.setattr(alit_module, "HALTING_THRESHOLD", 2.0)  # never masked
        unmasked = model.rollout_outputs(images(2), rollouts=3).rollouts[-1]
        monkeypatch.setattr(alit_module, "HALTING_THRESHOLD", 0.0)  # all masked after each decoded rollout
        masked = model.rollout_outputs(images(2), rollouts=3).rollouts[-1]
        last = model.rollout_outputs(images(2), rollouts=3, every_rollout=False).rollouts
    assert [r.num_tokens for r in last] == [12] and last[0].reconstruction is None
    assert torch.equal(last[0].codes, unmasked.codes) and not torch.equal(masked.codes, unmasked.codes)
    vae = tiny(TINY_VAE).eval()
    out = vae.rollout_outputs(images(1), decode_pixels=False)
    assert len(out.rollouts) == 4 and out.rollouts[0].reconstruction is None and out.rollouts[0].codes is None
    assert out.targets.shape == (1, 16, 4) and out.rollouts[-1].logits.shape == (1, 16, 4)


# ---- info and bad input -----------------------------------------------------------------------------

def test_info_names_the_quality_metric_and_the_searches():
    from zoo.cli import model_info

    info = model_info("alit-small-vqgan-in100")
    assert info["quality"]["range"] == [0.0, 1.0] and "mean absolute error" in info["quality"]["metric"]
    assert set(info["quality"]["searches"]) == {"linear", "binary"} and info["quality"]["default"] is None
    assert info["tokens_per_image"] == 256 and info["tokens_per_rollout"] == 32 and info["codebook_sizes"] == [4096]
    assert set(info["encode_options"]) == {"num_tokens", "quality", "search", "halting_seed"}
    assert "download by hand from https://www.dropbox.com/" in info["weights"]
    assert model_info("alit-small-vae-continuous-in100")["codebook_sizes"] == []


def test_bad_input_gets_one_clear_error():
    from zoo.tokens import Tokens

    model, x = tiny(), images(2)
    for budget in (5, 6, torch.tensor([4, 6])):
        with pytest.raises(TokenizerError, match=r"num_tokens must be a multiple of 4 \(ALIT adds 4 tokens a rollout\)"):
            model.encode(x, num_tokens=budget)
    for budget in (0, 20, torch.tensor([4, 20])):
        with pytest.raises(TokenizerError, match=r"num_tokens must lie in \[1, 16\]"):
            model.encode(x, num_tokens=budget)
    for quality in (-0.01, 1.5, float("nan"), torch.tensor([0.05]), torch.tensor([1, 2])):
        with pytest.raises(TokenizerError, match="quality"):
            model.encode(x, quality=quality)
    with pytest.raises(TokenizerError, match="pass quality as well"):
        model.encode(x, search="binary")
    with pytest.raises(TokenizerError, match="search"):
        model.encode(x, quality=0.1, search="ternary")
    with pytest.raises(TokenizerError, match=r"every length must be a multiple of 4, got 6"):
        model.decode(Tokens(torch.zeros(2, 8, dtype=torch.long), torch.tensor([8, 6])))
    with pytest.raises(TokenizerError, match="1 <= N <= 16"):
        model.decode(torch.zeros(1, 20, dtype=torch.long))
    with pytest.raises(TokenizerError, match="continuous tokens"):
        tiny(TINY_VAE).decode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TokenizerError, match="rollout_outputs"):
        model(x)
    with pytest.raises(TokenizerError, match="rollouts must be an int from 1 to 4"):
        model.rollout_outputs(x, rollouts=5)
    with pytest.raises(TokenizerError, match="32"):
        model.encode(torch.rand(1, 3, 48, 48))
    with pytest.raises(TokenizerError, match="base_tokenizer"):
        ALIT(TINY.replace(base_tokenizer="vit"))
    with pytest.raises(TokenizerError, match="encoder_width 16 must exceed"):
        ALIT(TINY.replace(encoder_width=16))
