"""Heads: output shapes, L2 normalisation, the formulas of the specs, and option validation."""
import pytest
import torch
import torch.nn.functional as F

from metric_retrieval import models
from metric_retrieval.models.heads import ABIRHead, CGDHead, CLFHead, GeMHead, RegionalAttentionHead, RMACHead
from metric_retrieval.models.heads.rmac import original_map_boxes, rmac_regions
from metric_retrieval.models.pooling import gem, mac, sap, spoc


def unit_rows(x):
    return torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)


@pytest.fixture
def fmap():
    torch.manual_seed(0)
    return torch.relu(torch.randn(2, 32, 6, 9))


# -- pooling ---------------------------------------------------------------------------------------------
def test_poolings_closed_forms(fmap):
    assert torch.allclose(spoc(fmap), fmap.flatten(2).mean(2))
    assert torch.equal(mac(fmap), fmap.flatten(2).max(2).values)
    assert torch.allclose(gem(fmap, 1.0, eps=0.0), spoc(fmap), atol=1e-6)
    cube = fmap.clamp(min=1e-6).pow(3).flatten(2).mean(2).pow(1 / 3)
    assert torch.allclose(gem(fmap), cube)
    assert torch.allclose(gem(fmap, 50.0), mac(fmap), rtol=0.1)


def test_sap_matches_the_gram_matrix_formula(fmap):
    y = fmap.double().flatten(2)  # (B, C, N)
    expected = []
    for b in range(y.shape[0]):
        yb = y[b]
        a = (yb @ yb.T).mean(dim=1)
        a = a / a.max()
        s = (yb.T @ yb).mean(dim=1)
        s = s / s.max()
        expected.append((a[:, None] * s[None, :] * yb).max(dim=1).values)
    assert torch.allclose(sap(fmap.double()), torch.stack(expected))


# -- CGD ---------------------------------------------------------------------------------------------------
def test_cgd_shapes_norms_and_first_branch_classifier(fmap):
    head = CGDHead(32, feature_dim=12, num_classes=5, gd_config="MSG").eval()
    emb, logits = head(fmap)
    assert emb.shape == (2, 12) and logits.shape == (2, 5) and unit_rows(emb)
    # each third is an L2-normalised branch, scaled by 1/sqrt(3) by the final L2
    for part in emb.split(4, dim=1):
        assert torch.allclose(part.norm(dim=1), torch.full((2,), 3 ** -0.5), atol=1e-5)
    assert torch.allclose(logits, head.auxiliary(mac(fmap)))  # M is first: MAC feeds the classifier
    assert torch.allclose(emb[:, 4:8] * 3 ** 0.5, F.normalize(head.branches[1](spoc(fmap)), dim=1), atol=1e-6)
    assert all(fc.bias is None for fc in head.branches) and head.auxiliary[1].bias is not None


def test_cgd_validation():
    with pytest.raises(ValueError, match="S, M, G, SM, MS, SG, GS, MG, GM, SMG, MSG, GSM"):
        CGDHead(32, 12, 5, gd_config="SX")
    with pytest.raises(ValueError, match="divisible"):
        CGDHead(32, 10, 5, gd_config="SMG")
    emb, logits = CGDHead(32, 12, None, gd_config="G")(torch.rand(2, 32, 3, 3))
    assert logits is None and emb.shape == (2, 12)


# -- CLF ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["max", "avg", "gem", "sap"])
def test_clf(pooling, fmap):
    head = CLFHead(32, feature_dim=16, num_classes=7, pooling=pooling).eval()
    emb, logits = head(fmap)
    assert emb.shape == (2, 16) and logits.shape == (2, 7) and unit_rows(emb)
    e = head.refactor(models.pooling.GLOBAL_POOLINGS[pooling](fmap))
    assert torch.allclose(emb, F.normalize(e, dim=1))
    assert torch.allclose(logits, head.classifier(e))  # the classifier sees e (pre-L2), through BN1d
    assert head.refactor.bias is None and head.classifier[1].bias is None


