"""TiTok / One-D-Piece: registered names, variable length, training pass, official-layout converter.

Numerical parity with the official code (random weights) is checked outside the test suite
(it needs the official code); here the converter is checked against the official key layout,
written out below by hand from the official model definition.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.errors import CheckpointError, TokenizerError, WeightsUnavailableError
from zoo.hub.image_titok import convert_official_titok
from zoo.hub.registry import _load_checkpoint
from zoo.models.image.onedpiece import OneDPiece, OneDPieceConfig
from zoo.models.image.titok import TiTok, TiTokConfig

TITOK_NAMES = ["titok-l-32", "titok-b-64", "titok-s-128", "titok-bl-64-vq", "titok-bl-128-vq", "titok-sl-256-vq",
               "titok-ll-32-vae", "titok-bl-64-vae", "titok-bl-128-vae"]
ONEDPIECE_NAMES = ["onedpiece-s-256", "onedpiece-b-256", "onedpiece-l-256"]
# small enough to run anything: 32x32 images, 4x4 patch grid, 8 tokens
TINY = dict(image_size=32, patch_size=8, num_tokens=8, encoder_width=32, encoder_depth=2, encoder_heads=2,
            decoder_width=32, decoder_depth=2, decoder_heads=2, token_dim=4, codebook_size=16,
            proxy_codebook_size=16, proxy_code_dim=32, pixel_decoder_channels=32,
            pixel_decoder_channel_mult=(1, 1, 2, 2))


def tiny(kind: str = "two_stage", cls=TiTok, **fields):
    config_class = OneDPieceConfig if cls is OneDPiece else TiTokConfig
    variant = {"two_stage": dict(latent_reshape_without_permute=True),
               "vq": dict(decoder_output="pixels", codebook_distance="euclidean"),
               "vae": dict(bottleneck="vae", decoder_output="pixels")}[kind]
    model = cls(config_class(**{**TINY, **variant, **fields})).eval()
    with torch.no_grad():  # unit-scale weights: with the 0.02-std init every token barely matters
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn_like(p) * p[0].numel() ** -0.5)
    return model


def images(batch=2, size=32):
    return torch.rand(batch, 3, size, size)


def test_every_name_is_registered_with_a_source_and_converter():
    assert zoo.list_models("titok-*") == sorted(TITOK_NAMES)
    assert zoo.list_models("onedpiece-*") == sorted(ONEDPIECE_NAMES)
    for name in TITOK_NAMES + ONEDPIECE_NAMES:
        entry = zoo.model_entry(name)
        assert entry.source is not None and entry.converter is convert_official_titok
        assert entry.license == "Apache-2.0"
        assert entry.config.image_size == 256
    assert zoo.model_entry("titok-l-32").source.repo_id == "yucornetto/tokenizer_titok_l32_imagenet"
    assert zoo.model_entry("onedpiece-l-256").source.filename == "pytorch_model.bin"
    assert zoo.model_entry("titok-l-32").config.latent_reshape_without_permute
    assert not zoo.model_entry("titok-bl-64-vq").config.latent_reshape_without_permute


@pytest.mark.parametrize("name", TITOK_NAMES + ONEDPIECE_NAMES)
def test_every_name_encodes_and_decodes_256(name):
    # the registered config (token count, codebook, bottleneck, heads, switches) at 256x256, with
    # narrow one-layer ViTs and pixel decoder so that the whole list runs in seconds; the real
    # sizes run in test_every_name_full_size
    narrow = dict(encoder_width=64, encoder_depth=1, encoder_heads=2, decoder_width=64, decoder_depth=1,
                  decoder_heads=2, pixel_decoder_channels=32, pixel_decoder_channel_mult=(1, 1, 1, 1, 1))
    model = zoo.create(name, **narrow)
    config = model.config
    tokens = model.encode(images(2, 256))
    if config.bottleneck == "vq":
        assert tokens.codes.shape == (2, config.num_tokens) and tokens.codes.dtype == torch.long
        assert int(tokens.codes.max()) < config.codebook_size
    else:
        assert tokens.codes.shape == (2, 0) and tokens.latents.shape == (2, config.num_tokens, 16)
    out = model.decode(tokens)
    assert out.shape == (2, 3, 256, 256) and 0 <= float(out.min()) and float(out.max()) <= 1


# one name per decoder kind (proxy codes, VQ pixels, VAE pixels; One-D-Piece) runs at its full widths;
# every other name's full widths are built on the meta device (building the large ones takes ~10 s each)
FULL_SIZE_RUNS = ["titok-s-128", "titok-bl-64-vq", "titok-bl-64-vae", "onedpiece-s-256"]


def test_every_name_builds_at_full_size():
    for name in TITOK_NAMES + ONEDPIECE_NAMES:
        with torch.device("meta"):
            model = zoo.create(name)
        config = model.config
        assert model.encoder.latent_tokens.shape == (config.num_tokens, config.encoder_width), name
        assert sum(p.numel() for p in model.parameters()) > 10_000_000, name


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE_RUNS)
def test_every_name_full_size(name):
    model = zoo.create(name)
    tokens = model.encode(images(1, 256))  # one image: the shapes are the point, and full size is slow on CI
    n = model.config.num_tokens
    assert (tokens.codes.shape == (1, n)) if model.config.bottleneck == "vq" else (tokens.latents.shape[:2] == (1, n))
    assert model.decode(tokens).shape == (1, 3, 256, 256)


# ---- variable length ----------------------------------------------------------------------

def test_prefix_encoding_keeps_the_leading_codes():
    model = tiny(cls=OneDPiece)
    x = images()
    full = model.encode(x)
    assert full.lengths is None and full.codes.shape == (2, 8)
    short = model.encode(x, num_tokens=3)
    assert short.codes.shape == (2, 3) and short.lengths.tolist() == [3, 3]
    assert torch.equal(short.codes, full.codes[:, :3])
    mixed = model.encode(x, num_tokens=torch.tensor([2, 5]))
    assert mixed.codes.shape == (2, 5) and mixed.lengths.tolist() == [2, 5]
    assert torch.equal(mixed.codes[1], full.codes[1, :5]) and torch.equal(mixed.codes[0, :2], full.codes[0, :2])
    assert mixed.codes[0, 2:].eq(0).all()  # padding


def latents_of(model, tokens):
    return tokens.latents if model.quantizer is None else model.quantizer.codes_to_latents(tokens.codes)


@pytest.mark.parametrize("kind", ["two_stage", "vq", "vae"])
def test_batch_with_per_image_lengths_decodes_like_each_prefix_alone(kind):
    model = tiny(kind, cls=OneDPiece)
    x = images(3)
    tokens = model.encode(x, num_tokens=torch.tensor([1, 4, 8]))
    latents = latents_of(model, tokens)
    batch = model.decode_latents(latents, tokens.lengths)  # unclamped: random weights leave [0, 1]
    api = model.decode(tokens)
    for i, k in enumerate([1, 4, 8]):
        alone = model.decode_latents(latents[i:i + 1, :k])
        # The batch runs attention over a padded sequence, the image alone over its own prefix: fp32
        # sums in another order, then amplified by the pixel decoder's convolutions. Measured over 6
        # seeds at 1 and 2 threads: at most 7e-6 of the output's scale; leaked padding gives ~1e-1.
        atol = 1e-4 * float(alone.abs().max().clamp(min=1))
        torch.testing.assert_close(batch[i:i + 1], alone, atol=atol, rtol=0)
        torch.testing.assert_close(api[i:i + 1], alone.clamp(0, 1), atol=atol, rtol=0)
    # a prefix is not the full decode: the tail tokens carry information
    full = latents_of(model, model.encode(x))
    assert (model.decode_latents(full[:, :2]) - model.decode_latents(full)).abs().max() > 1e-3


def test_decode_accepts_a_plain_prefix_of_codes():
    model = tiny()
    codes = model.encode(images()).codes
    out = model.decode(codes[:, :5])
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(TokenizerError, match="1 <= N <= 8"):
        model.decode(torch.zeros(2, 9, dtype=torch.long))


def test_bad_token_counts_are_clear_errors():
    model = tiny()
    for bad in (0, 9, torch.tensor([1, 9])):
        with pytest.raises(TokenizerError, match=r"num_tokens must lie in \[1, 8\]"):
            model.encode(images(), num_tokens=bad)
    with pytest.raises(TokenizerError, match=r"\(B,\)"):
        model.encode(images(), num_tokens=torch.tensor([1, 2, 3]))
    with pytest.raises(TokenizerError, match="32x32"):
        model.encode(images(2, 64))


# ---- training pass ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["two_stage", "vq", "vae"])
def test_forward_trains_with_tail_token_drop(kind):
    model = tiny(kind, cls=OneDPiece).train()
    x = images()
    out = model(x, num_tokens=torch.tensor([3, 8]))
    assert out.reconstruction.shape == x.shape and out.aux_loss.ndim == 0
    assert torch.isfinite(out.aux_loss)
    assert out.codes.shape == ((2, 8) if kind != "vae" else (2, 0))
    (F.mse_loss(out.reconstruction, x) + out.aux_loss).backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert model.decoder.token_embed.weight.grad.abs().sum() > 0
    if kind == "vae":
        assert out.aux_loss > 0  # the KL term


def test_vae_tokens_are_the_posterior_mode():
    model = tiny("vae")
    x = images()
    a, b = model.encode(x), model.encode(x)
    assert torch.equal(a.latents, b.latents)  # no sampling at encode
    mean = model.encoder(x)[..., :4]
    torch.testing.assert_close(a.latents, mean)
    with pytest.raises(TokenizerError, match="latents"):
        model.decode(zoo.Tokens(a.codes))


def test_reshape_without_permute_is_the_old_memory_order():
    # the old checkpoints read the (B, N, W) encoder output as if it were (B, W, N)
    model = tiny(latent_reshape_without_permute=True)
    x = images()
    enc = model.encoder
    captured = {}
    enc.norm_post.register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    out = enc(x)
    h = captured["h"]  # (B, N, W)
    expected = torch.einsum("bwn,cw->bnc", h.reshape(2, 32, 8), enc.to_token.weight) + enc.to_token.bias
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    enc.latent_reshape_without_permute = False
    assert not torch.allclose(enc(x), expected, atol=1e-3)


# ---- converter from the official layout -----------------------------------------------------

def official_layout(config: TiTokConfig) -> dict[str, tuple]:
    """Key -> shape of the official TiTok / One-D-Piece state dict (modeling/titok.py,
    modules/blocks.py, modules/maskgit_vqgan.py), written out by hand."""
    c = config
    g2 = (c.image_size // c.patch_size) ** 2
    shapes = {"latent_tokens": (c.num_tokens, c.encoder_width)}

    def vit(prefix, width, depth):
        out = {}
        for i in range(depth):
            p = f"{prefix}.transformer.{i}."
            out.update({p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                        p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                        p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                        p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                        p + "mlp.c_fc.weight": (4 * width, width), p + "mlp.c_fc.bias": (4 * width,),
                        p + "mlp.c_proj.weight": (width, 4 * width), p + "mlp.c_proj.bias": (width,)})
        for ln in ("ln_pre", "ln_post"):
            out.update({f"{prefix}.{ln}.weight": (width,), f"{prefix}.{ln}.bias": (width,)})
        out.update({f"{prefix}.class_embedding": (1, width), f"{prefix}.positional_embedding": (g2 + 1, width),
                    f"{prefix}.latent_token_positional_embedding": (c.num_tokens, width)})
        return out

    ew, dw = c.encoder_width, c.decoder_width
    out_dim = c.token_dim * (2 if c.bottleneck == "vae" else 1)
    shapes.update(vit("encoder", ew, c.encoder_depth))
    shapes.update({"encoder.patch_embed.weight": (ew, 3, c.patch_size, c.patch_size), "encoder.patch_embed.bias": (ew,),
                   "encoder.conv_out.weight": (out_dim, ew, 1, 1), "encoder.conv_out.bias": (out_dim,)})
    shapes.update(vit("decoder", dw, c.decoder_depth))
    shapes.update({"decoder.decoder_embed.weight": (dw, c.token_dim), "decoder.decoder_embed.bias": (dw,),
                   "decoder.mask_token": (1, 1, dw)})
    if c.decoder_output == "proxy_codes":
        k = c.proxy_codebook_size
        shapes.update({"decoder.ffn.0.weight": (2 * dw, dw, 1, 1), "decoder.ffn.0.bias": (2 * dw,),
                       "decoder.ffn.2.weight": (k, 2 * dw, 1, 1), "decoder.ffn.2.bias": (k,),
                       "pixel_quantize.embedding.weight": (k, c.proxy_code_dim)})
        widths = [c.pixel_decoder_channels * m for m in c.pixel_decoder_channel_mult]
        p = "pixel_decoder."
        shapes.update({p + "conv_in.weight": (widths[-1], c.proxy_code_dim, 3, 3), p + "conv_in.bias": (widths[-1],),
                       p + "norm_out.weight": (widths[0],), p + "norm_out.bias": (widths[0],),
                       p + "conv_out.weight": (3, widths[0], 3, 3), p + "conv_out.bias": (3,)})

        def resnet(q, cin, cout):
            r = {q + "norm1.weight": (cin,), q + "norm1.bias": (cin,), q + "conv1.weight": (cout, cin, 3, 3),
                 q + "norm2.weight": (cout,), q + "norm2.bias": (cout,), q + "conv2.weight": (cout, cout, 3, 3)}
            if cin != cout:
                r[q + "nin_shortcut.weight"] = (cout, cout, 1, 1)
            return r

        for j in range(c.pixel_decoder_res_blocks):
            shapes.update(resnet(f"{p}mid.{j}.", widths[-1], widths[-1]))
        for i in range(len(widths)):
            cin = widths[min(i + 1, len(widths) - 1)]
            for j in range(c.pixel_decoder_res_blocks):
                shapes.update(resnet(f"{p}up.{i}.block.{j}.", cin if j == 0 else widths[i], widths[i]))
            if i != 0:
                shapes.update({f"{p}up.{i}.upsample_conv.weight": (widths[i], widths[i], 3, 3),
                               f"{p}up.{i}.upsample_conv.bias": (widths[i],)})
    else:
        patch = c.patch_size ** 2 * 3
        shapes.update({"decoder.ffn.0.weight": (patch, dw, 1, 1), "decoder.ffn.0.bias": (patch,),
                       "decoder.conv_out.weight": (3, 3, 3, 3), "decoder.conv_out.bias": (3,)})
    if c.bottleneck == "vq":
        shapes["quantize.embedding.weight"] = (c.codebook_size, c.token_dim)
    return shapes


def synthetic_official(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in official_layout(config).items()}


def test_official_layout_of_the_real_s128_has_the_known_size():
    # 8+8 ViT layers of width 512 and the MaskGIT-VQGAN decoder; checks the hand-written layout too
    shapes = official_layout(zoo.model_entry("titok-s-128").config)
    assert "pixel_decoder.up.3.block.0.nin_shortcut.weight" in shapes  # 512 -> 256 channels at level 3
    assert shapes["encoder.conv_out.weight"] == (12, 512, 1, 1)


@pytest.mark.parametrize("kind", ["two_stage", "vq", "vae"])
def test_converter_maps_every_official_tensor(kind):
    model = tiny(kind)
    official = synthetic_official(model.config)
    ours = convert_official_titok(official, model.config)
    model.load_state_dict(ours, strict=True)  # every key, every shape
    enc_block = model.encoder.transformer.blocks[1]
    assert torch.equal(enc_block.attn.in_proj_weight, official["encoder.transformer.1.attn.in_proj_weight"])
    assert torch.equal(enc_block.mlp.fc2.weight, official["encoder.transformer.1.mlp.c_proj.weight"])
    assert torch.equal(model.encoder.latent_tokens, official["latent_tokens"])
    assert torch.equal(model.encoder.to_token.weight, official["encoder.conv_out.weight"][:, :, 0, 0])
    assert torch.equal(model.decoder.latent_position_embedding, official["decoder.latent_token_positional_embedding"])
    if kind == "two_stage":
        assert torch.equal(model.decoder.head[2].weight, official["decoder.ffn.2.weight"][:, :, 0, 0])
        shortcut = model.pixel_decoder.decoder.up[1].blocks[0].output_shortcut.weight
        assert torch.equal(shortcut, official["pixel_decoder.up.1.block.0.nin_shortcut.weight"])
        # the l2-normalized codebook is stored normalized; lookups give the official normalized rows
        rows = model.quantizer.codes_to_latents(torch.tensor([[0, 5]]))[0]
        torch.testing.assert_close(rows, F.normalize(official["quantize.embedding.weight"][[0, 5]], dim=-1))
    elif kind == "vq":
        rows = model.quantizer.codes_to_latents(torch.tensor([[3]]))[0]
        torch.testing.assert_close(rows, official["quantize.embedding.weight"][[3]])
        assert torch.equal(model.decoder.conv_out.weight, official["decoder.conv_out.weight"])
    model.encode(images())  # usable after conversion


def test_converter_lists_missing_unexpected_and_misshapen_keys():
    config = tiny().config
    official = synthetic_official(config)
    broken = dict(official)
    del broken["encoder.transformer.0.ln_1.weight"]
    broken["encoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        convert_official_titok(broken, config)
    assert "missing keys: encoder.transformer.0.ln_1.weight" in str(err.value)
    assert "unexpected keys: encoder.extra_head.weight" in str(err.value)
    wrong = dict(official, **{"quantize.embedding.weight": torch.zeros(17, 4)})
    with pytest.raises(CheckpointError, match=r"quantize.embedding.weight: file \(17, 4\) vs expected \(16, 4\)"):
        convert_official_titok(wrong, config)
    # a checkpoint of another variant (single-stage VQ) into a two-stage config
    with pytest.raises(CheckpointError, match="missing keys: .*pixel_"):
        convert_official_titok(synthetic_official(tiny("vq").config), config)


def test_load_reads_official_files_as_released(tmp_path):
    from safetensors.torch import save_file

    model = tiny(cls=OneDPiece)
    official = synthetic_official(model.config, seed=1)
    entry = dataclasses.replace(zoo.model_entry("onedpiece-s-256"), config=model.config)
    # One-D-Piece: a bare pytorch_model.bin; TiTok: the PyTorchModelHubMixin folder
    torch.save(official, tmp_path / "pytorch_model.bin")
    from_bin = _load_checkpoint(entry, tmp_path / "pytorch_model.bin")
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file(official, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model": {"vq_model": {"num_latent_tokens": 8}}}')
    from_folder = _load_checkpoint(entry, folder)
    x = images()
    assert torch.equal(from_bin.encode(x).codes, from_folder.encode(x).codes)
    assert not from_bin.training and torch.equal(from_bin.encoder.latent_tokens, official["latent_tokens"])


def test_named_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="yucornetto/tokenizer_titok_l32_imagenet"):
        zoo.load("titok-l-32")


@pytest.mark.parametrize("kind", ["two_stage", "vae"])
def test_save_pretrained_round_trip(kind, tmp_path):
    model = tiny(kind, cls=OneDPiece)
    model.save_pretrained(tmp_path / "m")
    again = zoo.load(tmp_path / "m")
    assert type(again) is OneDPiece and again.config == model.config
    x = images()
    a, b = model.encode(x, num_tokens=5), again.encode(x, num_tokens=5)
    assert torch.equal(a.codes, b.codes) and (a.latents is None or torch.equal(a.latents, b.latents))
    torch.testing.assert_close(model.decode(a), again.decode(b))
