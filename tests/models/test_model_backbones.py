"""Backbone shapes at 224 px (torchvision ResNets, CGD/CLF stage-3 stride 1, ABIR VGG16 taps), taps, input specs
and frozen BatchNorm."""
import pytest
import torch

from metric_retrieval import models
from metric_retrieval.models.backbones import CAFFE_BGR255, IMAGENET_RGB

SHAPES = [  # (backbone, options, final map (C, H, W) at 224)
    ("resnet18", {}, (512, 7, 7)),
    ("resnet18", {"stage3_stride": 1}, (512, 14, 14)),
    ("resnet50", {}, (2048, 7, 7)),
    ("resnet50", {"stage3_stride": 1}, (2048, 14, 14)),
    ("resnet101", {}, (2048, 7, 7)),
    ("resnext50", {"stage3_stride": 1}, (2048, 14, 14)),
    ("seresnet50", {"stage3_stride": 1}, (2048, 15, 15)),
    ("seresnet50", {}, (2048, 8, 8)),
    ("caffe_resnet101", {}, (2048, 7, 7)),
    ("vgg16", {}, (512, 14, 14)),
]


def _check_maps(backbone, out, maps, shape):
    assert tuple(out.shape) == (1, *shape)
    assert backbone.num_features == shape[0]
    assert [m.shape[1] for m in maps] == [info["num_chs"] for info in backbone.feature_info]
    for m, info in zip(maps, backbone.feature_info):
        assert m.shape[-1] in (224 // info["reduction"], 224 // info["reduction"] + 1)  # +1: ceil-mode stem
    assert maps[-1].shape == out.shape


@pytest.mark.parametrize("name, options, shape", SHAPES, ids=[f"{n}-{o}" for n, o, _ in SHAPES])
def test_final_map_shape(name, options, shape):
    """Shapes at 224 px, propagated on the meta device (no compute; the real run is the slow twin below)."""
    with torch.device("meta"):
        backbone = models.build_backbone(name, **options).eval()
        x = torch.empty(1, 3, 224, 224)
        _check_maps(backbone, backbone.forward_features(x), backbone.forward_intermediates(x), shape)


@pytest.mark.slow
@pytest.mark.parametrize("name, options, shape", SHAPES, ids=[f"{n}-{o}" for n, o, _ in SHAPES])
@torch.no_grad()
def test_final_map_shape_real_forward(name, options, shape):
    backbone = models.build_backbone(name, **options).eval()
    x = torch.randn(1, 3, 224, 224)
    out, maps = backbone.forward_features(x), backbone.forward_intermediates(x)
    _check_maps(backbone, out, maps, shape)
    assert torch.equal(maps[-1], out)


@torch.no_grad()
def test_real_forward_matches_meta_shapes_resnet18():
    backbone = models.build_backbone("resnet18", stage3_stride=1).eval()
    x = torch.randn(1, 3, 224, 224)
    out, maps = backbone.forward_features(x), backbone.forward_intermediates(x)
    _check_maps(backbone, out, maps, (512, 14, 14))
    assert torch.equal(maps[-1], out)


@torch.no_grad()
def test_seresnet50_trunk_shapes_clf():
    """64x112 → pool 64x57 → 256x57 → 512x29 → 1024x29 → 2048x15 (pad-1 ceil stem pool, stage3 stride 1)."""
    backbone = models.build_backbone("seresnet50", stage3_stride=1).eval()
    maps = backbone.forward_intermediates(torch.randn(1, 3, 224, 224))  # a real forward: ceil-mode semantics
    expected = [(256, 57, 57), (512, 29, 29), (1024, 29, 29), (2048, 15, 15)]
    assert [tuple(m.shape[1:]) for m in maps] == expected


@torch.no_grad()
def test_vgg_taps():
    backbone = models.build_backbone("vgg16").eval()
    maps = backbone.forward_intermediates(torch.randn(1, 3, 112, 112))
    assert [tuple(m.shape[1:]) for m in maps] == [(256, 28, 28), (512, 14, 14), (512, 7, 7)]
    assert all(m.min() >= 0 for m in maps)  # post-ReLU
    assert [i["module"] for i in backbone.feature_info] == ["conv3_3", "conv4_3", "conv5_3"]


def test_taps_option_and_errors():
    backbone = models.build_backbone("resnet18", taps="layer2,layer4")
    assert [i["module"] for i in backbone.feature_info] == ["layer2", "layer4"]
    maps = backbone.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [128, 512]
    with pytest.raises(ValueError, match="layer1, layer2"):
        models.build_backbone("resnet18", taps=["layer9"])
    with pytest.raises(ValueError, match="stage3_stride"):
        models.build_backbone("resnet18", stage3_stride=3)
    with pytest.raises(TypeError):
        models.build_backbone("vgg16", stage3_stride=1)


def test_input_specs():
    assert models.build_backbone("resnet18").input_spec == IMAGENET_RGB
    caffe = models.build_backbone("caffe_resnet101").input_spec
    assert caffe == CAFFE_BGR255
    assert caffe.mean == (103.939, 116.779, 123.68) and caffe.std == (1.0, 1.0, 1.0)
    assert caffe.colour == "BGR255"


def test_caffe_topology():
    """Stride on the first 1x1 conv, stem max-pool k3/s2/pad 0 (ResNet-101) or pad 1 (SE-ResNet-50), ceil."""
    caffe = models.build_backbone("caffe_resnet101")
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert caffe.maxpool.padding == 0 and caffe.maxpool.ceil_mode
    assert len(caffe.layer3) == 23
    se = models.build_backbone("seresnet50")
    assert se.maxpool.padding == 1 and se.maxpool.ceil_mode
    assert se.layer1[0].se_module.fc1.out_channels == 256 // 16
    tv = models.build_backbone("resnet50")
    assert tv.layer2[0].conv2.stride == (2, 2) and tv.layer2[0].conv1.stride == (1, 1)  # torchvision V1.5


def _bn_stats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_frozen_bn_keeps_statistics_and_trains_affine():
    torch.manual_seed(0)
    model = models.build_model("resnet18", "baseline", feature_dim=8, frozen_bn=True)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.head.training
    stats = _bn_stats(model.backbone)
    affine = bns[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    embedding, _ = model(torch.randn(2, 3, 64, 64) * 3 + 1)
    embedding[:, 0].sum().backward()
    optimizer.step()
    after = _bn_stats(model.backbone)
    assert all(torch.equal(stats[k], after[k]) for k in stats)
    assert not torch.equal(affine, bns[0].weight.detach())
    assert bns[0].weight.requires_grad


def test_unfrozen_bn_updates_statistics():
    model = models.build_model("resnet18", "baseline", feature_dim=8, frozen_bn=False).train()
    stats = _bn_stats(model.backbone)
    model(torch.randn(2, 3, 64, 64))
    assert not all(torch.equal(stats[k], v) for k, v in _bn_stats(model.backbone).items())


def test_frozen_bn_survives_sync_bn_conversion():
    model = models.build_model("resnet18", "cgd", feature_dim=8, num_classes=3)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).train()
    syncs = [m for m in converted.backbone.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert syncs and not any(m.training for m in syncs)
