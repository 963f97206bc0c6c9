"""Synthetic datasets: deterministic, idempotent, parameterised, learnable."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metric_retrieval import data
from metric_retrieval.data.common import SYNTH_MARKER
from metric_retrieval.utils.errors import UserError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(fast_tmp):
    a = data.write_synthetic("inshop", fast_tmp / "a", seed=3, num_items=8)
    b = data.write_synthetic("inshop", fast_tmp / "b", seed=3, num_items=8)
    c = data.write_synthetic("inshop", fast_tmp / "c", seed=4, num_items=8)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    assert da.keys() == dc.keys() and sum(da[k] != dc[k] for k in da) >= 30  # every image changes


def test_image_size_and_images_per_class(fast_tmp):
    root = data.write_synthetic("cars", fast_tmp / "cars", image_size=(120, 90), images_per_class=2)
    ds = data.build_dataset("cars", root, "train", verify_images=False)
    assert len(ds) == 98 * 2 and ds[0][0].size == (120, 90)
    marker = json.loads((root / SYNTH_MARKER).read_text())
    assert marker["image_size"] == [120, 90] and marker["images_per_class"] == 2


@pytest.mark.parametrize("options", [{}, {"folders": True}])
@pytest.mark.parametrize("layout", ["cub", "cars"])
def test_num_classes_keeps_both_sides_of_the_zero_shot_split(fast_tmp, layout, options):
    # the list-file readers split at the real class id (CUB 100, CARS 98), the class-folder ones at the sorted half
    root = data.write_synthetic(layout, fast_tmp / layout, image_size=(16, 16), images_per_class=2, num_classes=6,
                                **options)
    train, test = (data.build_dataset(layout, root, split, verify_images=False) for split in ("train", "test"))
    assert (len(train), train.num_classes, len(test), test.num_classes) == (6, 3, 6, 3)
    with pytest.raises(UserError, match="num_classes must be even"):
        data.write_synthetic(layout, fast_tmp / "odd", num_classes=5)


def test_fast_enough(fast_tmp):
    start = time.perf_counter()
    root = data.write_synthetic("sop", fast_tmp / "sop", num_classes=200, images_per_class=2)
    assert len(list(root.rglob("*.JPG"))) == 400
    assert time.perf_counter() - start < 8  # hundreds of 64x64 JPEGs per second (with headroom for slow CI)


def test_ensure_synthetic_is_idempotent(fast_tmp):
    root = fast_tmp / "folder"
    data.ensure_synthetic("folder", root, num_classes=4)
    stamp = (root / SYNTH_MARKER).stat().st_mtime_ns
    data.ensure_synthetic("folder", root, num_classes=4)
    assert (root / SYNTH_MARKER).stat().st_mtime_ns == stamp
    data.ensure_synthetic("folder", root, num_classes=6)  # other parameters: regenerated
    assert len(data.build_dataset("folder", root, "train")) == 3 * 4
    foreign = fast_tmp / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to overwrite"):
        data.ensure_synthetic("folder", foreign)


def test_unknown_layout(tmp_path):
    with pytest.raises(UserError, match="unknown synthetic layout 'imagenet'"):
        data.write_synthetic("imagenet", tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_zero_shot_split_is_learnable(synth_root):
    """Colour/texture statistics alone already retrieve same-class test images far above chance."""
    ds = data.build_dataset("cub", synth_root("cub"), "test", verify_images=False)

    def feature(path):
        x = np.asarray(data.load_image(path), dtype=np.float64)
        fg = x[16:48, 16:48].reshape(-1, 3)
        hist = np.histogramdd(fg, bins=4, range=[(0, 256)] * 3)[0].ravel()
        return hist / np.linalg.norm(hist)

    f = torch.tensor(np.stack([feature(p) for p in ds.paths]))
    sim = f @ f.T
    sim.fill_diagonal_(-1)
    recall1 = (ds.labels[sim.argmax(1)] == ds.labels).float().mean().item()
    assert recall1 > 0.15  # chance: 2/299


def test_default_dataset(fast_tmp):
    root = data.ensure_default_dataset(fast_tmp / "default")
    info = data.get_benchmark("folder", root)
    assert (info.protocol, info.num_train_classes) == ("leave_one_out", 12)
    test = data.build_dataset("folder", root, "test")
    assert (len(test), test.num_classes) == (12 * 16, 12) and data.load_image(test.paths[0]).size == (64, 64)
    assert data.ensure_default_dataset(fast_tmp / "default") == root  # idempotent


@pytest.mark.parametrize("layout", ["oxford5k", "roxford5k"])
def test_small_landmark_sets_keep_every_role(layout, fast_tmp):
    root = data.write_synthetic(layout, fast_tmp / layout, image_size=(32, 32), images_per_class=2)
    lm = data.load_landmark_dataset(layout, root)
    keys = ("ok", "junk") if layout == "oxford5k" else ("easy", "hard", "junk")
    for g in lm.gnd:
        assert all(g[k] for k in keys)


SMALL = {"cub": {"num_classes": 2}, "cars": {"num_classes": 2}, "sop": {"num_classes": 4}, "inshop": {"num_items": 4},
         "folder": {"num_classes": 4}, "oxford5k": {"num_distractors": 2}, "paris6k": {"num_distractors": 2},
         "roxford5k": {"num_distractors": 2}, "rparis6k": {"num_distractors": 2}}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_reader_brings_a_synthetic_layout_it_reads(fast_tmp, name):
    """The layouts are the readers' (``Reader.synth``): written by dataset name or alias, read by that reader."""
    reader = data.DATASETS.get(name)
    alias = next((a for a, n in data.DATASETS._aliases.items() if n == name), name)
    root = data.write_synthetic(alias, fast_tmp / name, image_size=(24, 24), **SMALL[name])
    marker = json.loads((root / SYNTH_MARKER).read_text())
    assert (marker["layout"], marker["images_per_class"]) == (name, reader.synth.images_per_class)
    if reader.kind == "landmark":
        gnd = data.load_landmark_dataset(name, root)
        assert gnd.query_paths and gnd.db_paths
        return
    for split in reader(root).available_splits():
        assert len(reader(root).read(split).paths) > 0, split


def test_the_synthetic_layouts_are_exactly_the_readers_that_bring_one():
    from metric_retrieval.data.synth import synth_layouts

    assert sorted(synth_layouts()) == sorted(SMALL)
    assert all(data.DATASETS.get(n).synth is layout for n, layout in synth_layouts().items())
