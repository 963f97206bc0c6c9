"""Every input path feeds a model the normalisation its backbone declares: a Caffe-normalised backbone gets BGR
0-255 minus the mean in the training step, the evaluation embedding, landmark evaluation and an external query.

The probe backbone records what it receives. On solid-colour images every pixel of its input must be
``[B, G, R] − CAFFE mean`` whatever crop or flip the preset draws; landmark images are compared pixel by pixel.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from metric_retrieval import data, models
from metric_retrieval.models.backbones.base import CAFFE_BGR255, DEEP_METRIC_BGR255, IMAGENET_RGB, Backbone
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.query import embed_image
from metric_retrieval.training import resolve_config, train
from tests.e2e.cli import run_test_cli

RGB = (200, 100, 50)
EXPECTED_BGR255 = torch.tensor([RGB[2], RGB[1], RGB[0]], dtype=torch.float64) - torch.tensor(CAFFE_BGR255.mean)


class BGRProbe(Backbone):
    """One strided conv declaring Caffe's BGR 0-255 input; ``seen`` collects ``(training, input)`` per forward."""

    input_spec = CAFFE_BGR255
    seen: list[tuple[bool, torch.Tensor]] = []

    def __init__(self, pretrained=False, frozen_bn: bool = False) -> None:
        super().__init__(frozen_bn=frozen_bn)
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.num_features = 8
        self.stage_info = [dict(num_chs=8, reduction=4, module="conv")]
        self._set_taps(None, ("conv",))

    def _stages(self):
        yield "conv", self.conv

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        BGRProbe.seen.append((self.training, x.detach().float().cpu()))
        return super().forward_features(x)


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(models.BACKBONES._entries, "bgr_probe", BGRProbe)
    BGRProbe.seen = []
    return BGRProbe.seen


def solid_folder(root, classes: int = 4, per_class: int = 4):
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40 + 4 * i, 36), RGB).save(folder / f"{i}.png")
    return root


def assert_solid_bgr255(batch: torch.Tensor) -> None:
    """Every pixel of ``batch (B, 3, H, W)`` is the solid colour in BGR 0-255 minus the Caffe mean."""
    values = batch.double().movedim(1, -1).reshape(-1, 3)
    torch.testing.assert_close(values, EXPECTED_BGR255.expand_as(values), rtol=0, atol=1e-3)


def test_training_evaluation_and_query_get_the_backbones_bgr255_input(tmp_path, probe):
    root = solid_folder(tmp_path / "solid")
    out = tmp_path / "run"
    train(resolve_config(["--data_path", str(root), "--pretrained", "none", "--backbone_type", "bgr_probe",
                          "--head", "baseline", "--feature_dim", "8", "--image_size", "32", "--batch_size", "8",
                          "--samples_per_class", "2", "--num_epochs", "1", "--max_steps_per_epoch", "1",
                          "--workers", "0", "--amp", "off", "--no_tensorboard", "--loss", "triplet", "--miner",
                          "none", "--output_dir", str(out)]))
    images = [(is_training, x) for is_training, x in probe if x.any()]  # models.profile traces a zero image
    training = [x for is_training, x in images if is_training]
    evaluation = [x for is_training, x in images if not is_training]
    assert training and evaluation
    for batch in training + evaluation:
        assert_solid_bgr255(batch)
    probe.clear()
    embed_image(str(root / "test" / "c0" / "0.png"), Embedder(out / "model_best.pth"))
    assert len(probe) == 1  # the query image only (the width comes from the recipe)
    assert_solid_bgr255(probe[-1][1])


def test_landmark_evaluation_gets_the_backbones_bgr255_input(tmp_path, probe):
    root = data.ensure_synthetic("roxford5k", tmp_path / "roxford5k", image_size=(64, 48))
    code, _, err = run_test_cli(["--eval", "--data_name", "roxford5k", "--data_path", str(root), "--backbone_type",
                                 "bgr_probe", "--head", "gem", "--feature_dim", "8", "--imsize", "64", "--workers",
                                 "0", "--device", "cpu"])
    assert code == 0, err
    landmarks = data.load_landmark_dataset("roxford5k", str(root))
    first = data.LandmarkImageDataset(list(landmarks.db_paths), imsize=64).load(0)
    rgb = torch.from_numpy(np.array(first)).permute(2, 0, 1).double()
    expected = rgb.flip(0) - torch.tensor(CAFFE_BGR255.mean, dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(probe[0][1][0].double(), expected, rtol=0, atol=1e-3)


def test_every_registered_model_declares_a_known_input():
    # caffe_resnet101 (the released regional-attention weights) is Caffe BGR 0-255; ABIR follows its released
    # code (Deep_Metric BGR 0-255) although its VGG16 declares RGB; the others are torchvision RGB.
    assert models.build_model("caffe_resnet101", "gem", 2048, 0).input_spec == CAFFE_BGR255
    assert models.build_model("vgg16", "abir", 512, 0).input_spec == DEEP_METRIC_BGR255
    assert models.build_model("vgg16", "gem", 512, 0).input_spec == IMAGENET_RGB
    assert models.build_model("resnet50", "cgd", 1536, 10, gd_config="SG").input_spec == IMAGENET_RGB
