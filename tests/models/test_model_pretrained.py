"""`pretrained` weights: local files (plain / wrapped / prefixed), torchvision enum resolution without
downloading, and the Cadene SE-ResNet-50 key conversion."""
import pytest
import torch
import torchvision

from metric_retrieval import models
from metric_retrieval.models.backbones.pretrained import resolve_torchvision_weights
from metric_retrieval.utils.errors import UserError


def _torchvision_state(arch="resnet18", seed=0):
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None).state_dict()  # includes fc.*


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model_module"])
def test_local_file(tmp_path, layout):
    state = _torchvision_state()
    if layout == "state_dict":
        obj = {"state_dict": state, "epoch": 1}
    elif layout == "model_module":
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = state
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    model = models.build_model("resnet18", "clf", 16, 3, pretrained=str(path))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert model.backbone.pretrained_source == str(path)
    assert "pretrained" not in model.config["options"]


def test_retrieval_model_checkpoint_as_pretrained(tmp_path):
    """A trainer checkpoint of a whole model initialises the backbone of a model with another head."""
    torch.manual_seed(0)
    trained = models.build_model("resnet18", "cgd", 16, 3)
    path = tmp_path / "model_best.pth"
    torch.save({"model": trained.state_dict(), "epoch": 4}, path)
    model = models.build_model("resnet18", "clf", 32, 5, pretrained=str(path))
    assert torch.equal(model.backbone.layer3[0].conv1.weight, trained.backbone.layer3[0].conv1.weight)


def test_local_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        models.build_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))
    state = _torchvision_state("resnet50")
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"shape mismatches.*conv1.weight|missing keys"):
        models.build_backbone("resnet18", pretrained=str(path))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="is not a PyTorch file written by torch.save: it holds text"):
        models.build_backbone("resnet18", pretrained=str(bad))
    bad.write_bytes(b"PK\x03\x04 torn zip archive")
    with pytest.raises(UserError, match="cannot read"):
        models.build_backbone("resnet18", pretrained=str(bad))


def test_vgg_local_file(tmp_path):
    torch.manual_seed(0)
    state = models.build_backbone("vgg16").state_dict()  # features.0 ... features.28, torchvision's names
    state["classifier.6.weight"], state["classifier.6.bias"] = torch.zeros(10, 4), torch.zeros(10)  # dropped
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    trunk = models.build_backbone("vgg16", pretrained=str(path))
    assert torch.equal(trunk.features[28].weight, state["features.28.weight"])


def test_imagenet_resolution_without_download():
    weights = resolve_torchvision_weights(True, torchvision.models.ResNet50_Weights, "IMAGENET1K_V1")
    assert weights is torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    # V1 is the original 2017 recipe (acc@1 76.13) that CGD loaded as resnet50-19c8e357; torchvision now
    # serves the same weights re-serialised as resnet50-0676ba61.pth.
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == 76.13
    enum = torchvision.models.ResNet50_Weights
    assert resolve_torchvision_weights("imagenet", enum, "IMAGENET1K_V1") is weights
    assert resolve_torchvision_weights("IMAGENET1K_V2", enum, "IMAGENET1K_V1") is enum.IMAGENET1K_V2
    assert resolve_torchvision_weights("/some/file.pth", enum, "IMAGENET1K_V1") is None


@pytest.mark.parametrize("name", ["seresnet50", "caffe_resnet101"])
def test_no_torchvision_weights_for_caffe_nets(name):
    with pytest.raises(UserError, match="local state-dict file"):
        models.build_backbone(name, pretrained=True)


def cadene_se_resnet50_state_dict(seed=0):
    """A synthetic state dict with the key names and shapes of Cadene's ``se_resnet50-ce0d4300.pth``.

    Written from the Cadene layout (``layer0`` stem, ``SEResNetBottleneck``, ``se_module.fc1/fc2`` 1x1
    convs with bias, ``downsample.0/1``, ``last_linear``), with no ``num_batches_tracked`` buffers (the file
    predates them).
    """
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g)

    def bn(prefix, c):
        return {f"{prefix}.weight": t(c), f"{prefix}.bias": t(c), f"{prefix}.running_mean": t(c),
                f"{prefix}.running_var": t(c).abs() + 0.5}

    sd = {"layer0.conv1.weight": t(64, 3, 7, 7), **bn("layer0.bn1", 64)}
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for j in range(blocks):
            p = f"layer{i}.{j}"
            sd[f"{p}.conv1.weight"] = t(planes, inplanes, 1, 1)
            sd.update(bn(f"{p}.bn1", planes))
            sd[f"{p}.conv2.weight"] = t(planes, planes, 3, 3)
            sd.update(bn(f"{p}.bn2", planes))
            sd[f"{p}.conv3.weight"] = t(planes * 4, planes, 1, 1)
            sd.update(bn(f"{p}.bn3", planes * 4))
            sd[f"{p}.se_module.fc1.weight"] = t(planes * 4 // 16, planes * 4, 1, 1)
            sd[f"{p}.se_module.fc1.bias"] = t(planes * 4 // 16)
            sd[f"{p}.se_module.fc2.weight"] = t(planes * 4, planes * 4 // 16, 1, 1)
            sd[f"{p}.se_module.fc2.bias"] = t(planes * 4)
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = t(planes * 4, inplanes, 1, 1)
                sd.update(bn(f"{p}.downsample.1", planes * 4))
            inplanes = planes * 4
    sd["last_linear.weight"], sd["last_linear.bias"] = t(1000, 2048), t(1000)
    return sd


def test_cadene_key_conversion(tmp_path):
    sd = cadene_se_resnet50_state_dict()
    assert sum(v.numel() for k, v in sd.items() if "running" not in k) == 28_088_024  # Cadene se_resnet50
    converted = models.convert_cadene_se_resnet50(sd)
    assert "conv1.weight" in converted and "bn1.running_var" in converted
    assert not any(k.startswith(("layer0.", "last_linear.")) for k in converted)

    path = tmp_path / "se_resnet50-ce0d4300.pth"
    torch.save(sd, path)
    model = models.build_model("seresnet50", "clf", 1536, 98, pretrained=str(path))
    trunk = model.backbone
    assert torch.equal(trunk.conv1.weight, sd["layer0.conv1.weight"])
    assert torch.equal(trunk.bn1.running_mean, sd["layer0.bn1.running_mean"])
    assert torch.equal(trunk.layer1[0].se_module.fc1.weight, sd["layer1.0.se_module.fc1.weight"])
    assert torch.equal(trunk.layer4[2].se_module.fc2.bias, sd["layer4.2.se_module.fc2.bias"])
    assert torch.equal(trunk.layer3[0].downsample[0].weight, sd["layer3.0.downsample.0.weight"])
    assert trunk.layer3[0].conv1.stride == (1, 1)  # CLF: stage 3 stride 1, weights unchanged


def test_imagenet_offline_names_the_flag(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(UserError, match="download it and pass the file as --pretrained PATH"):
        models.build_model("resnet18", "baseline", 16, 0, pretrained="imagenet")
