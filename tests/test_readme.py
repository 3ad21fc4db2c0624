import re
import subprocess
import sys
from pathlib import Path

from test_journey import fake_hub  # noqa: F401  (the faked Hugging Face hub, a fixture)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_model_table_matches_the_registry():
    # A fresh process, so the test-only models registered by other test modules do not count.
    listed = subprocess.run([sys.executable, "-m", "zoo.cli", "list", "--markdown"], capture_output=True,
                            text=True, check=True).stdout.strip()
    table = README.split("<!-- model-table")[1].split("-->", 1)[1].split("<!-- end-model-table -->")[0].strip()
    assert table == listed, "README model table is stale: regenerate it with `zoo list --markdown`"


def test_two_setup_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"<!-- (main|test)-command -->\n```bash\n(.+)\n```", README)
    assert [kind for kind, _ in commands] == ["main", "test"]
    assert "zoo demo" in commands[0][1] and "pytest" in commands[1][1]
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


def journey_blocks() -> tuple[str, str]:
    """The README's journey: the bash block after the `<!-- journey` marker and the Python block after it."""
    after = README.split("<!-- journey")[1]
    bash = after.split("```bash\n", 1)[1].split("```", 1)[0]
    python = after.split("```python\n", 1)[1].split("```", 1)[0]
    return bash, python


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a bash block as argv: continuation lines joined, comments dropped."""
    import shlex

    lines = block.replace("\\\n", " ").splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


def test_the_journey_runs_as_written(tmp_path, monkeypatch, capsys, fake_hub, one_thread):
    """data -> fit -> eval -> export -> encode / decode -> push -> load, exactly as the README writes
    them (its quick-try sizes), in a fresh folder with the recipes; the hub is faked (test_journey)."""
    import importlib.util

    import zoo.training.image_set as image_set
    from zoo.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    monkeypatch.setattr(image_set, "WALLPAPER_DIR", tmp_path / "no-wallpapers")  # scikit-image's photos only, for speed
    bash, python = journey_blocks()
    commands = shell_commands(bash)
    assert [c[:2] for c in commands] == [["pip", "install"], ["zoo", "data"], ["zoo", "fit"], ["zoo", "eval"],
                                         ["zoo", "export"], ["zoo", "encode"], ["zoo", "decode"], ["zoo", "push"]]
    for argv in commands:
        if argv[0] == "pip":  # the set-up step: what it installs is here already
            assert argv[2].startswith("-e") and importlib.util.find_spec("skimage") is not None
            continue
        assert main(argv[1:]) == 0, (argv, capsys.readouterr().err[-2000:])
    out = capsys.readouterr().out
    assert "runs/onedpiece-tiny/version_0/checkpoints/last.ckpt" in out  # the path the README's next lines use
    assert "\n# my-tok\n" in (tmp_path / "out" / "my-tok" / "README.md").read_text()
    assert (tmp_path / "tok" / "skimage-astronaut-0.decoded.png").is_file()
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"] and fake_hub[0][1:3] == ("my-name/my-tok", True)
    exec(compile(python, "README.md (journey)", "exec"), {})
    assert "torch.Size([1, 3, 64, 64])" in capsys.readouterr().out


def test_readme_python_blocks_are_python_and_shell_blocks_are_shell():
    """A Python statement in a bash block (or the reverse) is a slip the reader copies."""
    import ast

    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        ast.parse(block)
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for argv in shell_commands(block):
            assert not re.match(r"^[\w.]+\(", argv[0]), f"Python in a bash block: {' '.join(argv)}"


def test_every_row_of_the_bad_input_table_names_a_test_that_exists():
    table = README.split("### What bad input gets")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    defined = set(re.findall(r"^def (test_\w+)", "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")),
                             flags=re.M))
    assert len(rows) >= 20
    for row in rows:
        named = re.findall(r"`(test_\w+)`", row)
        assert named, f"a bad-input row names no test: {row}"
        assert set(named) <= defined, f"{row} names tests that do not exist: {set(named) - defined}"
