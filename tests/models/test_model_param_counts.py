"""Exact parameter counts of the CLF and CGD tables (the CLF README and the CGD README).

Models are built on the ``meta`` device: parameters get shapes but no storage or initialisation, so even the
SOP classifiers (11,318 classes) cost nothing.
"""
import pytest
import torch

from metric_retrieval import models

DATASETS = {"cars": 98, "cub": 100, "sop": 11318, "inshop": 3997}

CLF_1536 = {  # CLF README, D = 1536, bias-free classifier
    "resnet18": {"cars": 12_116_544, "cub": 12_119_616, "sop": 29_350_464, "inshop": 18_105_408},
    "resnet50": {"cars": 26_807_360, "cub": 26_810_432, "sop": 44_041_280, "inshop": 32_796_224},
    "seresnet50": {"cars": 29_338_352, "cub": 29_341_424, "sop": 46_572_272, "inshop": 35_327_216},
}
CGD_SG_1536 = {  # CGD README, gd_config SG, D = 1536
    "resnet50": {"cars": 26_858_658, "cub": 26_862_756, "sop": 49_848_438, "inshop": 34_847_709},
    "resnext50": {"cars": 26_330_530, "cub": 26_334_628, "sop": 49_320_310, "inshop": 34_319_581},
}
TRUNKS = {"resnet18": 11_176_512, "resnet50": 23_508_032, "resnext50": 22_979_904, "seresnet50": 26_039_024,
          "vgg16": 14_714_688, "resnet101": 42_500_160, "caffe_resnet101": 42_500_160}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("backbone", sorted(CLF_1536))
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_clf_table(backbone, dataset):
    with torch.device("meta"):
        model = models.build_model(backbone, "clf", feature_dim=1536, num_classes=DATASETS[dataset],
                                   pretrained=False)
    assert count(model) == CLF_1536[backbone][dataset]


@pytest.mark.parametrize("backbone", sorted(CGD_SG_1536))
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_cgd_table(backbone, dataset):
    with torch.device("meta"):
        model = models.build_model(backbone, "cgd", feature_dim=1536, num_classes=DATASETS[dataset],
                                   gd_config="SG", pretrained=False)
    assert count(model) == CGD_SG_1536[backbone][dataset]


@pytest.mark.parametrize("backbone", sorted(TRUNKS))
def test_trunk_counts(backbone):
    with torch.device("meta"):
        trunk = models.build_backbone(backbone)
    assert count(trunk) == TRUNKS[backbone]


@pytest.mark.parametrize("gd_config", ["S", "MG", "SMG", "GSM"])
def test_cgd_head_formula_is_independent_of_the_branch_count(gd_config):
    """Head params = C·D + 2C (BN1d) + (C + 1)·M whatever the number of branches (CGD ``model.py``)."""
    with torch.device("meta"):
        model = models.build_model("resnet50", "cgd", feature_dim=1536, num_classes=98, gd_config=gd_config)
    assert count(model.head) == 2048 * 1536 + 2 * 2048 + 2049 * 98


def test_clf_default_dim_gives_the_documented_mismatch():
    """With the shipped default D = 512 the ResNet18/CARS model has 11,489,856 params (CLF code default)."""
    with torch.device("meta"):
        model = models.build_model("resnet18", "clf", feature_dim=None, num_classes=98)
    assert model.feature_dim == 512 and count(model) == 11_489_856


def test_abir_param_formula():
    """VGG16 conv + Σ blocks (SE r=16, C_int = C_l/2) + embedding 1280·512 + 512 (the ABIR head's budget)."""
    with torch.device("meta"):
        model = models.build_model("vgg16", "abir")
        plain = models.build_model("vgg16", "abir", use_se=False)

    def block(cl, cg=512, r=16):
        ci = cl // 2
        se = 2 * cl * (cl // r) + cl // r + cl
        return se, cl * ci + (cg * ci + ci) + (ci + 1)

    se1, att1 = block(256)
    se2, att2 = block(512)
    embedding = 1280 * 512 + 512
    assert count(model) == 14_714_688 + se1 + att1 + se2 + att2 + embedding
    assert count(plain) == 14_714_688 + att1 + att2 + embedding