def test_clf_unknown_pooling():
    with pytest.raises(ValueError, match="max, avg, gem, sap"):
        CLFHead(32, 16, 7, pooling="median")


# -- ABIR --------------------------------------------------------------------------------------------------
def test_abir_head_math():
    torch.manual_seed(1)
    maps = [torch.rand(2, 8, 12, 12), torch.rand(2, 16, 6, 6), torch.rand(2, 16, 3, 3)]
    head = ABIRHead([8, 16, 16], feature_dim=10)
    emb, logits = head(maps)
    assert emb.shape == (2, 10) and logits is None and unit_rows(emb)
    block = head.blocks[0]
    local = block.se(maps[0])
    g_up = F.interpolate(maps[2], size=(12, 12), mode="bilinear", align_corners=False)
    c = block.psi(torch.relu(block.theta(local) + block.phi(g_up)))  # the paper's order: upsample, then W_g
    attended = torch.sigmoid(c) * local
    assert torch.allclose(block(maps[0], maps[2]), attended, atol=1e-6)
    no_se = ABIRHead([8, 16, 16], feature_dim=10, use_se=False)
    assert all(b.se is None for b in no_se.blocks)


# -- R-MAC -------------------------------------------------------------------------------------------------
def test_rmac_matches_manual_computation(fmap):
    head = RMACHead(32, levels=3)
    emb, logits = head(fmap)
    assert emb.shape == (2, 32) and logits is None and unit_rows(emb)
    total = 0
    for x, y, s in rmac_regions(6, 9, 3):
        total = total + F.normalize(fmap[:, :, y:y + s, x:x + s].amax(dim=(2, 3)), dim=1)
    assert torch.allclose(emb, F.normalize(total, dim=1), atol=1e-6)


def test_rmac_whitening_buffers(fmap):
    head = RMACHead(32)
    before, _ = head(fmap)
    assert [n for n, _ in head.named_parameters()] == []
    torch.manual_seed(3)
    mean, proj = torch.randn(32), torch.randn(32, 32)
    head.set_whitening(mean, proj)
    after, _ = head(fmap)
    assert not torch.allclose(before, after) and unit_rows(after)
    assert torch.equal(head.state_dict()["whitening.projection"], proj)
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        head.set_whitening(torch.zeros(32), torch.zeros(16, 32))
    with pytest.raises(ValueError, match="feature_dim"):
        RMACHead(32, feature_dim=16)


# -- regional attention -----------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("grid", ["original", "cirtorch"])
def test_regional_attention_math(activation, grid, fmap):
    torch.manual_seed(2)
    head = RegionalAttentionHead(32, levels=2, attention_activation=activation, num_classes=4, grid=grid)
    mean, proj = torch.randn(32) * 0.1, torch.randn(32, 32)
    head.set_whitening(mean, proj)
    # the 6x9 map of a 192x288 image (1/32); the original grid is computed on those pixels
    emb, logits = head(fmap, image_size=(192, 288)) if grid == "original" else head(fmap)
    assert emb.shape == (2, 32) and logits.shape == (2, 4) and unit_rows(emb)
    boxes = original_map_boxes(192, 288, 6, 9, 2) if grid == "original" else \
        [(x, y, x + s, y + s) for x, y, s in rmac_regions(6, 9, 2)]
    assert (grid == "original") == (boxes != [(x, y, x + s, y + s) for x, y, s in rmac_regions(6, 9, 2)])
    phi = torch.tanh if activation == "tanh" else F.softplus
    v, w = 0, 0
    g = fmap.mean(dim=(2, 3))
    for x0, y0, x1, y1 in boxes:
        cell = fmap[:, :, y0:y1, x0:x1]
        c = torch.cat([cell.mean(dim=(2, 3)), g], dim=1).unsqueeze(2)
        alpha = F.softplus(head.attention.conv_att_2(phi(head.attention.conv_att_1(c)))).view(2, 1)
        z = (cell.amax(dim=(2, 3)) - mean) @ proj.T
        v = v + alpha * F.normalize(z, dim=1)
        w = w + alpha * cell.amax(dim=(2, 3))
    assert torch.allclose(emb, F.normalize(v / len(boxes), dim=1), atol=1e-5)
    assert torch.allclose(logits, head.classifier(w / len(boxes)), atol=1e-5)


