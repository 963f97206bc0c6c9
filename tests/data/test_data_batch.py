"""uint8 batches normalised on the device, channels-last collation, and decoding on the device (``--decode gpu``)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from metric_retrieval import data
from metric_retrieval.data.batch import DeviceInput, EncodedImage, Normalize, collate
from metric_retrieval.data.dataset import RetrievalDataset
from metric_retrieval.data.device_decode import DeviceDecoder, EncodedFiles
from metric_retrieval.data.errors import DatasetWarning
from metric_retrieval.models.backbones.base import CAFFE_BGR255, DEEP_METRIC_BGR255, IMAGENET_RGB
from metric_retrieval.training.loading import ClassSubset, SeededDataset, sample_seed

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_RGB.mean, IMAGENET_RGB.std


def _interleaved(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images (..., 3, H, W) stored pixel-interleaved, as decoded JPEGs and channels-last batches."""
    g = torch.Generator().manual_seed(seed)
    *lead, c, h, w = shape
    return torch.randint(0, 256, (*lead, h, w, c), dtype=torch.uint8, generator=g).movedim(-1, -3)


def _by_hand(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x / 255 − mean) / std per channel, in float64."""
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    return (x.double() / 255 - m) / s


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_normalize_is_the_preset_formula_in_every_layout(layout):
    batch = _interleaved(4, 3, 5, 7)
    if layout == "contiguous":
        batch = batch.contiguous()
    out = Normalize(IMAGENET_MEAN, IMAGENET_STD)(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    torch.testing.assert_close(out.double(), _by_hand(batch, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-6)
    # one image, in either layout, gives bit-identical values to its row of the batch
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(norm(batch[2]), out[2]) and torch.equal(norm(batch[2].contiguous()), out[2])


def test_normalize_bgr_matches_deep_metric():
    # ABIR / Deep_Metric: BGR order, 0-255 scale minus [104, 117, 128]
    pixel = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = data.build_normalize(DEEP_METRIC_BGR255)(pixel.contiguous(memory_format=torch.channels_last))
    assert out[0, :, 0, 0].tolist() == pytest.approx([50 - 104, 100 - 117, 200 - 128], abs=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    caffe = data.build_normalize(CAFFE_BGR255)(pixel)
    assert caffe[0, :, 0, 0].tolist() == pytest.approx([50 - 103.939, 100 - 116.779, 200 - 123.68], abs=1e-4)
    assert data.build_normalize(CAFFE_BGR255).bgr and not data.build_normalize(IMAGENET_RGB).bgr


def test_normalize_refuses_float_input():
    with pytest.raises(TypeError, match="uint8"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("spec", [IMAGENET_RGB, CAFFE_BGR255])
@pytest.mark.parametrize("preset", ["cgd", "abir", "das"])
def test_preset_float_pipeline_equals_uint8_pipeline_then_normalize(preset, spec):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    for train in (False, True):
        torch.manual_seed(3)
        full = data.build_transform(preset, train, image_size=32, normalize=spec)(image)
        torch.manual_seed(3)
        u8 = data.build_transform(preset, train, image_size=32)(image)
        assert type(u8) is torch.Tensor and u8.dtype == torch.uint8 and u8.shape == (3, 32, 32)
        assert torch.equal(data.build_normalize(spec)(u8), full)


def test_collate_stacks_channels_last_and_keeps_the_rest():
    images = [_interleaved(3, 6, 5, seed=i)[:, 1:5, :] for i in range(3)]  # crops: strided views
    batch = [(x, i, 10 + i, 7 * i) for i, x in enumerate(images)]
    out = collate(batch)
    expected = default_collate(batch)
    assert len(out) == 4 and torch.equal(out[0], expected[0])
    assert out[0].is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(out[1:], expected[1:]):
        assert torch.equal(got, want)
    # encoded files and differently sized images stay lists
    files = [(EncodedImage(torch.zeros(4, dtype=torch.uint8)), 0), (EncodedImage(torch.ones(2, dtype=torch.uint8)), 1)]
    listed = collate(files)
    assert isinstance(listed[0], list) and listed[0][1] is files[1][0] and listed[1].tolist() == [0, 1]
    mixed = collate([(torch.zeros(3, 2, 2, dtype=torch.uint8), 0), (torch.zeros(3, 4, 2, dtype=torch.uint8), 1)])
    assert isinstance(mixed[0], list)


def test_device_input_formats_normalises_and_passes_floats():
    batch = _interleaved(2, 3, 4, 4)
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    flat = DeviceInput("cpu", norm, channels_last=False)(batch)
    assert flat.is_contiguous() and torch.equal(flat, norm(batch.contiguous()))
    assert DeviceInput("cpu", norm, channels_last=True)(batch).is_contiguous(memory_format=torch.channels_last)
    floats = torch.randn(2, 3, 4, 4)
    assert torch.equal(DeviceInput("cpu", norm)(floats), floats)
    with pytest.raises(TypeError, match="decoder"):
        DeviceInput("cpu", norm)([EncodedImage(torch.zeros(3, dtype=torch.uint8))])


def _photo(path, size, seed=0, fmt="JPEG"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    Image.fromarray(arr).resize(size, Image.BILINEAR).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return str(path)


def _seeded_cpu_batch(dataset, indices, seeds):
    """What the workers ship for ``--decode fast``: the collated uint8 batch of seeded samples."""
    return collate([SeededDataset(dataset)[(i, s)] for i, s in zip(indices, seeds)])[0]


def test_device_decoder_on_cpu_reproduces_the_worker_batch(fast_tmp):
    # JPEGs of several sizes, one PNG (not JPEG: decoded by the CPU path); crops and flips drawn from the seeds
    paths = [_photo(fast_tmp / f"{i}.jpg", (70 + 9 * i, 60 + 5 * i), seed=i) for i in range(4)]
    paths.append(_photo(fast_tmp / "4.png", (80, 64), seed=4, fmt="PNG"))
    tf = data.build_transform("das", train=True, image_size=32)
    dataset = RetrievalDataset(paths, list(range(5)), [str(i) for i in range(5)], transform=tf)
    seeds = [sample_seed(0, 1, 2, k) for k in range(5)]
    files = collate([SeededDataset(EncodedFiles(dataset))[(i, s)] for i, s in enumerate(seeds)])
    assert isinstance(files[0], list) and files[1].tolist() == list(range(5)) and files[3].tolist() == seeds
    before = torch.get_rng_state()
    decoded = DeviceDecoder(tf, "cpu")(files[0], files[3])
    assert torch.equal(torch.get_rng_state(), before)  # the main process's RNG stream is untouched
    assert torch.equal(decoded, _seeded_cpu_batch(dataset, range(5), seeds))


def test_device_decoder_crops_boxes_like_the_cpu_path(synth_root):
    root = synth_root("cub", image_size=(120, 90))
    tf = data.build_transform("cgd", train=False, image_size=48)
    dataset = data.build_dataset("cub", root, "train", transform=tf, crop=True)
    subset = ClassSubset(dataset, [1, 2])  # the --val_classes training part: boxes follow the subset
    assert subset.crop and len(subset.boxes) == len(subset)
    indices = list(range(4))
    files = [EncodedFiles(subset)[i][0] for i in indices]
    assert files[0].box == dataset.boxes[int(subset.indices[0])]
    expected = collate([subset[i] for i in indices])[0]
    assert torch.equal(DeviceDecoder(tf, "cpu")(files), expected)


def test_device_decoder_matches_the_sizes_of_dct_scaled_cpu_decoding(fast_tmp):
    # 2400x1800 at das/64: the CPU path decodes at 1/4 (DCT scaling); the device decodes at full size and resizes
    # to the same size, so the seeds draw the same crops and the images differ only by resampling.
    paths = [_photo(fast_tmp / f"big{i}.jpg", (2400, 1800), seed=i) for i in range(2)]
    tf = data.build_transform("das", train=True, image_size=64)
    dataset = RetrievalDataset(paths, [0, 1], ["a", "b"], transform=tf)
    decoder = DeviceDecoder(tf, "cpu")
    files = [EncodedFiles(dataset)[i][0] for i in range(2)]
    assert [tuple(x.shape) for x in decoder.decode(files)] == [(3, 450, 600)] * 2
    seeds = [sample_seed(5, 0, 0, k) for k in range(2)]
    device = decoder(files, torch.tensor(seeds))
    cpu = _seeded_cpu_batch(dataset, range(2), seeds)
    assert (device.float() - cpu.float()).abs().mean() < 3


def test_batches_without_jpegs_and_undecodable_ones_fall_back_to_the_cpu(fast_tmp):
    def encoded(path):
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)

    jpeg = encoded(_photo(fast_tmp / "good.jpg", (40, 30)))
    png = encoded(_photo(fast_tmp / "p.png", (40, 30), fmt="PNG"))
    decoder = DeviceDecoder(data.build_transform("cgd", False, 16), "cpu")
    only_png = decoder.decode([EncodedImage(png), EncodedImage(png, (2.0, 3.0, 22.0, 13.0))])
    assert [tuple(x.shape) for x in only_png] == [(3, 30, 40), (3, 10, 20)]
    truncated = EncodedImage(jpeg[: len(jpeg) // 3])  # fails the batched call, then PIL raises on it
    with pytest.warns(DatasetWarning, match="could not decode a batch"), pytest.raises(OSError):
        decoder.decode([EncodedImage(jpeg), truncated, EncodedImage(png)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per decoder
        with pytest.raises(OSError):
            decoder.decode([truncated])


@pytest.mark.cuda
def test_device_decoder_on_gpu_matches_the_cpu_path(fast_tmp):
    paths = [_photo(fast_tmp / f"{i}.jpg", (96, 72), seed=i) for i in range(4)]
    tf = data.build_transform("cgd", train=True, image_size=32)
    dataset = RetrievalDataset(paths, list(range(4)), list("abcd"), transform=tf)
    seeds = [sample_seed(1, 0, 0, k) for k in range(4)]
    files = collate([SeededDataset(EncodedFiles(dataset))[(i, s)] for i, s in enumerate(seeds)])
    gpu = DeviceDecoder(tf, "cuda")(files[0], files[3])
    cpu = _seeded_cpu_batch(dataset, range(4), seeds)
    assert gpu.is_cuda and gpu.shape == cpu.shape
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 2  # nvJPEG's IDCT and GPU resampling: ~1 level
