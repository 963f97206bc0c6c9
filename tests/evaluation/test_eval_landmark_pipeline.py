"""Landmark descriptor extraction (single/multi-scale) and evaluate_landmarks with stand-in datasets."""
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metric_retrieval.evaluation.landmark import (
    evaluate_landmarks,
    extract_landmark_descriptors,
    multiscale_descriptor,
)
from metric_retrieval.evaluation.whitening import pca_whitening_fit, save_whitening
from metric_retrieval.models.backbones.base import IMAGENET_RGB


class TinyGeMNet(nn.Module):
    """conv → ReLU → GeM(p=3) → L2; returns (embedding, None) like the framework's models."""

    input_spec = IMAGENET_RGB

    def __init__(self, dim=8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 3, padding=1)

    def forward(self, x):
        f = F.relu(self.conv(x)).clamp(min=1e-6)
        return F.normalize(f.pow(3).mean(dim=(2, 3)).pow(1 / 3), dim=1), None


class RandomImages(torch.utils.data.Dataset):
    """Stand-in for data.LandmarkImageDataset: (CHW tensor of varying size, index)."""

    def __init__(self, paths, boxes=None, imsize=1024, transform=None):
        self.paths, self.boxes, self.imsize, self.transform = list(paths), boxes, imsize, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(self.paths[i].split("_")[-1]))
        h, w = 20 + 3 * (i % 4), 28 - 2 * (i % 3)
        return torch.rand(3, h, w, generator=g), i


def test_extract_single_scale_matches_model_and_is_normalised():
    model = TinyGeMNet()
    ds = RandomImages([f"img_{i}" for i in range(6)])
    X = extract_landmark_descriptors(model, ds, "cpu")
    assert X.shape == (6, 8) and X.dtype == torch.float32
    torch.testing.assert_close(X.norm(dim=1), torch.ones(6))
    with torch.no_grad():
        torch.testing.assert_close(X[3], model(ds[3][0][None])[0][0])


def test_extract_under_bf16_autocast_matches_the_model_run_in_bf16():
    model = TinyGeMNet()
    ds = RandomImages([f"img_{i}" for i in range(3)])
    X = extract_landmark_descriptors(model, ds, "cpu", autocast_dtype=torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.stack([F.normalize(model(ds[i][0][None])[0][0].float(), dim=0) for i in range(3)])
    assert X.dtype == torch.float32 and torch.equal(X, expected)
    assert not torch.equal(X, extract_landmark_descriptors(model, ds, "cpu"))  # fp32 differs: the dtype applied


def test_multiscale_power_mean():
    model = TinyGeMNet()
    img = RandomImages(["x_7"])[0][0]
    scales, msp = (1, 1 / 2**0.5, 0.5), 3.0
    with torch.no_grad():
        ys = [model(F.interpolate(img[None], scale_factor=s, mode="bilinear", align_corners=False)
                    if s != 1 else img[None])[0][0] for s in scales]
    v = (torch.stack(ys).pow(msp).mean(0)).pow(1 / msp)
    torch.testing.assert_close(multiscale_descriptor(model, img, scales, msp), F.normalize(v, dim=0))
    v1 = F.normalize(torch.stack(ys).mean(0), dim=0)
    X = extract_landmark_descriptors(model, RandomImages(["x_7"]), "cpu", scales=scales)
    torch.testing.assert_close(X[0], v1)


def test_model_mode_restored():
    model = TinyGeMNet().train()
    extract_landmark_descriptors(model, RandomImages(["a_1"]), "cpu")
    assert model.training


@dataclass
class FakeLandmarkData:
    db_paths: list
    query_paths: list
    query_boxes: list
    gnd: list
    protocol: str = "old"
    extra: dict = field(default_factory=dict)


def _landmark_data(protocol="old"):
    db = [f"db_{i}" for i in range(12)]
    queries = ["db_0", "db_5"]  # identical images to db 0 and db 5: each query's own image ranks first
    if protocol == "old":
        gnd = [{"ok": [0, 1], "junk": [2], "bbx": [0, 0, 5, 5]}, {"ok": [5], "junk": []}]
    else:
        gnd = [{"easy": [0], "hard": [1], "junk": [2]}, {"easy": [5], "hard": [6], "junk": []}]
    return FakeLandmarkData(db, queries, [None, None], gnd, protocol)


def test_evaluate_landmarks_old_protocol():
    out = evaluate_landmarks(TinyGeMNet(), _landmark_data(), "cpu", None, imsize=64,
                             dataset_factory=RandomImages)
    assert set(out) == {"mAP", "num_queries", "num_database"}
    assert 0.0 < out["mAP"] <= 1.0
    assert out["num_queries"] == 2 and out["num_database"] == 12


def test_evaluate_landmarks_revisited_with_whitening_and_qe(tmp_path):
    model = TinyGeMNet()
    train = extract_landmark_descriptors(model, RandomImages([f"t_{i}" for i in range(40)]), "cpu")
    m, P = pca_whitening_fit(train)
    save_whitening(tmp_path / "w.pth", m, P, dim=6)
    data = _landmark_data("revisited")
    for whitening in ((m, P), {"mean": m, "P": P, "dim": 4}, tmp_path / "w.pth"):
        for qe in (None, {"method": "aqe", "k": 2, "dba_k": 2}, {"method": "alpha", "k": 2, "alpha": 3}):
            out = evaluate_landmarks(model, data, "cpu", None, scales=(1, 0.5), whitening=whitening, qe=qe,
                                     dataset_factory=RandomImages)
            assert {"mAP_easy", "mAP_medium", "mAP_hard", "mP@1_easy", "mP@10_hard"} <= set(out)
            for key in ("mAP_easy", "mAP_medium", "mAP_hard"):
                assert 0.0 <= out[key] <= 1.0 and np.isfinite(out[key])
            if qe is None:  # the query image itself is the only easy positive and ranks first
                assert out["mP@1_easy"] == 1.0 and out["mAP_easy"] == 1.0
    with pytest.raises(ValueError, match="query expansion"):
        evaluate_landmarks(model, data, "cpu", None, qe={"method": "dqe", "k": 1}, dataset_factory=RandomImages)


def test_evaluate_landmarks_with_the_real_image_dataset(tmp_path):
    from PIL import Image

    from metric_retrieval import data

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"img_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, size=(40 + 4 * i, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    gnd = [{"ok": [0, 1], "junk": [], "bbx": [0, 0, 30, 30]}, {"ok": [4], "junk": [5], "bbx": [5, 5, 45, 35]}]
    lm = data.LandmarkData(paths, [paths[0], paths[4]], [g["bbx"] for g in gnd], gnd, "old")
    out = evaluate_landmarks(TinyGeMNet(), lm, "cpu", None, imsize=32)
    assert set(out) == {"mAP", "num_queries", "num_database"} and 0.0 < out["mAP"] <= 1.0
