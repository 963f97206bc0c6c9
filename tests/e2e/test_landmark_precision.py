"""Landmark evaluation runs in the precision of the checkpoint's run (``test.py --amp run``, the default), as
the other evaluation paths do, and ``--amp`` overrides it; recorded by a hook on the network's forward."""
from __future__ import annotations

import json

import pytest
import torch

import metric_retrieval.retrieval.eval_commands
from metric_retrieval import data
from metric_retrieval.training import builders
from metric_retrieval.training.checkpoint import model_config
from metric_retrieval.training.config import resolve_config
from metric_retrieval.utils.io import atomic_save
from tests.e2e.cli import run_test_cli


def bf16_checkpoint(path, channels_last: bool = True) -> None:
    """A ``model_best.pth`` as a run with ``--amp bf16`` (and channels_last) writes it, without training."""
    cfg = resolve_config(["--backbone_type", "resnet18", "--head", "gem", "--feature_dim", "16", "--pretrained",
                          "none", "--amp", "bf16", "--no_tensorboard", "--output_dir", str(path.parent / "run"),
                          *([] if channels_last else ["--no-channels_last"])])
    model = builders.build_model(cfg, 0)
    atomic_save({"model": model.state_dict(), "model_config": model_config(cfg, 0), "config": cfg}, path)


@pytest.fixture(scope="module")
def landmarks(tmp_path_factory):
    """A small revisited-Oxford layout: 11 queries, 44 database images, 32×24 px."""
    return data.ensure_synthetic("roxford5k", tmp_path_factory.mktemp("roxford5k") / "root", image_size=(32, 24),
                                 images_per_class=1, queries_per_landmark=1, num_distractors=0)


@pytest.fixture
def forward_precision(monkeypatch):
    """Records ``(autocast enabled, autocast dtype, channels_last weights)`` at each forward of the loaded model."""
    seen, real_load = [], metric_retrieval.retrieval.eval_commands.load_model

    def load(path, device):
        model, ckpt = real_load(path, device)
        model.register_forward_pre_hook(lambda module, _: seen.append((
            torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
            module.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last))))
        return model, ckpt

    monkeypatch.setattr(metric_retrieval.retrieval.eval_commands, "load_model", load)
    return seen


@pytest.mark.parametrize("amp, expected", [("run", (True, torch.bfloat16)),
                                           pytest.param("off", (False, None), marks=pytest.mark.slow)])
def test_landmark_eval_uses_the_runs_precision_unless_told_otherwise(tmp_path, landmarks, forward_precision, amp,
                                                                     expected):
    bf16_checkpoint(tmp_path / "model_best.pth")
    code, _, err = run_test_cli(["--eval", "--checkpoint", str(tmp_path / "model_best.pth"), "--data_name",
                                 "roxford5k", "--data_path", str(landmarks), "--imsize", "32", "--workers", "0",
                                 "--device", "cpu", "--amp", amp, "--json", str(tmp_path / "m.json")])
    assert code == 0, err
    assert forward_precision and all(enabled == expected[0] and channels_last
                                     for enabled, _, channels_last in forward_precision)
    if expected[1] is not None:
        assert {dtype for _, dtype, _ in forward_precision} == {expected[1]}
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["mAP_medium"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False])
def test_learn_whitening_on_landmarks_uses_the_runs_precision(tmp_path, landmarks, forward_precision, channels_last):
    bf16_checkpoint(tmp_path / "model_best.pth", channels_last=channels_last)
    code, _, err = run_test_cli(["--learn_whitening", str(tmp_path / "w.pth"), "--checkpoint",
                                 str(tmp_path / "model_best.pth"), "--data_name", "roxford5k", "--data_path",
                                 str(landmarks), "--imsize", "32", "--workers", "0", "--device", "cpu"])
    assert code == 0, err
    assert forward_precision and all(enabled and dtype == torch.bfloat16 and weights_cl == channels_last
                                     for enabled, dtype, weights_cl in forward_precision)
