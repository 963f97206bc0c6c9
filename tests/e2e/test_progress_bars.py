"""Every long job shows a tqdm bar with a known length: synthetic data, ``prepare``, ``check --verify``,
evaluation embedding, landmark descriptors, whitening learning and index building (training's bar is in
:mod:`engine.trainer`). A recording ``tqdm`` stands in for the real one and writes to a string, never to a log.

Bars go to stderr only: ``train.log`` never holds one (tests/e2e/test_train_and_query.py). On a non-tty the
evaluation and landmark bars hide themselves (``disable=None``), since they are short next to the run.
"""
from __future__ import annotations

import importlib
import io

import pytest
import torch
import tqdm as tqdm_module

import data
import data.prepare
import data.synth
import data.verify
import engine.catalogue
import models
from tests.e2e.cli import run_test_cli
from tests.index.conftest import save_checkpoint, write_catalogue

REAL = tqdm_module.tqdm
EMBED = importlib.import_module("evaluation.embed")  # the package exports a function of that name


@pytest.fixture
def bars(monkeypatch):
    """The bars created while the test runs: ``{"desc", "total", "disable", "n"}`` each (``n``: final count)."""
    made: list[dict] = []

    class Recording(REAL):
        def __init__(self, iterable=None, *args, **kw):
            total = kw.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
            self.record = {"desc": kw.get("desc"), "total": total, "disable": kw.get("disable", False), "n": 0}
            made.append(self.record)
            super().__init__(iterable, *args, **{**kw, "file": io.StringIO()})

        def update(self, n=1):
            self.record["n"] += n
            return super().update(n)

        def __iter__(self):
            for item in super().__iter__():
                self.record["n"] += 1
                yield item

    for module in (tqdm_module, data.synth, data.prepare, data.verify, engine.catalogue, EMBED):
        monkeypatch.setattr(module, "tqdm", Recording)
    return made


def named(bars: list[dict], prefix: str) -> list[dict]:
    return [b for b in bars if (b["desc"] or "").startswith(prefix)]


def test_synth_prepare_and_verify_show_bars(tmp_path, bars, monkeypatch):
    root = data.write_synthetic("folder", tmp_path / "raw", image_size=(24, 20), images_per_class=2, num_classes=3)
    images = sorted(p for p in root.rglob("*") if p.suffix in {".jpg", ".png"})
    [synth] = named(bars, "synth")
    assert synth["n"] == len(images) == 6  # counted per image (the layout decides how many; no total up front)

    data.prepare.prepare_dataset("folder", root, tmp_path / "prepared", size=16, workers=1)
    [prepare] = named(bars, "prepare")
    assert prepare["total"] == prepare["n"] == len(images) and prepare["disable"] is False

    monkeypatch.setattr(data.verify, "BAR_MIN_IMAGES", 5)
    assert data.verify.find_bad_images([str(p) for p in images], workers=1, use_cache=False) == {}
    assert data.verify.find_bad_images([str(p) for p in images[:4]], workers=1, use_cache=False) == {}
    verify = named(bars, "verify images")
    assert [(b["total"], b["n"], b["disable"]) for b in verify] == [(6, 6, False), (4, 4, True)]  # few: no bar


def test_evaluation_embedding_and_landmark_descriptors_show_bars(tmp_path, bars):
    from engine.evaluate import embed_dataset
    from evaluation.landmark import extract_landmark_descriptors

    root = data.write_synthetic("folder", tmp_path / "raw", image_size=(24, 20), images_per_class=2, num_classes=3)
    transform = data.build_transform("cgd", train=False, image_size=16, normalize=False)
    dataset = data.build_dataset("folder", root, "test", transform=transform)
    model = models.build_model("resnet18", "baseline", 8, 0)
    cfg = {"eval_batch_size": 4, "workers": 0, "channels_last": False}
    embed_dataset(model, dataset, cfg, torch.device("cpu"), None)
    [embed] = named(bars, "embed")
    assert embed["total"] == embed["n"] == -(-len(dataset) // 4) and embed["disable"] is None  # batches

    images = [(torch.rand(3, 16, 12), i) for i in range(3)]
    extract_landmark_descriptors(model, images, "cpu")
    [landmark] = named(bars, "descriptors")
    assert landmark["total"] == landmark["n"] == 3 and landmark["disable"] is None


def test_whitening_learning_shows_the_embedding_bar(tmp_path, bars):
    root = data.write_synthetic("folder", tmp_path / "raw", image_size=(24, 20), images_per_class=3, num_classes=3)
    code, _, err = run_test_cli(["--learn_whitening", str(tmp_path / "w.pth"), "--data_name", "folder", "--data_path",
                                 str(root), "--image_size", "16", "--backbone_type", "resnet18", "--head", "gem",
                                 "--feature_dim", "8", "--workers", "0", "--device", "cpu"])
    assert code == 0, err
    [embed] = named(bars, "embed")
    assert embed["total"] == embed["n"] >= 1


def test_index_build_shows_a_bar_unless_told_not_to(tmp_path, bars):
    import index as index_cli

    images = write_catalogue(tmp_path / "catalogue", per_class=2)
    checkpoint = save_checkpoint(tmp_path / "model_best.pth")
    base = ["build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "catalogue"), "--workers", "0",
            "--device", "cpu"]
    assert index_cli.main([*base, "--out", str(tmp_path / "index")]) == 0
    assert index_cli.main([*base, "--out", str(tmp_path / "quiet"), "--no_progress"]) == 0
    shown, quiet = named(bars, "embedding")
    assert shown["total"] == shown["n"] == len(images) and shown["disable"] is False
    assert quiet["disable"] is True
