"""The fast decoding path (``decode="fast"``): same sizes and statistically the same pixels as plain PIL."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from metric_retrieval import data
from metric_retrieval.data.dataset import RetrievalDataset
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.image_io import decode_image, decode_jpeg_batch, load_image
from metric_retrieval.data.transforms import min_decode_scale
from metric_retrieval.models.backbones.base import IMAGENET_RGB
from metric_retrieval.utils.errors import UserError


def _photo(path, size=(800, 600), seed=0):
    """A smooth photo-like JPEG (gradients + blobs), so resampling differences stay small."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    channels = [np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)) + rng.uniform(0, 6))
                for _ in range(3)]
    arr = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return str(path)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_min_decode_scale_per_first_step():
    # Resize((h, w)) keeps both sides >= the output; Resize(s) the shorter side
    assert min_decode_scale(data.build_transform("cgd", True, 224), 500, 375) == pytest.approx(252 / 375)
    assert min_decode_scale(data.build_transform("cgd", False, 64), 800, 600) == pytest.approx(64 / 600)
    assert min_decode_scale(data.build_transform("abir", True, 224), 1000, 500) == pytest.approx(256 / 500)
    # RandomResizedCrop: the smallest crop (area 0.08, aspect 3/4) keeps >= 224 columns
    rrc = min_decode_scale(data.build_transform("das", True, 224), 2000, 1500)
    assert rrc == pytest.approx(224 / math.sqrt(0.08 * 2000 * 1500 * 0.75))
    assert min_decode_scale(data.build_transform("das", True, 224), 500, 375) == 1.0  # never upsample further
    assert min_decode_scale(data.build_transform("landmark", False), 4000, 3000) == 1.0
    assert min_decode_scale(v2.Compose([v2.RandomCrop(64)]), 4000, 3000) == 1.0
    assert min_decode_scale(None, 4000, 3000) == 1.0


def test_every_random_resized_crop_keeps_output_resolution(fast_tmp):
    path = _photo(fast_tmp / "big.jpg", size=(2400, 1800))
    tf = data.build_transform("das", True, 224)
    decoded = decode_image(path, min_scale=lambda w, h: min_decode_scale(tf, w, h))
    assert decoded.shape == (3, 900, 1200)  # DCT scale 1/2 is allowed, 1/4 is not
    torch.manual_seed(0)
    crops = [T.RandomResizedCrop.get_params(decoded, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)]
    assert min(min(h, w) for _, _, h, w in crops) >= 224


@pytest.mark.parametrize("preset", ["cgd", "das"])
def test_fast_matches_pil_after_eval_transform(fast_tmp, preset):
    path = _photo(fast_tmp / "photo.jpg", size=(800, 600))
    tf = data.build_transform(preset, train=False, image_size=64, normalize=IMAGENET_RGB)
    fast_ds = RetrievalDataset([path], [0], ["a"], transform=tf)
    pil_ds = RetrievalDataset([path], [0], ["a"], transform=tf, decode="pil")
    assert fast_ds.decode == "fast"
    fast, pil = fast_ds[0][0], pil_ds[0][0]
    assert fast.shape == pil.shape == (3, 64, 64) and fast.dtype == pil.dtype == torch.float32
    assert _corr(fast, pil) > 0.99
    assert (fast - pil).abs().mean() < 0.05  # normalised units: ~3 grey levels
    assert fast.min() > pil.min() - 0.2 and fast.max() < pil.max() + 0.2


def test_draft_and_full_size_decoding(fast_tmp):
    path = _photo(fast_tmp / "photo.jpg", size=(800, 600))
    small = decode_image(path, min_scale=lambda w, h: min_decode_scale(data.build_transform("cgd", False, 64), w, h))
    assert small.shape == (3, 75, 100) and small.dtype == torch.uint8  # 1/8: both sides still >= 64
    full = decode_image(path, min_scale=lambda w, h: 300 / 600)  # 1/2 exactly keeps 300 rows
    assert full.shape == (3, 300, 400)
    assert torch.equal(decode_image(path), pil_to_tensor(load_image(path)))  # libjpeg-turbo, same pixels


def test_box_crop_matches_pil(synth_root):
    root = synth_root("cub", image_size=(120, 90))
    ds = data.build_dataset("cub", root, "train", crop=True)
    for i in range(3):
        box = (3.4, 5.6, 77.5, 80.2) if i == 0 else ds.boxes[i]
        assert torch.equal(decode_image(ds.paths[i], box), pil_to_tensor(load_image(ds.paths[i], box)))


def test_dataset_paths_and_validation(synth_root):
    root = synth_root("cub", image_size=(64, 48))
    fast = data.build_dataset("cub", root, "train", transform=data.build_transform("cgd", False, 32))
    x, label, index = fast[0]
    assert fast.decode == "fast" and x.shape == (3, 32, 32) and (label, index) == (0, 0)
    raw = data.build_dataset("cub", root, "train")  # no transform: the documented PIL image
    assert isinstance(raw[0][0], Image.Image)
    legacy = RetrievalDataset(fast.paths, fast.labels, fast.classes, transform=lambda im: im.size)
    assert legacy[0][0] == (64, 48)  # non-v2 callables still get PIL images
    with pytest.raises(DatasetError, match="decode must be one of fast, pil, cache, not 'gpu'"):
        data.build_dataset("cub", root, "train", decode="gpu")
    assert issubclass(DatasetError, UserError)


