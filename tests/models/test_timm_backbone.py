"""``timm:<name>`` backbones: CNN maps for the map heads, ViT token pooling, input_spec, weights, ViT knobs.

Tiny timm models from random init at 32-64 px; weight files are written by the tests themselves.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from metric_retrieval import models
from metric_retrieval.models.backbones import BACKBONES
from metric_retrieval.models.pooling import gem
from metric_retrieval.training.builders import build_optimizer, build_scheduler
from metric_retrieval.utils.errors import UnknownOptionError, UserError

VIT = "timm:vit_tiny_patch16_224"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return models.build_backbone(VIT).eval()


@pytest.mark.parametrize("name, channels", [("resnet18", 512), ("convnext_atto", 320)])
@pytest.mark.parametrize("head, options", [("baseline", {}), ("cgd", {"gd_config": "SG"}), ("gem", {}),
                                           ("rmac", {}), ("clf", {})])
def test_cnn_map_feeds_every_map_head(name, channels, head, options):
    """The trunk returns timm's own ``forward_features`` map; each map head turns it into an L2 embedding."""
    torch.manual_seed(0)
    dim = None if head == "rmac" else 32  # R-MAC keeps the backbone's width
    model = models.build_model(f"timm:{name}", head, dim, 5 if head in ("cgd", "clf") else None, **options).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.backbone(x)
        assert fmap.shape == (2, channels, 2, 2)
        assert torch.equal(fmap, model.backbone.net.forward_features(x))
        emb, _ = model(x)
    assert emb.shape[0] == 2 and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_vit_token_pools_match_the_tokens(vit):
    """cls = token 0, mean = mean of the patch tokens, gem = GeM over them, map = the patch grid (h, w)."""
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        tokens = vit.net.forward_features(x)  # (2, 1 + 2*3, 192)
        patches = tokens[:, 1:]
        expected = {"cls": tokens[:, 0], "mean": patches.mean(1),
                    "gem": (patches.clamp(min=1e-6) ** 3).mean(1) ** (1 / 3)}
        for pool, want in expected.items():
            vit.token_pool = pool
            out = vit(x)
            assert out.shape == (2, 192, 1, 1)
            torch.testing.assert_close(out[:, :, 0, 0], want)
        vit.token_pool = "map"
        grid = vit(x)
    vit.token_pool = "cls"
    assert grid.shape == (2, 192, 2, 3)
    torch.testing.assert_close(grid[1, :, 1, 2], patches[1, 5])  # row-major patch order
    torch.testing.assert_close(gem(grid, p=3.0), expected["gem"])


@pytest.mark.parametrize("projection, dim", [("linear", 64), ("identity", 192)])
def test_token_head_projection(projection, dim):
    torch.manual_seed(0)
    model = models.build_model(VIT, "token", dim, None, projection=projection).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb, logits = model(x)
        cls = model.backbone.net.forward_features(x)[:, 0]
    assert logits is None and emb.shape == (2, dim)
    if projection == "identity":
        torch.testing.assert_close(emb, torch.nn.functional.normalize(cls, dim=1))
    with pytest.raises(UserError, match="projection=identity keeps the token width 192"):
        models.build_model(VIT, "token", 64, None, projection="identity")


def test_input_spec_comes_from_the_pretrained_cfg():
    vit = models.build_backbone(VIT, dynamic_img_size=False)
    assert (vit.input_spec.mean, vit.input_spec.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert vit.input_spec.interpolation == "bicubic" and vit.input_spec.input_size == (3, 224, 224)
    assert models.build_backbone(VIT).input_spec.input_size is None  # dynamic_img_size: any size
    cnn = models.build_backbone("timm:resnet18")
    assert cnn.input_spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert cnn.input_spec.std == pytest.approx((0.229, 0.224, 0.225)) and cnn.input_spec.colour == "RGB"


def test_names_and_option_errors():
    assert "timm:resnet18" in BACKBONES and BACKBONES.canonical("timm:resnet18") == "timm:resnet18"
    with pytest.raises(UserError, match="timm has no model 'no_such_net'"):
        models.build_backbone("timm:no_such_net")
    with pytest.raises(UnknownOptionError, match="timm:<name>"):
        models.build_backbone("tim:resnet18")
    with pytest.raises(UserError, match="token_pool must be one of cls, mean, gem, map"):
        models.build_backbone(VIT, token_pool="max")
    with pytest.raises(UserError, match="apply to ViT-style timm models"):
        models.build_backbone("timm:resnet18", token_pool="mean")
    with pytest.raises(UserError, match="freeze_blocks applies to ViT-style"):
        models.build_backbone("timm:resnet18", freeze_blocks=1)
    with pytest.raises(TypeError, match="unknown model option"):
        models.build_model("timm:resnet18", "gem", stage3_stride=1)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_loads_exactly(tmp_path, suffix):
    """A full timm state dict (classifier included, as timm ships it) loads into the classifier-free trunk."""
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, str(path))
    trunk = models.build_backbone("timm:resnet18", pretrained=str(path))
    assert trunk.pretrained_source == str(path)
    for key, value in trunk.net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_file_mismatch_names_the_keys(tmp_path):
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        models.build_backbone("timm:resnet18", pretrained=str(path))
    assert "missing keys (1): layer4.1.bn2.weight" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)
    with pytest.raises(UserError, match="weights file not found"):
        models.build_backbone("timm:resnet18", pretrained=str(tmp_path / "absent.safetensors"))


