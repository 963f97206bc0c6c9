"""The smoke mode's housekeeping: a fresh temporary folder per run (never a fixed /tmp path), no checkpoints
left behind by a row, and the folder removed at the end."""
import importlib.util
import tempfile
from pathlib import Path

import pytest

from metric_retrieval import data
from metric_retrieval.training.builders import build_sampler
from metric_retrieval.training.config import resolve_config

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


RECIPES = sorted(str(p.relative_to(REPO)) for family in ("abir", "cgd", "clf", "das", "vit")
                 for p in (REPO / "configs" / family).glob("*.yaml") if p.name != "base.yaml" or family == "das")


@pytest.mark.parametrize("config", RECIPES)
def test_the_smoke_datasets_give_every_recipe_its_steps(config, tmp_path):
    """The small smoke datasets (``tables.SMOKE_DATA``) still fill ``max_steps_per_epoch`` batches of the smoke
    batch size for each recipe's sampler; the DAS recipes name no dataset (their rows pass cub, cars and sop)."""
    cfg = resolve_config(["--config", config, "--data_path", "UNUSED"])  # as _smoke_rows resolves a row
    names = ["cub", "cars", "sop"] if cfg["data_name"] == "folder" else [cfg["data_name"]]
    cfg["batch_size"] = tables._smoke_batch(cfg)
    for name in names:
        root = tables.smoke_dataset(data.get_benchmark(name).name, tmp_path)
        labels = data.build_dataset(name, root, "train", verify_images=False).labels
        sampler = build_sampler(cfg, labels, rank=0, world_size=1)
        assert len(sampler) >= tables.SMOKE["max_steps_per_epoch"], (name, cfg["sampler"], cfg["batch_size"])