@pytest.mark.cuda
def test_gpu_batch_decoding(fast_tmp):
    from torchvision.io import read_file

    paths = [_photo(fast_tmp / f"{i}.jpg", size=(320, 240), seed=i) for i in range(3)]
    images = decode_jpeg_batch([read_file(p) for p in paths])
    for path, image in zip(paths, images):
        cpu = decode_image(path)
        assert image.is_cuda and image.dtype == torch.uint8 and image.shape == cpu.shape
        assert (image.cpu().float() - cpu.float()).abs().mean() < 2  # nvJPEG's IDCT differs by ~1 level


def test_decoded_cache_is_exact_and_only_for_a_fixed_size_first_resize(tmp_path):
    from metric_retrieval.data.dataset import RetrievalDataset
    from metric_retrieval.data.transforms import build_transform

    root = data.write_synthetic("cub", tmp_path / "cub", image_size=(120, 90), images_per_class=1)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[:4]
    cache = tmp_path / "decoded"
    cgd = build_transform("cgd", train=True, image_size=64)

    def items(decode, transform):
        ds = RetrievalDataset(paths, [0] * 4, ["c"], transform=transform, decode=decode, cache_dir=str(cache))
        out = []
        for i in range(4):
            torch.manual_seed(i)
            out.append(ds[i][0])
        return out

    fast = items("fast", cgd)
    first, second = items("cache", cgd), items("cache", cgd)  # fills the cache, then reads it
    assert len(list(cache.rglob("*.rgb"))) == 4
    for a, b, c in zip(fast, first, second):
        assert torch.equal(a, b) and torch.equal(a, c)
    entry = sorted(cache.rglob("*.rgb"))[0]
    entry.write_bytes(entry.read_bytes()[:100])  # not an entry this code wrote: decoded again, rewritten
    assert [torch.equal(a, b) for a, b in zip(fast, items("cache", cgd))] == [True] * 4
    assert entry.stat().st_size == 3 * 72 * 72
    items("cache", build_transform("das", train=True, image_size=64))  # random first step: nothing cached
    assert len(list(cache.rglob("*.rgb"))) == 4


def test_auto_caches_only_what_is_missing_and_fits_on_the_disk(fast_tmp, monkeypatch):
    from metric_retrieval.data import decoded_cache
    from metric_retrieval.data.transforms import build_transform

    paths = [_photo(fast_tmp / f"{i}.jpg", size=(96, 72), seed=i) for i in range(4)]
    cgd, das = build_transform("cgd", train=True, image_size=64), build_transform("das", train=True, image_size=64)
    ds = RetrievalDataset(paths, [0] * 4, ["a"], transform=cgd)
    folder = fast_tmp / "cache"
    cache = decoded_cache.DecodedCache(folder)
    assert decoded_cache.missing_bytes(cache, ds, cgd) == 4 * 3 * 72 * 72  # Resize((72, 72)) first
    assert decoded_cache.missing_bytes(cache, ds, das) == 0  # RandomResizedCrop first: nothing to cache
    assert decoded_cache.free_bytes(folder / "not" / "yet") > 0  # the nearest existing folder counts

    monkeypatch.setattr(decoded_cache, "free_bytes", lambda f: 10 * 4 * 3 * 72 * 72)  # need = exactly 10 %
    assert decoded_cache.plan_cache([(ds, cgd)], folder) == (True, f"0.1 MB still to write under {folder}, "
                                                                   "0.6 MB free")
    use, why = decoded_cache.plan_cache([(ds, cgd), (ds, cgd)], folder)  # splits are summed
    assert not use and why.startswith("the cache would take more than 10% of the free space")
    assert decoded_cache.plan_cache([(ds, das)], folder) == (
        False, "no split starts with a fixed-size resize (nothing to cache)")
    ds.enable_cache(str(folder))
    ds[0], ds[1]  # two entries written: only the other two count now
    assert ds.decode == "cache" and decoded_cache.missing_bytes(cache, ds, cgd) == 2 * 3 * 72 * 72
    with pytest.raises(DatasetError, match="not 'pil'"):
        RetrievalDataset(paths, [0] * 4, ["a"], transform=cgd, decode="pil").enable_cache()


def test_a_cache_that_cannot_be_written_warns_once_and_goes_on(fast_tmp):
    from metric_retrieval.data.errors import DatasetWarning
    from metric_retrieval.data.transforms import build_transform

    paths = [_photo(fast_tmp / f"{i}.jpg", size=(96, 72), seed=i) for i in range(3)]
    (fast_tmp / "file").write_text("not a folder")
    tf = build_transform("cgd", train=False, image_size=32)
    broken = RetrievalDataset(paths, [0] * 3, ["a"], transform=tf, decode="cache",
                              cache_dir=str(fast_tmp / "file" / "c"))
    fast = RetrievalDataset(paths, [0] * 3, ["a"], transform=tf)
    with pytest.warns(DatasetWarning, match="cannot write the decoded-image cache") as caught:
        images = [broken[i][0] for i in range(3)]
    assert len(caught) == 1
    for i, image in enumerate(images):
        assert torch.equal(image, fast[i][0])