def test_regional_attention_original_grid_reads_the_image_size_from_the_model_input():
    model = models.build_model("resnet18", "regional_attention").eval()
    assert model.head.grid == "original" and model.head.landmark_resize == "bilinear"
    x = torch.randn(1, 3, 200, 136)
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.equal(model(x)[0], model.head(features, image_size=(200, 136))[0])
        assert not torch.allclose(model(x)[0], model.head(features, image_size=(136, 200))[0])
    with pytest.raises(ValueError, match="needs the input image's pixel size"):
        model.head(features)
    cirtorch = models.build_model("resnet18", "regional_attention", grid="cirtorch")
    assert not cirtorch.head.uses_image_size and cirtorch.head.landmark_resize == "thumbnail"
    with pytest.raises(ValueError, match="original, cirtorch"):
        RegionalAttentionHead(32, grid="tolias")


def test_regional_attention_only_attention_is_learnable():
    model = models.build_model("caffe_resnet101", "regional_attention", num_classes=10)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.attention.conv_att_1.weight", "head.attention.conv_att_1.bias",
                         "head.attention.conv_att_2.weight", "head.attention.conv_att_2.bias"]
    shapes = {k: tuple(v.shape) for k, v in model.head.attention.state_dict().items()}
    assert shapes == {"conv_att_1.weight": (64, 4096, 1), "conv_att_1.bias": (64,),
                      "conv_att_2.weight": (1, 64, 1), "conv_att_2.bias": (1,)}
    with pytest.raises(ValueError, match="tanh, softplus"):
        RegionalAttentionHead(32, attention_activation="relu")


# -- GeM and baseline --------------------------------------------------------------------------------------
def test_gem_head(fmap):
    head = GeMHead(32)
    emb, _ = head(fmap)
    assert emb.shape == (2, 32) and unit_rows(emb) and head.whiten is None
    assert isinstance(head.pool.p, torch.nn.Parameter) and head.pool.p.item() == 3.0
    assert torch.allclose(emb, F.normalize(gem(fmap), dim=1), atol=1e-6)
    emb.sum().backward()
    assert head.pool.p.grad is not None
    projected = GeMHead(32, feature_dim=8)
    assert projected.whiten is not None and projected.whiten.bias is not None
    assert unit_rows(projected(fmap)[0]) and projected(fmap)[0].shape == (2, 8)
    with pytest.raises(ValueError, match="whitening"):
        GeMHead(32, feature_dim=8, whitening=False)


@pytest.mark.parametrize("pooling", ["avg", "avgmax"])
def test_baseline_head(pooling, fmap):
    head = models.heads.BaselineHead(32, feature_dim=6, pooling=pooling)
    emb, logits = head(fmap)
    pooled = spoc(fmap) + (mac(fmap) if pooling == "avgmax" else 0)
    assert logits is None and torch.allclose(emb, F.normalize(head.fc(pooled), dim=1), atol=1e-6)
    raw, _ = models.heads.BaselineHead(32, 6, embedding_norm=False)(fmap)
    assert not unit_rows(raw)


# -- full models at 224 -------------------------------------------------------------------------------------
FULL = [  # (backbone, head, feature_dim, num_classes, options, input (H, W), embedding width, has logits)
    ("resnet18", "baseline", 128, 10, {}, (224, 224), 128, False),
    ("resnet18", "cgd", 1536, 98, {"gd_config": "SG"}, (224, 224), 1536, True),
    ("seresnet50", "clf", 1536, 100, {}, (224, 224), 1536, True),
    ("vgg16", "abir", 512, None, {}, (224, 224), 512, False),
    ("resnet50", "gem", None, None, {}, (224, 224), 2048, False),
    ("resnet50", "rmac", None, None, {"levels": 3}, (224, 320), 2048, False),
    ("caffe_resnet101", "regional_attention", None, None, {}, (288, 224), 2048, False),
]


