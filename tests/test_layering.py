"""Imports flow one way (training -> hub -> models -> quantize | blocks | losses | teachers -> kernels),
shared helpers live in one place, and every public name of the library says what it is."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UP_FROM_MODELS = ("zoo.hub", "zoo.training", "zoo.eval", "zoo.cli", "zoo.demo")
UP_FROM_PARTS = UP_FROM_MODELS + ("zoo.models", "zoo.tokenizer", "zoo.card")
UP_FROM_KERNELS = UP_FROM_PARTS + ("zoo.quantize", "zoo.blocks", "zoo.losses", "zoo.teachers")
# (files, module prefixes they must not import, even inside a function); a bare `import zoo` /
# `from zoo import ...` reaches the whole package, the hub included, so it counts as upward everywhere
LAYERS = [
    (["zoo/tokenizer.py", "zoo/card.py", "zoo/tokens.py", "zoo/options.py", "zoo/inputs.py"],
     UP_FROM_MODELS + ("zoo.models",)),  # the base API that the families build on
    (["zoo/models"], UP_FROM_MODELS),
    (["zoo/quantize.py", "zoo/blocks", "zoo/losses", "zoo/teachers"], UP_FROM_PARTS),
    (["zoo/kernels"], UP_FROM_KERNELS),
]


def python_files(paths):
    for p in paths:
        path = ROOT / p
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


@pytest.mark.parametrize("paths, forbidden", LAYERS)
def test_no_module_imports_up_the_layers(paths, forbidden):
    upward = []
    for path in python_files(paths):
        for line, module in imported_modules(path):
            if module == "zoo" or module.startswith(forbidden):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from zoo.hub.registry import _REGISTRY\n    import zoo\n")
    assert [m for _, m in imported_modules(probe)] == ["zoo.hub.registry", "zoo"]


# methods that implement a hook their base class documents (torch, Lightning, the training skeleton, terms)
HOOKS = {"forward", "extra_repr", "train", "setup", "configure_optimizers", "configure_callbacks", "training_step",
         "validation_step", "train_dataloader", "val_dataloader", "generator_step", "discriminator_loss", "bind"}


def public_names_without_docstring(path: Path):
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not child.name.startswith("_"):
                hook = prefix and isinstance(child, ast.FunctionDef) and (child.name in HOOKS or child.name.startswith("on_"))
                if ast.get_docstring(child) is None and not hook:
                    yield f"{path.relative_to(ROOT)}:{child.lineno} {prefix}{child.name}"
                if isinstance(child, ast.ClassDef):
                    yield from walk(child, f"{prefix}{child.name}.")
    yield from walk(ast.parse(path.read_text()), "")


def test_every_public_class_and_function_has_a_docstring():
    files = list(python_files(["zoo", "hub"]))
    missing = [name for path in files for name in public_names_without_docstring(path)]
    assert not missing, "\n".join(missing)


def test_shared_helpers_live_in_one_place():
    import zoo.eval.runner
    import zoo.io
    import zoo.teachers.cache
    from zoo.losses import distillation
    from zoo.models.image.onedpiece import OneDPiece
    from zoo.tokens import lengths_to_mask

    assert zoo.teachers.cache.AUDIO_SUFFIXES is zoo.io.AUDIO_SUFFIXES is zoo.eval.runner.AUDIO_SUFFIXES
    assert distillation.lengths_to_mask is lengths_to_mask  # the training modules call D.lengths_to_mask
    import torch

    assert lengths_to_mask(torch.tensor([0, 2, 3]), 3).tolist() == [[False] * 3, [True, True, False], [True] * 3]
    assert not hasattr(OneDPiece, "sample_kept_lengths")  # tail token drop lengths are the training module's


def test_the_card_takes_licence_and_description_from_the_registered_entry(tmp_path):
    import zoo

    card = (zoo.create("zoo-speech-rvq-16k").save_pretrained(tmp_path / "m") / "README.md").read_text()
    entry = zoo.model_entry("zoo-speech-rvq-16k")
    assert "license: apache-2.0" in card and f"Licence of these weights: {entry.license}." in card
    assert entry.description in card
    from tiny_models import TinyImageConfig, TinyImageTokenizer

    unnamed = (TinyImageTokenizer(TinyImageConfig()).save_pretrained(tmp_path / "u") / "README.md").read_text()
    assert "Licence of these weights: unknown." in unnamed
