"""Small synthetic catalogues and a tiny random-weight model for the index, search and serve tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metric_retrieval import models

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 230)}


def write_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = 24) -> Path:
    """A solid ``colour`` image with seeded noise (so no two images are identical), as JPEG or PNG by suffix."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-25, 26, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def write_catalogue(root: Path, per_class: int = 4, seed: int = 0, classes=CLASSES) -> list[Path]:
    """``root/<class>/<n>.jpg`` for each class."""
    return [write_image(root / c / f"{c}_{seed}_{n}.jpg", COLOURS[c], seed * 1000 + 10 * i + n)
            for i, c in enumerate(classes) for n in range(per_class)]


def save_checkpoint(path: Path, seed: int = 0, dim: int = 8, **options) -> Path:
    """A ``model_best.pth``-shaped checkpoint of a random-weight resnet18 + baseline head at 32 px."""
    torch.manual_seed(seed)
    model = models.build_model("resnet18", "baseline", dim, 0, **options)
    mc = {"backbone": "resnet18", "head": "baseline", "feature_dim": dim, "num_classes": 0, "options": options}
    torch.save({"model": model.state_dict(), "model_config": mc,
                "config": {"transform": "cgd", "image_size": 32, "amp": "off"}}, path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model_best.pth")


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("model2") / "model_best.pth", seed=1)


@pytest.fixture(scope="session")
def catalogue_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    write_catalogue(root)
    return root


@pytest.fixture(scope="module")
def small_index(checkpoint, tmp_path_factory):
    """(store, embedder) of a Flat index over a catalogue of 3 images a colour class, built by ``index.py build``."""
    from metric_retrieval.retrieval.indexing import open_index
    from tests.index.test_index_build import build  # here: that module imports this one

    root = tmp_path_factory.mktemp("gallery")
    write_catalogue(root, per_class=3)
    out = tmp_path_factory.mktemp("idx") / "i"
    assert build(checkpoint, root, out) == 0
    return open_index(out)
