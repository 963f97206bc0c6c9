"""Every long job shows a tqdm bar with a known length: training epochs, synthetic data, ``prepare``, ``check
--verify``, evaluation embedding, landmark descriptors, whitening learning and index building. A recording
``tqdm`` stands in for the real one and writes to a string.

Bars go to stderr only: ``train.log`` never holds one (tests/e2e/test_train_and_query.py). On a non-tty (as
pytest's stderr is) the bars redraw every 30 s (:mod:`metric_retrieval.utils.progress`); only ``check --verify`` of
fewer than 1000 files, which takes seconds, shows none.
"""
from __future__ import annotations

import importlib
import io

import pytest
import torch
import tqdm as tqdm_module

import metric_retrieval.data.prepare
import metric_retrieval.data.synth
import metric_retrieval.data.verify
import metric_retrieval.retrieval.catalogue
import metric_retrieval.training.trainer
from metric_retrieval import data, models
from metric_retrieval.utils.progress import NON_TTY_INTERVAL, bar_interval
from tests.e2e.cli import run_test_cli
from tests.index.conftest import save_checkpoint, write_catalogue

REAL = tqdm_module.tqdm
EMBED = importlib.import_module("metric_retrieval.evaluation.embed")  # the package exports a function of that name


@pytest.fixture
def bars(monkeypatch):
    """The bars created while the test runs: ``{"desc", "total", "disable", "n"}`` each (``n``: final count)."""
    made: list[dict] = []

    class Recording(REAL):
        def __init__(self, iterable=None, *args, **kw):
            total = kw.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
            self.record = {"desc": kw.get("desc"), "total": total, "disable": kw.get("disable", False), "n": 0,
                           "mininterval": kw.get("mininterval", 0.1)}
            made.append(self.record)
            super().__init__(iterable, *args, **{**kw, "file": io.StringIO()})

        def update(self, n=1):
            self.record["n"] += n
            return super().update(n)

        def __iter__(self):
            for item in super().__iter__():
                self.record["n"] += 1
                yield item

    for module in (tqdm_module, metric_retrieval.data.synth, metric_retrieval.data.prepare,
    metric_retrieval.data.verify, metric_retrieval.retrieval.catalogue, metric_retrieval.training.trainer, EMBED):
        monkeypatch.setattr(module, "tqdm", Recording)
    return made


def named(bars: list[dict], prefix: str) -> list[dict]:
    return [b for b in bars if (b["desc"] or "").startswith(prefix)]


def test_synth_prepare_and_verify_show_bars(tmp_path, bars, monkeypatch):
    root = data.write_synthetic("folder", tmp_path / "raw", image_size=(24, 20), images_per_class=2, num_classes=3)
    images = sorted(p for p in root.rglob("*") if p.suffix in {".jpg", ".png"})
    [synth] = named(bars, "synth")
    assert synth["n"] == len(images) == 6  # counted per image (the layout decides how many; no total up front)
    assert synth["mininterval"] == NON_TTY_INTERVAL

    metric_retrieval.data.prepare.prepare_dataset("folder", root, tmp_path / "prepared", size=16, workers=1)
    [prepare] = named(bars, "prepare")
    assert prepare["total"] == prepare["n"] == len(images) and prepare["disable"] is False
    assert prepare["mininterval"] == NON_TTY_INTERVAL

    monkeypatch.setattr(metric_retrieval.data.verify, "BAR_MIN_IMAGES", 5)
    assert metric_retrieval.data.verify.find_bad_images([str(p) for p in images], workers=1, use_cache=False) == {}
    assert metric_retrieval.data.verify.find_bad_images([str(p) for p in images[:4]], workers=1, use_cache=False) == {}
    verify = named(bars, "verify images")
    assert [(b["total"], b["n"], b["disable"]) for b in verify] == [(6, 6, False), (4, 4, True)]  # few: no bar


def test_evaluation_embedding_and_landmark_descriptors_show_bars(tmp_path, bars):
    from metric_retrieval.evaluation.landmark import extract_landmark_descriptors
    from metric_retrieval.training.evaluate import embed_dataset

    root = data.write_synthetic("folder", tmp_path / "raw", image_size=(24, 20), images_per_class=2, num_classes=3)
    transform = data.build_transform("cgd", train=False, image_size=16, normalize=False)
    dataset = data.build_dataset("folder", root, "test", transform=transform)
    model = models.build_model("resnet18", "baseline", 8, 0)
    cfg = {"eval_batch_size": 4, "workers": 0, "channels_last": False}
    embed_dataset(model, dataset, cfg, torch.device("cpu"), None)
    [embed] = named(bars, "embed")
    assert embed["total"] == embed["n"] == -(-len(dataset) // 4) and embed["disable"] is False  # batches
    assert embed["mininterval"] == NON_TTY_INTERVAL

    images = [(torch.rand(3, 16, 12), i) for i in range(3)]
    extract_landmark_descriptors(model, images, "cpu")
    [landmark] = named(bars, "descriptors")
    assert landmark["total"] == landmark["n"] == 3 and landmark["disable"] is False
    assert landmark["mininterval"] == NON_TTY_INTERVAL


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
    assert shown["mininterval"] == NON_TTY_INTERVAL
    assert quiet["disable"] is True


def test_bars_redraw_often_on_a_terminal_and_seldom_into_a_log():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert bar_interval(Terminal()) == 0.1
    assert bar_interval(io.StringIO()) == NON_TTY_INTERVAL == 30.0
    assert bar_interval(object()) == NON_TTY_INTERVAL  # a stream without isatty: not a terminal


def test_the_training_bar_counts_the_epochs_steps(tmp_path, bars):
    from metric_retrieval import losses
    from metric_retrieval.data.batch import DeviceInput
    from metric_retrieval.data.transforms import build_normalize
    from metric_retrieval.training.distributed import DistInfo
    from metric_retrieval.training.run_log import RunLog
    from metric_retrieval.training.trainer import TrainContext, train_one_epoch

    model = models.build_model("resnet18", "baseline", 8, 0)
    criterion = losses.build_criterion([{"name": "multi_similarity"}], num_classes=2, embedding_dim=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    cfg = {"amp": "off", "grad_clip": 0.0, "checkpoint_every": 0, "num_epochs": 1, "batch_size": 4,
           "output_dir": str(tmp_path)}
    ctx = TrainContext(cfg=cfg, model=model, train_model=model, criterion=criterion, optimizer=optimizer,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                       scaler=torch.amp.GradScaler("cpu", enabled=False), sampler=None, device=torch.device("cpu"),
                       dist=DistInfo(), num_classes=2, steps_per_epoch=2,
                       run_log=RunLog(tmp_path, cfg, enabled=False),
                       device_input=DeviceInput(torch.device("cpu"), build_normalize(model.input_spec), False))
    batch = (torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), torch.arange(4),
             None)
    train_one_epoch(ctx, [batch, batch, batch])
    [epoch] = named(bars, "epoch 1/1")
    assert epoch["total"] == epoch["n"] == 2 and epoch["disable"] is False and epoch["mininterval"] == NON_TTY_INTERVAL
