"""The smoke mode's housekeeping: a fresh temporary folder per run (never a fixed /tmp path), no checkpoints
left behind by a row, and the folder removed at the end."""
import importlib.util
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tables", REPO / "scripts" / "tables.py")
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)

ROW = ("tiny", "train", ["--data_name", "folder", "--backbone_type", "resnet18", "--head", "baseline", "--loss",
                         "multi_similarity", "--miner", "none", "--samples_per_class", "2"])


def test_a_row_leaves_no_checkpoints(tmp_path, capsys):
    assert tables._smoke_rows("t", [ROW], [], tmp_path) == 0
    assert "ok   t/tiny" in capsys.readouterr().out
    run = tmp_path / "runs" / "t" / "tiny"
    assert (run / "statistics.csv").is_file() and not list(run.glob("*.pth"))


def test_each_smoke_run_gets_its_own_folder_and_removes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory creates its folder
    seen = []
    monkeypatch.setattr(tables, "_smoke_rows", lambda table, rows, extra, cache: seen.append(cache) or 0)
    assert tables.smoke_run("t", [], []) == 0 and tables.smoke_run("t", [], []) == 0
    assert seen[0] != seen[1] and all(p.parent == tmp_path and p.name.startswith("metric_retrieval_smoke-")
                                      for p in seen)
    assert list(tmp_path.iterdir()) == []
