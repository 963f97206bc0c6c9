"""build_model: option routing, errors naming the culprit, paper defaults, list_models."""
import pytest
import torch

from metric_retrieval import models
from metric_retrieval.utils.errors import UnknownOptionError, UserError


def test_returns_retrieval_model_with_contract():
    model = models.build_model("resnet18", "cgd", feature_dim=64, num_classes=5, gd_config="MG", pooling=None)
    assert isinstance(model, models.RetrievalModel)
    assert model.feature_dim == 64 and model.num_classes == 5
    assert model.input_spec.colour == "RGB"
    assert isinstance(model.backbone, models.Backbone) and isinstance(model.head, models.Head)
    assert model.config == {"backbone": "resnet18", "head": "cgd", "feature_dim": 64, "num_classes": 5,
                            "options": {"gd_config": "MG"}}
    rebuilt = models.build_model(**{k: v for k, v in model.config.items() if k != "options"},
                                 **model.config["options"])
    assert rebuilt.head.gd_config == "MG"


def test_unknown_option_is_a_type_error_listing_valid_ones():
    with pytest.raises(TypeError) as info:
        models.build_model("resnet18", "clf", 16, 3, gd_config="SG")
    message = str(info.value)
    assert "gd_config" in message
    for valid in ("pooling", "pretrained", "stage3_stride", "frozen_bn", "embedding_norm", "freeze_backbone"):
        assert valid in message


def test_unknown_names_list_the_registry():
    with pytest.raises(UnknownOptionError, match="resnet50"):
        models.build_model("resnet51", "clf")
    with pytest.raises(UnknownOptionError, match="regional_attention"):
        models.build_model("resnet50", "cdg")


def test_aliases():
    model = models.build_model("se_resnet50", "ra")
    assert model.config["backbone"] == "seresnet50" and model.config["head"] == "regional_attention"


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="gd_config"):
        models.build_model("resnet18", "cgd", 16, 3, gd_config="XYZ")
    with pytest.raises(UserError, match="feature_dim"):
        models.build_model("resnet18", "rmac", 256)


def test_paper_backbone_defaults_and_overrides():
    cgd = models.build_model("resnet18", "cgd", 16, 3)
    assert cgd.backbone.stage3_stride == 1 and cgd.backbone.frozen_bn
    plain = models.build_model("resnet18", "cgd", 16, 3, stage3_stride=2, frozen_bn=False)
    assert plain.backbone.stage3_stride == 2 and not plain.backbone.frozen_bn
    gem = models.build_model("resnet18", "gem")
    assert gem.backbone.stage3_stride == 2 and not gem.backbone.frozen_bn
    abir = models.build_model("vgg16", "abir", use_se=False)
    assert abir.head.use_se is False


def test_freeze_backbone():
    model = models.build_model("resnet18", "baseline", 8, freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    ra = models.build_model("resnet18", "regional_attention", freeze_backbone=False)
    assert all(p.requires_grad for p in ra.backbone.parameters())


def test_abir_on_a_resnet_uses_all_taps():
    model = models.build_model("resnet18", "abir", 32)
    assert len(model.head.blocks) == 3
    emb, logits = model(torch.randn(1, 3, 64, 64))
    assert emb.shape == (1, 32) and logits is None


def test_list_models_prints_everything(capsys):
    table = models.list_models()
    out = capsys.readouterr().out
    for name in ("resnet18", "resnet50", "resnet101", "resnext50", "seresnet50", "caffe_resnet101", "vgg16",
                 "baseline", "cgd", "clf", "abir", "rmac", "regional_attention", "gem", "gd_config='SG'"):
        assert name in out
    assert set(table["heads"]) == set(models.HEADS.names())
