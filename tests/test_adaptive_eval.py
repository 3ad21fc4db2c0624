"""`zoo eval --quality`: the rate-quality report of an adaptive tokenizer (zoo.eval.adaptive), on a tiny random
KARL and a folder of flat and noise images, beside the embedded One-D-Piece at fixed token counts."""
import json

import pytest
import torch
from PIL import Image

import zoo
from zoo.cli import main
from zoo.io import read_image, write_image
from zoo.models.image.karl import KARL, KARLConfig

TARGETS = (0.05, 0.1, 0.2)
COMPARE = "zoo-image-onedpiece-64"  # embedded: loads offline in milliseconds


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_karl() -> KARL:
    """The tiny KARL of tests/test_karl.py (image 32, 16 tokens, widths 32, depth 1), its halting head drawn
    so that some tokens halt, and (at this seed) how many depends on the image and the target."""
    config = KARLConfig(image_size=32, num_tokens=16, encoder_width=32, encoder_depth=1, encoder_heads=2,
                        decoder_width=32, decoder_depth=1, decoder_heads=2, codebook_size=64, proxy_codebook_size=64,
                        proxy_code_dim=16, pixel_decoder_channels=32, pixel_decoder_channel_mult=(1, 1, 1, 1, 1),
                        pixel_decoder_res_blocks=1)
    torch.manual_seed(2)
    model = KARL(config).eval()
    with torch.no_grad():
        model.encoder.quality_embeddings.normal_()
        head = model.encoder.halting_head
        head[0].weight.normal_(0.0, 0.3)
        head[2].weight.normal_(0.0, 0.3)
        head[2].bias.fill_(1.5)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(KARL folder, image folder): two flat colours and two uniform-noise images, 32 x 32 PNGs."""
    tmp = tmp_path_factory.mktemp("adaptive")
    folder = tiny_karl().save_pretrained(tmp / "karl")
    g = torch.Generator().manual_seed(0)
    for i, colour in enumerate([(0.2, 0.5, 0.8), (0.9, 0.1, 0.1)]):
        write_image(tmp / "images" / f"flat{i}.png", torch.tensor(colour)[:, None, None].expand(3, 32, 32))
    for i in range(2):
        write_image(tmp / "images" / f"noise{i}.png", torch.rand(3, 32, 32, generator=g))
    return folder, tmp / "images"


def table_rows(out: str) -> list[dict]:
    """The printed table as {column: cell} per row (cells hold no spaces)."""
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith(("note:", "report ->", "plot ->"))]
    header = lines[0].split()
    return [dict(zip(header, line.split(), strict=True)) for line in lines[1:]]


def test_eval_quality_reports_the_tokens_chosen_the_error_reached_png_sizes_and_a_plot(setup, tmp_path, capsys):
    folder, images = setup
    report_file, plot_file = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["eval", "--model", str(folder), "--data", str(images), "--quality", ",".join(map(str, TARGETS)),
                 "--json", str(report_file), "--plot", str(plot_file), "--compare", COMPARE]) == 0
    printed = table_rows(capsys.readouterr().out)
    report = json.loads(report_file.read_text())
    model = zoo.load(str(folder))
    files = sorted(images.iterdir())
    x = torch.cat([read_image(f, size=32)[None] for f in files])
    rows = [r for r in report["rows"] if "quality" in r["setting"]]
    assert [r["setting"]["quality"] for r in rows] == list(TARGETS)
    chosen_by_target = []
    for q, row, line in zip(TARGETS, rows, printed):
        with torch.no_grad():
            tokens = [model.encode(x[i:i + 1], quality=q) for i in range(len(files))]
            recon = torch.cat([model.decode(t) for t in tokens])
        lengths = [int(t.lengths[0]) for t in tokens]
        chosen_by_target.append(lengths)
        m = row["metrics"]
        mean = sum(lengths) / len(lengths)
        assert m["tokens_mean"] == pytest.approx(mean) and line["tokens_mean"] == f"{mean:.4g}"
        assert (m["tokens_min"], m["tokens_max"]) == (min(lengths), max(lengths))
        assert m["tokens_std"] == pytest.approx(torch.tensor(lengths, dtype=torch.float64).std(unbiased=False).item())
        assert [e["by_quality"][str(q)]["tokens"] for e in report["images"]] == lengths
        l1 = (x.double() - recon.double()).abs().flatten(1).mean(1)
        assert m["l1"] == pytest.approx(l1.mean().item(), rel=1e-5)
        assert m["met_target"] == pytest.approx((l1 <= q).double().mean().item())
        mse = (x.double() - recon.double()).pow(2).flatten(1).mean(1)
        assert m["psnr"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), rel=1e-5)
        assert m["encoder_passes"] == 1 and m["decoder_passes"] == 1  # KARL records none: one pass each
    assert len({tuple(c) for c in chosen_by_target}) > 1 and any(len(set(c)) > 1 for c in chosen_by_target)
    # complexity: noise compresses far worse than a flat colour
    sizes = {e["file"]: e["png_bytes"] for e in report["images"]}
    assert min(sizes["noise0.png"], sizes["noise1.png"]) > 5 * max(sizes["flat0.png"], sizes["flat1.png"]) > 0
    # the fixed-count rows: each target's mean tokens is among the counts, the L1 that of the compared model
    fixed = {r["setting"]["num_tokens"]: r["metrics"] for r in report["rows"] if "num_tokens" in r["setting"]}
    assert {round(r["metrics"]["tokens_mean"]) for r in rows} <= set(fixed) and {1, 64} <= set(fixed)
    compare = zoo.load(COMPARE)
    k = round(rows[0]["metrics"]["tokens_mean"])
    with torch.no_grad():
        y = torch.cat([read_image(f, size=64)[None] for f in files])
        l1 = (y.double() - compare.decode(compare.encode(y, num_tokens=k)).clamp(0, 1).double()).abs().mean()
    assert fixed[k]["l1"] == pytest.approx(l1.item(), rel=1e-4)
    assert [line["method"] for line in printed] == [str(folder)] * 3 + [COMPARE] * len(fixed)
    # the plot: a PNG that opens
    data = plot_file.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with Image.open(plot_file) as image:
        image.verify()
    with Image.open(plot_file) as image:
        assert image.size[0] > image.size[1] > 100  # two panels side by side


def test_a_non_adaptive_model_and_a_bad_target_get_one_clear_sentence(setup, tmp_path, capsys):
    folder, images = setup
    report_file = tmp_path / "r.json"
    assert main(["eval", "--model", COMPARE, "--data", str(images), "--quality", "0.1", "--json", str(report_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: {COMPARE} is not an adaptive tokenizer (its info has no quality entry)")
    assert len(err.strip().splitlines()) == 1
    assert main(["eval", "--model", str(folder), "--data", str(images), "--quality", "0.1,0.5",
                 "--json", str(report_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: --quality 0.5 is outside the range {folder} takes, [0, 0.38]")
    assert len(err.strip().splitlines()) == 1 and not report_file.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", str(folder), "--data", str(images), "--quality", "0.1,good"])
    assert exit_.value.code == 2 and "expected comma-separated numbers, got '0.1,good'" in capsys.readouterr().err
    assert main(["eval", "--model", str(folder), "--data", str(images), "--quality", "0.1", "--num-tokens", "4"]) == 1
    assert "leave out --num-tokens" in capsys.readouterr().err
    assert main(["eval", "--model", str(folder), "--data", str(images), "--compare", COMPARE]) == 1
    assert "--search and --compare go with --quality" in capsys.readouterr().err
    # KARL declares no search: the model's own check names what it takes
    assert main(["eval", "--model", str(folder), "--data", str(images), "--quality", "0.1", "--search", "binary"]) == 1
    err = capsys.readouterr().err
    assert "karl has no encode option 'search'" in err and "its encode options are num_tokens, quality." in err
