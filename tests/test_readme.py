import re
import subprocess
import sys
from pathlib import Path

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
