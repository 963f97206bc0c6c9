"""Every run measures its untrained model first; the summary compares it with the selected epoch.

Also: ``--val_classes`` selection keeps the epoch with the best validation score and says how many classes
were held out; a resumed run keeps the first measurement instead of re-measuring a trained model.
"""
from __future__ import annotations

import logging

import pytest
import torch

from metric_retrieval import data
from metric_retrieval.training import resolve_config, train
from metric_retrieval.training import trainer as trainer_module
from metric_retrieval.training.trainer import Progress, _log_summary

TINY = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--max_steps_per_epoch", "2", "--batch_size",
        "16", "--amp", "off"]


def run(tmp_path, *argv):
    return train(resolve_config(["--output_dir", str(tmp_path), *TINY, *argv]))


def test_untrained_metrics_are_those_of_the_model_before_any_step(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "train_one_epoch", lambda ctx, loader: {"loss": 0.0, "lr": 0.0})
    result = run(tmp_path, "--num_epochs", "1", "--val_classes", "0.25")
    row = result["history"][0]
    for split in ("test", "val"):
        measured = result["untrained"][split]
        assert measured["recall@1"] == row[f"{split}_recall@1"] and measured["map@r"] == row[f"{split}_map@r"]
    classes = data.build_dataset("folder", str(data.ensure_default_dataset()), "train").num_classes
    log_text = (tmp_path / "train.log").read_text()
    assert f"held out {round(classes * 0.25)} of {classes} training classes" in log_text
    assert "untrained (before epoch 1): test/recall@1" in log_text
    assert f"test/recall@1: untrained {row['test_recall@1']:.4f} -> {row['test_recall@1']:.4f} (+0.0000)" in log_text
    assert "WORSE" not in log_text


def test_a_finished_run_leaves_the_logger_as_it_found_it(tmp_path, monkeypatch):
    """A library caller's later messages must not go to a finished run's train.log (whose folder may be gone)."""
    monkeypatch.setattr(trainer_module, "train_one_epoch", lambda ctx, loader: {"loss": 0.0, "lr": 0.0})
    logger = logging.getLogger("metric_retrieval")
    before = (list(logger.handlers), logger.level, logger.propagate)
    run(tmp_path / "run", "--num_epochs", "1")
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    size = (tmp_path / "run" / "train.log").stat().st_size
    logger.warning("after the run")
    assert (tmp_path / "run" / "train.log").stat().st_size == size


@pytest.mark.slow
def test_val_classes_select_the_epoch_with_the_best_validation_score(tmp_path):
    result = run(tmp_path, "--num_epochs", "3", "--val_classes", "0.25", "--lr", "1e-3")
    val = [r["val_recall@1"] for r in result["history"]]
    assert result["best_epoch"] == 1 + val.index(max(val))
    assert result["best"] == max(val)
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert best["epoch"] == result["best_epoch"]
    assert "the epoch is selected by val/recall@1" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_resumed_run_keeps_the_first_untrained_measurement(tmp_path, monkeypatch):
    first = run(tmp_path, "--num_epochs", "1")

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("a resumed run re-measured the untrained model")

    monkeypatch.setattr(trainer_module, "_evaluate_untrained", no_second_measurement)
    resumed = run(tmp_path, "--num_epochs", "2", "--resume", "latest")
    assert resumed["untrained"] == first["untrained"]


def summary_log(progress: Progress, caplog, pretrained: str | None = None) -> str:
    logger = logging.getLogger("metric_retrieval")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="metric_retrieval"):
            _log_summary(progress, "recall@1", "test", pretrained)
    finally:
        logger.removeHandler(caplog.handler)
    return caplog.text


@pytest.mark.parametrize("after, warned", [(0.40, True), (0.50, False), (0.60, False)])
def test_summary_warns_loudly_only_when_training_did_worse(after, warned, caplog):
    progress = Progress(best_epoch=2, history=[{"epoch": 1, "test_recall@1": 0.9, "test_map@r": 0.3},
                                               {"epoch": 2, "test_recall@1": after, "test_map@r": 0.2}],
                        untrained={"test": {"recall@1": 0.5, "map@r": 0.25}})
    summary_log(progress, caplog)
    assert f"test/recall@1: untrained 0.5000 -> {after:.4f} ({after - 0.5:+.4f})" in caplog.text
    assert "test/map@r: untrained 0.2500 -> 0.2000 (-0.0500)" in caplog.text  # the selected epoch's, not epoch 1's
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    if warned:
        assert "TRAINING MADE RETRIEVAL WORSE" in warnings[0].message and "0.5000 -> 0.4000" in warnings[0].message


@pytest.mark.parametrize("pretrained, advice, not_advice", [
    (None, "--pretrained imagenet", "lower --lr"),
    ("imagenet", "started from pretrained weights (imagenet): try a lower --lr", "--pretrained imagenet")])
def test_worse_run_advice_follows_where_its_weights_came_from(pretrained, advice, not_advice, caplog):
    # a pretrained run that got worse was told to "start from pretrained weights": advice it had already taken
    progress = Progress(best_epoch=1, history=[{"epoch": 1, "test_recall@1": 0.4}],
                        untrained={"test": {"recall@1": 0.5}})
    text = summary_log(progress, caplog, pretrained)
    assert advice in text and not_advice not in text


@pytest.mark.slow
def test_measuring_the_untrained_model_changes_nothing_the_training_draws(tmp_path, monkeypatch):
    # distance-weighted sampling draws its negatives from the global RNG, which every loader iterator advances
    argv = ("--num_epochs", "1", "--loss", "margin", "--miner", "distance")
    measured = run(tmp_path / "a", *argv)
    monkeypatch.setattr(trainer_module, "_evaluate_untrained", lambda *a: {"test": {}})
    unmeasured = run(tmp_path / "b", *argv)
    assert measured["history"][0]["loss"] == unmeasured["history"][0]["loss"]
    assert measured["last"]["test"]["recall@1"] == unmeasured["last"]["test"]["recall@1"]
