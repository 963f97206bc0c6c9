"""``scripts/quickstart.sh`` queries the run it trained: its own new folder, or the user's --output_dir."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Stands in for .venv/bin/python: records each call; ``-c`` (reading the database) prints a query path.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../../calls.txt"
if [ "$1" = -c ]; then echo /data/query.jpg; fi
"""


def quickstart(tmp_path: Path, *args: str) -> list[str]:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "quickstart.sh", root / "scripts")
    (root / "scripts" / "install.sh").write_text("true\n")
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    subprocess.run(["bash", str(root / "scripts" / "quickstart.sh"), *args], check=True, capture_output=True)
    return (root / "calls.txt").read_text().splitlines()


def test_output_dir_given_by_the_user_is_trained_and_queried(tmp_path):
    for args in (["--output_dir", "my/run", "--lr", "0.1"], ["--lr", "0.1", "--output_dir=my/run"]):
        train, read, query = quickstart(tmp_path / args[0].strip("-"), *args)
        assert train.startswith("-m metric_retrieval train --output_dir my/run ") and "--lr 0.1" in train
        assert read.endswith("my/run/database_best.pth")
        assert "--data_base my/run/database_best.pth" in query and "--output_dir my/run/retrieval" in query
        assert "--query_img_name /data/query.jpg" in query


def test_each_run_gets_a_new_folder(tmp_path):
    train, _, query = quickstart(tmp_path)
    run = train.split()[4]
    assert run.startswith("runs/quickstart-") and f"--data_base {run}/database_best.pth" in query