def test_vit_weights_at_224_resampled_to_img_size(tmp_path):
    """A 224-px ViT checkpoint (197 position embeddings) loads into a 32-px model (5) through timm's filter."""
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    trunk = models.build_backbone(VIT, pretrained=str(path), img_size=32, dynamic_img_size=False)
    assert trunk.net.pos_embed.shape == (1, 5, 192)
    assert trunk.input_spec.input_size == (3, 32, 32)
    assert torch.equal(trunk.net.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    assert torch.equal(trunk.net.pos_embed[:, 0], source.pos_embed[:, 0])  # class position kept
    assert trunk(torch.randn(1, 3, 32, 32)).shape == (1, 192, 1, 1)


def test_vit_knobs_drop_path_freeze_layer_decay():
    trunk = models.build_backbone(VIT, drop_path_rate=0.1, freeze_blocks=2, layer_decay=0.5)
    assert trunk.net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert not trunk.net.pos_embed.requires_grad and not trunk.net.cls_token.requires_grad
    assert not any(p.requires_grad for p in trunk.net.patch_embed.parameters())
    assert not any(p.requires_grad for p in trunk.net.blocks[1].parameters())
    assert all(p.requires_grad for p in trunk.net.blocks[2].parameters())
    model = models.RetrievalModel(trunk, models.heads.HEADS.build("token", in_channels=192, feature_dim=16))
    cfg = {"lr": 1e-3, "weight_decay": 0.05, "backbone_lr_mult": 1.0, "head_lr_mult": 1.0, "optimizer": "adamw"}
    criterion = type("NoParams", (), {"param_groups": staticmethod(lambda lr: [])})()
    optimizer = build_optimizer(cfg, model, criterion)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    depth = len(trunk.net.blocks)  # timm layer ids: 0 embeddings, i + 1 block i, depth final norm; 0.5^(depth-id)
    assert lr_of[id(trunk.net.blocks[2].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5 ** (depth - 3))
    assert lr_of[id(trunk.net.blocks[-1].mlp.fc1.weight)] == pytest.approx(1e-3)
    assert lr_of[id(trunk.net.norm.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.head.proj.weight)] == pytest.approx(1e-3)
    assert id(trunk.net.pos_embed) not in lr_of  # frozen parameters are left out
    assert wd_of[id(trunk.net.norm.weight)] == 0.0 and wd_of[id(trunk.net.blocks[5].mlp.fc1.weight)] == 0.05


def test_dynamic_img_size_accepts_any_size(vit):
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 48, 64)).shape == (1, 192, 1, 1)
    fixed = models.build_backbone(VIT, dynamic_img_size=False)
    with pytest.raises(AssertionError):  # timm's own check: a fixed-size ViT refuses other sizes
        fixed(torch.randn(1, 3, 48, 64))


_HF_SCRIPT = """
import sys, torch
from metric_retrieval import models
from metric_retrieval.utils.errors import UserError
try:
    trunk = models.build_backbone("timm:vit_tiny_patch16_224", pretrained=True)
except UserError as err:
    print("USERERROR", err); sys.exit(3)
want = torch.load(sys.argv[1], weights_only=True)
print("EQUAL", all(torch.equal(v, want[k]) for k, v in trunk.net.state_dict().items()), trunk.pretrained_source)
"""


