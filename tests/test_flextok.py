"""FlexTok: the KL VAE against diffusers, the official config reader and key converter, the API
(prefixes, per-image lengths, seeded decoding), and a tiny model trained through its recipe.

Numerical parity with the official apple/ml-flextok code on random weights is checked outside the
suite (it needs the official code): `python tests/parity_flextok.py /path/to/ml-flextok`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.errors import CheckpointError, TokenizerError
from zoo.models.image.flextok import FlexTok, FlexTokConfig, sincos_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flextok_reference import official_config  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

TINY = dict(image_size=32, vae_latent_channels=4, vae_block_channels=(8, 16), vae_layers_per_block=1, vae_norm_groups=4,
            num_tokens=8, encoder_width=32, encoder_depth=2, encoder_heads=2, decoder_width=32, decoder_depth=2,
            decoder_heads=2, position_grid=8)


def tiny_official(**changes) -> dict:
    """An official-style config of the TINY sizes (VAE sizes are ml-flextok's fixed base layout)."""
    return official_config(32, 2, 32, 2, num_registers=8, grid=16, latent_channels=4, head_dim=16, **changes)


def live(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight, so that zero-initialised layers (adaLN, heads) take part."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> FlexTok:
    torch.manual_seed(0)
    return live(FlexTok(FlexTokConfig(**TINY)))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        img = torch.from_numpy(getattr(data, name)()).float().div(255).permute(2, 0, 1)[None]
        side = min(img.shape[-2:])
        out.append(torch.nn.functional.interpolate(img[..., :side, :side], size=(32, 32), mode="bilinear",
                                                   antialias=True, align_corners=False))
    return torch.cat(out).clamp(0, 1)


# ---- the KL VAE against diffusers ---------------------------------------------------------------

def test_kl_vae_matches_diffusers_and_its_keys_round_trip():
    diffusers = pytest.importorskip("diffusers")
    from zoo.blocks.vae_kl import KLAutoencoder
    from zoo.hub.vae_kl import diffusers_to_ours, ours_to_diffusers, vae_config_from_diffusers

    torch.manual_seed(0)
    config = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32], layers_per_block=1,
                  norm_num_groups=8, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    reference = live(diffusers.AutoencoderKL(**config))
    args = vae_config_from_diffusers({"_class_name": "AutoencoderKL", "scaling_factor": 0.5, **config})
    assert args.pop("scaling_factor") == 0.5
    ours = KLAutoencoder(**args).eval()
    ours.load_state_dict(diffusers_to_ours(reference.state_dict()), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        posterior = reference.encode(x).latent_dist
        mean, logvar = ours.encode_moments(x)
        assert (mean - posterior.mean).abs().max() < 1e-5 and (logvar - posterior.logvar).abs().max() < 1e-5
        assert (ours.decode(z) - reference.decode(z).sample).abs().max() < 1e-5
    back = ours_to_diffusers(ours.state_dict())
    assert back.keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in back.items())


def test_kl_vae_folder_loader_and_clear_errors(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from zoo.hub.vae_kl import load_diffusers_vae, vae_config_from_diffusers

    config = dict(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8, latent_channels=4,
                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, scaling_factor=0.3)
    torch.manual_seed(1)
    live(diffusers.AutoencoderKL(**config)).save_pretrained(tmp_path / "vae")
    vae, scaling = load_diffusers_vae(tmp_path / "vae")
    assert scaling == pytest.approx(0.3) and vae.latent_channels == 4
    with pytest.raises(TokenizerError, match="multiples of 2"):
        vae.encode(torch.zeros(1, 3, 31, 32))
    with pytest.raises(CheckpointError, match="CrossAttnDownBlock2D"):
        vae_config_from_diffusers({**config, "down_block_types": ["CrossAttnDownBlock2D"] * 2})
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_diffusers_vae(tmp_path)


# ---- the official config and key layout ---------------------------------------------------------

def test_official_config_is_read_as_data():
    config = zoo.hub.image_flextok.flextok_config_from_official(official_config())
    released = zoo.model_entry("flextok-d12-d12-in1k").config
    assert config == released.replace(vae_scaling_factor=0.88)
    big = zoo.hub.image_flextok.flextok_config_from_official(official_config(1152, 18, 1792, 28))
    assert (big.encoder_heads, big.decoder_width, big.decoder_depth, big.decoder_heads) == (18, 1792, 28, 28)
    variant = zoo.hub.image_flextok.flextok_config_from_official(
        official_config(null="ZeroNullCond", mask_mode="full", adaln_expansion=1, patch_posemb="learnable_sum"))
    assert (variant.null_condition, variant.register_attention, variant.condition_segments,
            variant.decoder_patch_position) == ("zero", "full", 1, "learned")


@pytest.mark.parametrize("change, message", [
    (lambda c: c["encoder"]["module_dict"]["enc_to_latents"].update(use_mup_readout=True), "use_mup_readout"),
    (lambda c: c["decoder"]["module_dict"]["dec_transformer"].update(qkv_bias=True), "qkv_bias"),
    (lambda c: c["encoder"]["module_dict"]["enc_seq_packer"].update(mask_mode="causal"), "mask_mode"),
    (lambda c: c["decoder"]["module_dict"].pop("dec_time_embedder"), "TimestepEmbedder"),
    (lambda c: c["vae"].update(scaling_factor=None), "scaling_factor"),
    (lambda c: c["decoder"].update(module_dict=dict(reversed(list(c["decoder"]["module_dict"].items())))), "order"),
])
def test_unsupported_official_settings_are_refused_by_name(change, message):
    config = official_config()
    change(config)
    with pytest.raises(CheckpointError, match=message):
        zoo.hub.image_flextok.flextok_config_from_official(config)


def test_official_key_names():
    """A few official names, written out from ml-flextok's module definitions, and where they go."""
    config = zoo.hub.image_flextok.flextok_config_from_official(tiny_official())
    mapping = zoo.hub.image_flextok.official_key_map(tiny_official(), config)
    e, d = "encoder.module_dict", "decoder.module_dict"
    assert mapping[f"{e}.enc_transformer.blocks.1.attn.wq.weight"] == "encoder.transformer.blocks.1.attention.to_q.weight"
    assert mapping[f"{e}.enc_transformer.blocks.0.mlp.fc3.weight"] == "encoder.transformer.blocks.0.mlp.up_proj.weight"
    assert mapping[f"{d}.dec_transformer.blocks.1.adaLN_modulation.1.bias"] == "decoder.transformer.blocks.1.modulation.bias"
    assert mapping[f"{d}.dec_nested_dropout.dropout_mask_token"] == "decoder.mask_token"
    assert mapping[f"{d}.dec_latent_dropout.nullcond"] == "decoder.null_register"
    assert mapping[f"{d}.dec_to_patches.adaLN_modulation.1.weight"] == "decoder.head_modulation.weight"
    assert mapping[f"{e}.enc_register_module.registers"] == "encoder.registers"
    ours = set(FlexTok(config).state_dict())
    assert set(mapping.values()) == {k for k in ours if not k.startswith("vae.")}


def official_state(config: FlexTokConfig, official: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official layout (names from the key map, shapes as ml-flextok
    stores them), VAE included under vae.vae.* in diffusers' names."""
    from zoo.hub.image_flextok import official_key_map
    from zoo.hub.vae_kl import ours_to_diffusers

    g = torch.Generator().manual_seed(seed)
    model = FlexTok(config)
    ours = model.state_dict()
    state = {}
    for key, target in official_key_map(official, config).items():
        shape = tuple(ours[target].shape)
        if target == "decoder.register_position":
            shape = (1, 1, shape[1], shape[0])  # learnable 1D table (1, 1, D, N)
        state[key] = torch.randn(shape, generator=g)
    vae = {k[len("vae."):]: torch.randn(v.shape, generator=g) for k, v in ours.items() if k.startswith("vae.")}
    state.update({f"vae.vae.{k}": v for k, v in ours_to_diffusers(vae).items()})
    return state


def test_converter_places_every_official_tensor():
    from zoo.hub.image_flextok import convert_official_flextok, flextok_config_from_official

    official = tiny_official()
    config = flextok_config_from_official(official)
    state = official_state(config, official)
    ours = convert_official_flextok(state, config, official)
    model = FlexTok(config)
    model.load_state_dict(ours, strict=True)
    assert torch.equal(model.decoder.register_position, state["decoder.module_dict.dec_registers_posemb_module.posembs"][0, 0].T)
    assert torch.equal(model.vae.encoder.mid.attention.to_q.weight,
                       state["vae.vae.encoder.mid_block.attentions.0.to_q.weight"])
    with pytest.raises(CheckpointError, match="missing"):
        convert_official_flextok({k: v for k, v in state.items() if "wq" not in k}, config, official)


def save_official(folder: Path, state: dict, official: dict, where: str) -> Path:
    """Write an official checkpoint as ml-flextok does: config in the safetensors metadata
    (str of each part) or in config.json under "config" (huggingface_hub's mixin)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    metadata = {k: str(v) for k, v in official.items()} if where == "metadata" else None
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata=metadata)
    if where == "config.json":
        (folder / "config.json").write_text(json.dumps({"config": official}))
    return folder


@pytest.mark.parametrize("where", ["metadata", "config.json"])
def test_registered_name_loads_an_official_checkpoint(tmp_path, where):
    from zoo.hub.image_flextok import flextok_config_from_official

    official = tiny_official()
    config = flextok_config_from_official(official)
    folder = save_official(tmp_path / "official", official_state(config, official), official, where)
    model = zoo.load("flextok-d18-d28-dfn", checkpoint=folder / "model.safetensors")
    assert isinstance(model, FlexTok) and model.config == config and model.name == "flextok-d18-d28-dfn"
    assert "research" in model.license.lower()
    tokens = model.encode(torch.rand(1, 3, 256, 256), num_tokens=3)
    assert tokens.codes.shape == (1, 3) and tokens.meta["model"] == "flextok-d18-d28-dfn"


def test_official_checkpoint_without_a_config_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "x").mkdir()
    save_file({"encoder.module_dict.foo": torch.zeros(1)}, str(tmp_path / "x" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="config.json"):
        zoo.load("flextok-d12-d12-in1k", checkpoint=tmp_path / "x" / "model.safetensors")


def test_sincos_table_layout():
    """The released tables read the first grid axis as rows: position (r, c) holds sin/cos of r then of c."""
    table = sincos_grid(3, 3, 8)[0]  # (D, h, w)
    omega = 1.0 / 10000.0 ** (torch.arange(2) / 2)
    assert torch.allclose(table[:, 2, 1], torch.cat([(2 * omega).sin(), (2 * omega).cos(), omega.sin(), omega.cos()]))


# ---- the API ----------------------------------------------------------------------------------

def test_prefixes_and_per_image_lengths(tiny, photos):
    full = tiny.encode(photos)
    assert full.codes.shape == (3, 8) and full.lengths is None
    assert len(set(full.codes.flatten().tolist())) > 3  # the perturbed model gives varied codes
    for k in (1, 3, 8):
        assert torch.equal(tiny.encode(photos, num_tokens=k).codes, full.codes[:, :k])
    mixed = tiny.encode(photos, num_tokens=torch.tensor([1, 5, 8]))
    assert mixed.lengths.tolist() == [1, 5, 8] and mixed.codes.shape == (3, 8)
    assert mixed.codes[0, 1:].eq(0).all() and torch.equal(mixed.codes[1, :5], full.codes[1, :5])


def test_batched_decode_equals_each_image_alone(tiny, photos):
    tokens = tiny.encode(photos, num_tokens=torch.tensor([2, 8, 5]))
    noise = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    batch = tiny.decode(tokens, steps=3, noise=noise)
    for i, k in enumerate((2, 8, 5)):
        alone = tiny.decode(tiny.encode(photos[i:i + 1], num_tokens=k), steps=3, noise=noise[i:i + 1])
        assert (batch[i] - alone[0]).abs().max() < 1e-5


def test_seeded_decoding_draws_the_official_noise(tiny, photos):
    tokens = tiny.encode(photos, num_tokens=4)
    g = torch.Generator().manual_seed(11)
    official_noise = torch.cat([torch.randn((1, 4, 16, 16), generator=g) for _ in range(3)])
    seeded = tiny.decode(tokens, steps=2, seed=11)
    assert torch.equal(seeded, tiny.decode(tokens, steps=2, noise=official_noise))
    assert torch.equal(seeded, tiny.decode(tokens, steps=2, seed=11))
    assert not torch.equal(seeded, tiny.decode(tokens, steps=2, seed=12))
    plain = tiny.decode(tokens, steps=2, seed=11, norm_guidance=False)
    unguided = tiny.decode(tokens, steps=2, seed=11, guidance_scale=1.0)
    assert not torch.equal(seeded, plain) and not torch.equal(plain, unguided)
    assert seeded.shape == (3, 3, 32, 32) and 0 <= float(seeded.min()) and float(seeded.max()) <= 1


@pytest.mark.parametrize("call, message", [
    (lambda m, t: m.encode(torch.rand(1, 3, 32, 32), num_tokens=0), r"num_tokens must lie in \[1, 8\]"),
    (lambda m, t: m.decode(torch.zeros(1, 9, dtype=torch.long)), "1 <= N <= 8"),
    (lambda m, t: m.decode(t, steps=0), "steps must be at least 1"),
    (lambda m, t: m.decode(t, noise=torch.zeros(1, 4, 8, 8)), r"noise must have shape \(1, 4, 16, 16\)"),
    (lambda m, t: m.decode(t, n_q=2), "n_q"),
    (lambda m, t: m.decode(torch.full((1, 2), 64000)), r"codes must lie in \[0, 64000\)"),
])
def test_bad_input_gets_a_clear_error(tiny, call, message):
    tokens = tiny.encode(torch.rand(1, 3, 32, 32), num_tokens=2)
    with pytest.raises(TokenizerError, match=message):
        call(tiny, tokens)


def test_registered_names_licence_and_options():
    names = zoo.list_models("flextok-*")
    assert names == ["flextok-d12-d12-in1k", "flextok-d18-d18-in1k", "flextok-d18-d28-dfn", "flextok-d18-d28-in1k"]
    entry = zoo.model_entry("flextok-d18-d28-in1k")
    assert entry.source.repo_id == "EPFL-VILAB/flextok_d18_d28_in1k" and entry.source.config_filename == "config.json"
    assert "research use only" in entry.license
    decode = FlexTok.declared_options("decode")
    assert (decode["steps"].default, decode["guidance_scale"].default, decode["norm_guidance"].default) == (20, 7.5, True)
    assert "num_tokens" in FlexTok.declared_options("encode")


# ---- training ---------------------------------------------------------------------------------

def test_flow_regime_pieces(photos):
    from zoo.teachers.vision import RandomVisionTeacher
    from zoo.training.flow import FlowDecoderTraining
    from zoo.training.terms.image import HierarchicalSemantic, PatchAlignment, strength_along_sequence

    weights = strength_along_sequence("linear", 5, 0.2)
    assert weights[0] == 1 and weights[-1] == pytest.approx(0.2) and bool((weights.diff() < 0).all())
    module = FlowDecoderTraining(tokenizer="flextok-d12-d12-in1k", tokenizer_overrides=TINY, redundant_padding=1.0,
                                 semantic_terms=[HierarchicalSemantic(RandomVisionTeacher(dim=12), weight=0.5),
                                                 PatchAlignment(RandomVisionTeacher(dim=12), weight=0.1)])
    assert module.sample_kept(6).tolist() == [8] * 6  # redundant padding 1: every image keeps all tokens
    assert not any(p.requires_grad for p in module.tokenizer.vae.parameters())
    live(module.tokenizer).train()  # adaLN-zero: at init nothing downstream depends on the tokens yet
    step = module.generator_step(photos, adversarial=False)
    assert {"flow", "semantic", "repa", "kept_tokens"} <= set(step.logs) and torch.isfinite(step.loss)
    step.loss.backward()
    assert module.semantic_terms[0].project[0].weight.grad is not None
    assert module.tokenizer.encoder.head.weight.grad.abs().sum() > 0
    with pytest.raises(TokenizerError, match="not a flow-decoder tokenizer"):
        FlowDecoderTraining(tokenizer="onedpiece-l-256")


def one_step_latent_error(model: FlexTok, images: torch.Tensor, counts, seeds=(0, 1)) -> dict[int, float]:
    """Mean squared error, in VAE-latent space, of the decoder's one-step estimate of the clean
    latents from pure noise given the first k tokens (a 1-step decode), averaged over noise draws."""
    from zoo.models.image.flow_sampling import sample_rectified_flow

    with torch.no_grad():
        latents = model.image_latents(images)
        quantized = model.quantizer.codes_to_latents(model.quantizer.encode(model.encoder(latents)))
        errors = {}
        for k in counts:
            keep = torch.full((images.shape[0],), k)
            total = 0.0
            for seed in seeds:
                noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
                estimate = sample_rectified_flow(model.velocity_field(quantized, keep), noise, 1)
                total += torch.nn.functional.mse_loss(estimate, latents).item()
            errors[k] = total / len(seeds)
    return errors


@pytest.mark.slow
def test_tiny_recipe_trains_and_more_tokens_reconstruct_better(tmp_path):
    """recipes/flextok/tiny.yaml through `zoo fit`: the flow loss falls, and the decoder's estimate of
    an image's latents improves as the token prefix grows (nested dropout ordered the tokens)."""
    from PIL import Image
    from skimage import data

    from zoo.training.cli import main
    from zoo.training.image_data import ImageCrops, list_image_files

    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):  # five fixed 32x32 photos
        im = Image.fromarray(getattr(data, name)()).convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im.crop((left, top, left + side, top + side)).resize((32, 32), Image.BICUBIC).save(images / f"{name}.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cli = main(["fit", "--config", str(RECIPES / "flextok" / "tiny.yaml"), "--data.init_args.train_dir", str(images),
                    "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    finally:
        torch.set_num_threads(threads)
    model = cli.model.trained_tokenizer().eval()
    crops = ImageCrops(list_image_files(images), 32, random_crop=False)
    x = torch.stack([crops[i] for i in range(len(crops))])
    errors = one_step_latent_error(model, x, (1, 4, 16))
    assert np.isfinite(float(cli.trainer.callback_metrics["val/flow"]))
    # measured at k = 1 / 4 / 16 (2 threads), seed_everything 0: 0.254 / 0.231 / 0.233, 1: 0.799 / 0.786 / 0.783,
    # 2: 0.484 / 0.430 / 0.421. At seed 1 the tiny encoder's codes collapse early and the gains are only
    # 1.6-2%, so the bars (1% below k = 1) are set under that worst case; the recipe runs seed 0.
    assert errors[4] < 0.99 * errors[1] and errors[16] < 0.99 * errors[1], errors


def test_zoo_eval_sweeps_token_counts_with_sampler_options(tmp_path, tiny, photos, capsys):
    """`zoo eval --num-tokens 1,4,8 --steps 2 --seed 3` on a saved FlexTok: one row per count, the
    decode options in the report, and the same numbers as decoding with those options by hand."""
    from zoo.cli import main
    from zoo.eval.image_metrics import psnr
    from zoo.io import read_image, write_image

    folder = tiny.save_pretrained(tmp_path / "tok")
    assert torch.equal(zoo.load(str(folder)).encode(photos).codes, tiny.encode(photos).codes)
    data = tmp_path / "images"
    data.mkdir()
    for i, image in enumerate(photos):
        write_image(data / f"{i}.png", image)
    assert main(["eval", "--model", str(folder), "--data", str(data), "--num-tokens", "1,4,8", "--steps", "2",
                 "--seed", "3", "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["setting"]["tokens"] for row in report["rows"]] == [1, 4, 8]
    assert any("seed=3" in note and "steps=2" in note for note in report["notes"])
    x = torch.stack([read_image(data / f"{i}.png", size=32) for i in range(3)])
    by_hand = psnr(x, tiny.decode(tiny.encode(x, num_tokens=4), steps=2, seed=3)).mean().item()
    assert report["rows"][1]["metrics"]["psnr"] == pytest.approx(by_hand, abs=1e-3)
    assert main(["eval", "--model", str(folder), "--data", str(data), "--opt", "stepz=2"]) != 0
    assert "did you mean 'steps'" in capsys.readouterr().err


def test_retok_tiny_recipe_semantic_term_decreases(tmp_path):
    """recipes/flextok/retok-tiny.yaml: redundant token padding and hierarchical semantic
    regularization train together with the flow loss, and the semantic term falls."""
    from test_image_training import _read_metrics, _series, write_sample_images

    from zoo.training.cli import main

    images = write_sample_images(tmp_path / "images", size=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cli = main(["fit", "--config", str(RECIPES / "flextok" / "retok-tiny.yaml"), "--data.init_args.train_dir",
                    str(images), "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "120",
                    "--trainer.val_check_interval", "120", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                    "--trainer.logger.save_dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    rows = _read_metrics(tmp_path)
    semantic, kept = _series(rows, "train/semantic"), _series(rows, "train/kept_tokens")
    assert len(semantic) >= 100
    first, last = np.mean(semantic[:10]), np.mean(semantic[-20:])
    assert last < 0.8 * first, (first, last)
    assert np.mean(kept) > 0.55 * 16  # uniform nested dropout alone averages 8.5 of 16; padding raises it
    assert type(cli.model.semantic_terms[0].teacher).__name__ == "RandomVisionTeacher"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (RECIPES / "flextok").glob("*.yaml")))
def test_flextok_recipes_parse(recipe, capsys):
    """Every FlexTok recipe names only arguments the module, data module and trainer take."""
    from zoo.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(RECIPES / "flextok" / recipe), "--print_config"])
    assert e.value.code == 0, capsys.readouterr().err[-2000:]
    assert "zoo.training.flow.FlowDecoderTraining" in capsys.readouterr().out


def test_training_from_scratch_takes_a_pretrained_vae_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from zoo.training.flow import FlowDecoderTraining

    config = dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, latent_channels=4,
                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, scaling_factor=0.7)
    torch.manual_seed(2)
    reference = live(diffusers.AutoencoderKL(**config))
    reference.save_pretrained(tmp_path / "vae")
    module = FlowDecoderTraining(tokenizer="flextok-d12-d12-in1k", tokenizer_overrides={**TINY, "vae_scaling_factor": 0.7},
                                 vae_folder=str(tmp_path / "vae"))
    assert torch.equal(module.tokenizer.vae.decoder.conv_out.weight, reference.decoder.conv_out.weight)
    with pytest.raises(TokenizerError, match="scaling_factor 0.7"):
        FlowDecoderTraining(tokenizer="flextok-d12-d12-in1k", tokenizer_overrides=TINY, vae_folder=str(tmp_path / "vae"))
