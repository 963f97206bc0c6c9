"""Augmentation presets: output sizes, dtype, normalisation by a model's ``input_spec``, unknown names."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from metric_retrieval import data
from metric_retrieval.models.backbones.base import CAFFE_BGR255, DEEP_METRIC_BGR255, IMAGENET_RGB
from metric_retrieval.utils.errors import UnknownOptionError

IMAGE = Image.new("RGB", (300, 200), (200, 100, 50))


@pytest.mark.parametrize("preset", ["cgd", "clf", "das", "abir", "strong"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [224, 64])
def test_square_output(preset, train, size):
    torch.manual_seed(0)
    x = data.build_transform(preset, train=train, image_size=size, normalize=IMAGENET_RGB)(IMAGE)
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, size, size)
    u8 = data.build_transform(preset, train=train, image_size=size)(IMAGE)
    assert type(u8) is torch.Tensor and u8.dtype == torch.uint8 and u8.shape == (3, size, size)


def test_pipelines_follow_the_papers():
    def steps(preset, train):
        return [type(t).__name__ for t in data.build_transform(preset, train).transforms]

    cgd = data.build_transform("cgd", True).transforms
    assert cgd[0].size == [252, 252] and cgd[1].size == (224, 224)
    assert data.build_transform("clf", True).transforms[0].size == [256, 256]
    assert data.build_transform("cgd", False).transforms[0].size == [224, 224]
    das_eval = data.build_transform("das", False).transforms
    assert das_eval[0].size == [256] and das_eval[1].size == (224, 224)
    abir = data.build_transform("abir", True).transforms
    assert abir[1].scale == (0.16, 1.0)
    assert steps("das", True)[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]


def test_strong_preset_options_set_the_crop_and_the_flip():
    def steps(**options):
        return data.build_transform("strong", True, 16, **options).transforms

    assert steps()[0].scale == (0.25, 1.0) and type(steps()[1]).__name__ == "RandomHorizontalFlip"
    kept = steps(crop_scale=0.5, hflip=False)
    assert kept[0].scale == (0.5, 1.0) and "RandomHorizontalFlip" not in [type(t).__name__ for t in kept]
    # an asymmetric image is never mirrored without hflip: the bright column stays on the left
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, :4] = 255
    no_flip = data.build_transform("strong", True, 16, crop_scale=1.0, hflip=False)
    torch.manual_seed(0)
    assert all(out[:, :, :4].float().mean() > out[:, :, -4:].float().mean() for out in (no_flip(image)
                                                                                        for _ in range(20)))


def test_strong_preset_distorts_colour_in_training_only():
    torch.manual_seed(0)
    tensor = torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1).expand(3, 40, 40).contiguous()
    train = data.build_transform("strong", train=True, image_size=16)
    colours = {tuple(train(tensor)[:, 8, 8].tolist()) for _ in range(20)}
    assert len(colours) > 10 and any(r == g == b for r, g, b in colours)  # jittered, sometimes grey
    assert data.build_transform("strong", train=False, image_size=16)(tensor)[:, 8, 8].tolist() \
        == [200, 100, 50]


@pytest.mark.parametrize("preset", ["cgd", "abir"])
def test_normalisation_is_the_models_not_the_presets(preset):
    x = data.build_transform(preset, train=False, image_size=32, normalize=IMAGENET_RGB)(IMAGE)
    expected = [(c / 255 - m) / s for c, m, s in zip((200, 100, 50), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert x.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-4)
    # Deep_Metric (ABIR's released code): BGR order, 0-255 scale minus [104, 117, 128]
    y = data.build_transform(preset, train=False, image_size=32, normalize=DEEP_METRIC_BGR255)(IMAGE)
    assert y.mean(dim=(1, 2)).tolist() == pytest.approx([50 - 104, 100 - 117, 200 - 128], abs=1e-3)
    # Caffe ResNet-101: BGR, 0-255 minus [103.939, 116.779, 123.68]
    z = data.build_transform(preset, train=False, image_size=32, normalize=CAFFE_BGR255)(IMAGE)
    assert z.mean(dim=(1, 2)).tolist() == pytest.approx([50 - 103.939, 100 - 116.779, 200 - 123.68], abs=1e-3)


def test_landmark_preset_keeps_size():
    x = data.build_transform("landmark", train=False)(IMAGE)
    assert x.shape == (3, 200, 300) and x.dtype == torch.uint8


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UnknownOptionError, match="unknown transform preset 'imagenet'; choose one of: abir, cgd"):
        data.build_transform("imagenet", train=True)


@pytest.mark.parametrize("spec", [IMAGENET_RGB, DEEP_METRIC_BGR255])
@pytest.mark.parametrize("preset", ["cgd", "abir", "das", "landmark"])
def test_normalisation_matches_torchvision_float_conversion(preset, spec):
    import numpy as np
    from torchvision.transforms import v2

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    torch.manual_seed(2)
    ours = data.build_transform(preset, train=True, image_size=32, normalize=spec)(image)
    torch.manual_seed(2)
    pixels = v2.Compose(data.TRANSFORMS.get(preset)(True, 32) + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(
        image).as_subclass(torch.Tensor)
    if spec.colour == "BGR255":
        expected = v2.functional.normalize(pixels.flip(0), [104 / 255, 117 / 255, 128 / 255], [1 / 255] * 3)
    else:
        expected = v2.functional.normalize(pixels, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)