def _run_offline(tmp_path, cache, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run([sys.executable, "-c", _HF_SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow  # two fresh interpreters (import torch + timm)
def test_pretrained_true_reads_the_local_hf_cache(tmp_path):
    """timm's weights come from the Hugging Face cache layout, offline; an empty cache is a clear error."""
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    repo = timm.create_model("vit_tiny_patch16_224", pretrained=False).pretrained_cfg["hf_hub_id"]
    snapshot = tmp_path / "cache" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text(commit)
    (snapshot / "snapshots" / commit).mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()},
                                str(snapshot / "snapshots" / commit / "model.safetensors"))
    trunk_state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    torch.save(trunk_state, tmp_path / "want.pth")
    done = _run_offline(tmp_path, tmp_path / "cache", str(tmp_path / "want.pth"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "EQUAL True timm vit_tiny_patch16_224" in done.stdout
    empty = _run_offline(tmp_path, tmp_path / "empty", str(tmp_path / "want.pth"))
    assert empty.returncode == 3, empty.stderr[-2000:]
    assert "local Hugging Face cache" in empty.stdout and "pretrained=PATH" in empty.stdout


def _layer_decay_scale(name: str, depth: int, decay: float | None) -> float:
    """The lr scale layer decay should give ``name``, written out here independently of timm: embeddings are
    layer 0, block i is layer i + 1, the final norm shares the last block's layer ``depth`` (timm's
    ``group_matcher``), the scale is ``decay^(depth - layer)``, and the head keeps the full lr."""
    if decay is None:
        return 1.0
    if name.startswith("backbone.net.blocks."):
        layer = int(name.split(".")[3]) + 1
    elif name.startswith(("backbone.net.cls_token", "backbone.net.pos_embed", "backbone.net.patch_embed")):
        layer = 0
    else:
        layer = depth
    return decay ** (depth - layer)


@pytest.mark.parametrize("layer_decay, freeze", [(None, 0), (0.5, 0), (0.5, 2)])
def test_one_step_moves_every_trainable_parameter_by_its_groups_lr(layer_decay, freeze):
    """Gradients reach every trainable parameter (class token, position embedding and patch embedding
    included, with drop-path on), and the optimiser built by the trainer applies each group's lr through the
    warm-up schedule: with plain SGD one step is exactly ``-lr · scale · warmup · grad``. Frozen ones stay."""
    torch.manual_seed(0)
    model = models.build_model(VIT, "token", 16, None, token_pool="mean", drop_path_rate=0.1,
                               layer_decay=layer_decay, freeze_blocks=freeze).double().train()
    cfg = {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.0, "backbone_lr_mult": 1.0, "head_lr_mult": 1.0,
           "optimizer": "sgd", "num_epochs": 1, "warmup_epochs": 1, "scheduler": "cosine"}
    criterion = type("NoParams", (), {"param_groups": staticmethod(lambda lr: [])})()
    optimizer = build_optimizer(cfg, model, criterion)
    build_scheduler(cfg, optimizer, steps_per_epoch=4)  # step 0 of a 4-step linear warm-up: lr x 1/4
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    emb, _ = model(torch.randn(4, 3, 32, 32, dtype=torch.float64))  # float64: the step is exact
    loss = -(emb[0::2] * emb[1::2]).sum() + (emb[0::2] * emb[1::2].roll(1, 0)).sum()
    loss.backward()
    optimizer.step()
    depth = len(model.backbone.net.blocks)
    frozen_prefixes = tuple(f"backbone.net.{m}" for m in ("cls_token", "pos_embed", "patch_embed.",
                                                          *(f"blocks.{i}." for i in range(freeze)))) if freeze else ()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == \
        {n for n in before if n.startswith(frozen_prefixes)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None and torch.equal(param, before[name]), name
            continue
        assert param.grad is not None and param.grad.abs().max() > 0, f"no gradient reaches {name}"
        step = 0.1 * _layer_decay_scale(name, depth, layer_decay) / 4
        torch.testing.assert_close(before[name] - param.detach(), step * param.grad, rtol=1e-6, atol=1e-15,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_depth_builds_fewer_blocks_of_the_same_vit():
    """``depth=2`` of ViT-S/16: 2 blocks of width 384, the same block shapes, any input size (dynamic)."""
    trunk = models.build_backbone("timm:vit_small_patch16_224", depth=2)
    full = timm.create_model("vit_small_patch16_224", num_classes=0)
    assert len(trunk.net.blocks) == 2 and trunk.num_features == 384
    assert {k: v.shape for k, v in trunk.net.blocks[1].state_dict().items()} == \
        {k: v.shape for k, v in full.blocks[1].state_dict().items()}
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 48, 64)).shape == (1, 384, 1, 1)
    with pytest.raises(UserError, match="depth must be a positive number of blocks"):
        models.build_backbone(VIT, depth=0)
    with pytest.raises(UserError, match="does not accept depth"):
        models.build_backbone("timm:resnet18", depth=2)
