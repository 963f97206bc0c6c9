"""Files that go bad after the run checked them, and a decoded-image cache on a disk that fills up."""
import errno
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import metric_retrieval.data.decoded_cache
from metric_retrieval import data
from metric_retrieval.data.batch import collate
from metric_retrieval.data.decoded_cache import DecodedCache, split_fixed_resize
from metric_retrieval.data.errors import BadImageError, DatasetWarning
from metric_retrieval.data.image_io import decode_image
from metric_retrieval.training.loading import eval_loader
from tests.fake_files import WrappedFile


@pytest.fixture()
def folder(tmp_path) -> Path:
    return data.write_synthetic("folder", tmp_path / "folder", image_size=(32, 32), images_per_class=3, num_classes=4)


def truncate(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 3)


def build(root: Path, skip: bool, decode: str = "fast"):
    transform = data.build_transform("cgd", train=False, image_size=32, normalize=False)
    return data.build_dataset("folder", root, "train", transform=transform, skip_bad_images=skip, decode=decode)


@pytest.mark.parametrize("workers", [0, 1])
def test_image_truncated_after_the_check_names_the_file(folder, workers):
    dataset = build(folder, skip=False)
    truncate(dataset.paths[4])
    loader = DataLoader(dataset, batch_size=6, num_workers=workers, collate_fn=collate)
    with pytest.raises(BadImageError) as err:
        list(loader)
    message = str(err.value)  # from a worker too: the path, not "Caught ... Original Traceback"
    assert message.startswith(f"{dataset.paths[4]} cannot be read any more (") and "Traceback" not in message
    assert "--skip_bad_images" in message and "\n" not in message


def test_skip_bad_images_replaces_a_training_image_and_evaluation_leaves_it_out(folder):
    from metric_retrieval import models
    from metric_retrieval.training.evaluate import embed_dataset

    dataset = build(folder, skip=True)
    bad = dataset.paths[4]  # class 1 holds images 3, 4, 5
    truncate(bad)
    with pytest.warns(DatasetWarning, match=rf"{bad} cannot be read any more .* used {dataset.paths[5]} of the same"):
        image, label, index = dataset[4]
    assert torch.equal(image, dataset[5][0]) and label == 1 and index == -5
    model = models.build_model("resnet18", "baseline", 8, 0)
    cfg = {"eval_batch_size": 4, "workers": 0, "channels_last": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        features = embed_dataset(model, dataset, cfg, torch.device("cpu"), None)
    assert len(features["paths"]) == len(dataset) - 1 and bad not in features["paths"]
    assert features["embeddings"].shape[0] == features["labels"].shape[0] == len(dataset) - 1


def test_evaluation_loader_leaves_the_training_rng_alone(folder):
    dataset = build(folder, skip=False)
    before = torch.get_rng_state()
    for _ in eval_loader(dataset, batch_size=4, workers=0, pin_memory=False):
        pass
    assert torch.equal(torch.get_rng_state(), before)


class ShortWrites(WrappedFile):
    """A file on a full disk that does not say so: writes succeed but only half of the bytes land."""

    def write(self, payload: bytes) -> int:
        return self.file.write(payload[: len(payload) // 2])


def failing(fd: int):
    os.close(fd)
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("writer", [ShortWrites, failing], ids=["short-write", "enospc"])
def test_cache_on_a_full_disk_leaves_no_entry_and_warns_once(folder, tmp_path, monkeypatch, writer):
    dataset = build(folder, skip=False)
    resize, _ = split_fixed_resize(dataset.transform)
    cache = DecodedCache(tmp_path / "cache")
    monkeypatch.setattr(metric_retrieval.data.decoded_cache, "_open_entry", writer)
    with pytest.warns(DatasetWarning, match=rf"cannot write the decoded-image cache in {tmp_path / 'cache'}") as seen:
        images = [cache.get(p, None, resize, lambda p=p: decode_image(p)) for p in dataset.paths[:3]]
    assert len(seen) == 1 and not cache.writable
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # nothing under a final name
    assert all(image.shape == (3, 32, 32) for image in images)


def test_cache_write_failing_in_loader_workers_warns_once_per_run(folder, tmp_path, monkeypatch, capfd):
    # the patched writer reaches the workers by fork (the DataLoader's start method on Linux)
    dataset = build(folder, skip=False)
    dataset.enable_cache(str(tmp_path / "cache"))
    monkeypatch.setattr(metric_retrieval.data.decoded_cache, "_open_entry", failing)
    # a worker's warning goes to its stderr, as outside pytest (whose recorder the forked workers would inherit)
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, *_, **__: os.write(
        2, f"{category.__name__}: {message}\n".encode()))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)  # new workers each epoch
    with warnings.catch_warnings():
        warnings.simplefilter("always", DatasetWarning)
        for _ in range(2):
            assert sum(len(batch[1]) for batch in loader) == len(dataset)
    stderr = capfd.readouterr().err
    assert stderr.count("cannot write the decoded-image cache") == 1, stderr  # not once per worker and epoch
    assert not dataset.cache.writable  # the main process knows too: the next loader's workers skip writing
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_cache_entry_of_the_wrong_size_is_decoded_and_rewritten(folder, tmp_path):
    dataset = build(folder, skip=False)
    resize, _ = split_fixed_resize(dataset.transform)
    cache, path = DecodedCache(tmp_path / "cache"), dataset.paths[0]
    expected = cache.get(path, None, resize, lambda: decode_image(path))
    entry = cache.entry(path, None, resize.size)
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated entry from an older, non-atomic writer
    assert torch.equal(cache.get(path, None, resize, lambda: decode_image(path)), expected)
    assert entry.stat().st_size == 3 * 32 * 32