IDS = [f"{b}+{h}" for b, h, *_ in FULL]


def _check_outputs(model, emb, logits, classes, width, has_logits):
    assert emb.shape == (2, width) and emb.dtype == torch.float32
    assert model.feature_dim == width
    assert (logits is not None) == has_logits
    if has_logits:
        assert logits.shape == (2, classes)


@pytest.mark.parametrize("backbone, head, dim, classes, options, size, width, has_logits", FULL, ids=IDS)
def test_full_model_shapes_at_224(backbone, head, dim, classes, options, size, width, has_logits):
    """Every head on its paper backbone at 224 px (non-square for R-MAC/RA), shapes on the meta device."""
    with torch.device("meta"):
        model = models.build_model(backbone, head, dim, classes, **options).eval()
        emb, logits = model(torch.empty(2, 3, *size))
    _check_outputs(model, emb, logits, classes, width, has_logits)


VALUES = [  # real forwards on light trunks (the paper trunks' real 224 px runs are the slow test below)
    ("resnet18", "baseline", 128, 10, {"pooling": "avgmax"}, (64, 64), 128, False),
    ("resnet18", "cgd", 96, 98, {"gd_config": "GSM"}, (64, 64), 96, True),
    ("resnet18", "clf", 64, 100, {"pooling": "sap"}, (64, 64), 64, True),
    ("vgg16", "abir", 512, None, {}, (64, 64), 512, False),
    ("resnet18", "gem", None, None, {}, (64, 64), 512, False),
    ("resnet18", "rmac", None, None, {"levels": 3}, (96, 160), 512, False),
    ("resnet18", "regional_attention", None, 7, {}, (160, 96), 512, True),
]


@pytest.mark.parametrize("backbone, head, dim, classes, options, size, width, has_logits", VALUES,
                         ids=[f"{b}+{h}" for b, h, *_ in VALUES])
@torch.no_grad()
def test_full_model_values(backbone, head, dim, classes, options, size, width, has_logits):
    """Real forward: finite, L2-normalised embeddings and logits of the right shape."""
    torch.manual_seed(0)
    model = models.build_model(backbone, head, dim, classes, **options).eval()
    emb, logits = model(torch.randn(2, 3, *size))
    _check_outputs(model, emb, logits, classes, width, has_logits)
    assert torch.isfinite(emb).all() and unit_rows(emb)


@pytest.mark.slow
@pytest.mark.parametrize("backbone, head, dim, classes, options, size, width, has_logits", FULL, ids=IDS)
@torch.no_grad()
def test_full_model_values_at_224(backbone, head, dim, classes, options, size, width, has_logits):
    model = models.build_model(backbone, head, dim, classes, **options).eval()
    emb, logits = model(torch.randn(2, 3, *size))
    _check_outputs(model, emb, logits, classes, width, has_logits)
    assert unit_rows(emb)


@pytest.mark.parametrize("head", models.HEADS.names())
@pytest.mark.parametrize("backbone", models.BACKBONES.names())
def test_every_registered_backbone_with_every_registered_head(backbone, head):
    """Registry-wide (a new backbone or head is covered without editing this test): each pair builds and
    forwards on the meta device, or refuses the pair with a ModelConfigError naming what it needs."""
    with torch.device("meta"):
        try:
            model = models.build_model(backbone, head, None, 5).eval()
        except models.ModelConfigError as err:
            assert str(err)
            return
        emb, logits = model(torch.empty(2, 3, 96, 64))
    assert emb.shape == (2, model.feature_dim)
    assert logits is None or logits.shape == (2, 5)
    assert model.input_spec.colour in ("RGB", "BGR255")
