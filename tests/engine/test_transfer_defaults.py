"""Honest defaults for a user's own data: cached ImageNet weights by default, a clear stop without them.

The caches are faked: a state dict with known values written where torchvision keeps the ResNet-18
ImageNet file (under a ``TORCH_HOME`` in ``tmp_path``), or where ``hf_hub_download`` keeps timm's file (an
offline Hugging Face cache in ``tmp_path``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

from metric_retrieval.models.backbones import cached_pretrained, imagenet_weight_file, imagenet_weights
from metric_retrieval.training import builders, resolve_config, train
from metric_retrieval.utils.errors import UserError

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _fake_cached_resnet18(torch_home) -> dict[str, torch.Tensor]:
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.arange(state["conv1.weight"].numel(), dtype=torch.float32).view_as(
        state["conv1.weight"])
    path = torch_home / "hub" / "checkpoints" / RESNET18_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_cached_imagenet_weights_are_the_default_with_data_path(torch_home, tmp_path):
    state = _fake_cached_resnet18(torch_home)
    assert imagenet_weight_file("resnet18") == torch_home / "hub" / "checkpoints" / RESNET18_FILE
    cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "resnet18"])
    cfg["pretrained"] = builders.default_pretrained(cfg)
    assert cfg["pretrained"] == "imagenet"
    model = builders.build_model(cfg, num_classes=0)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert "IMAGENET1K_V1" in model.backbone.pretrained_source


def test_without_cached_weights_the_run_stops_saying_how_to_get_them(torch_home, tmp_path):
    cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "resnet18"])
    with pytest.raises(UserError) as err:
        builders.default_pretrained(cfg)
    message = str(err.value)
    assert str(torch_home / "hub" / "checkpoints" / RESNET18_FILE) in message
    assert "ResNet18_Weights.IMAGENET1K_V1.get_state_dict()" in message
    assert "--pretrained none" in message and "--pretrained PATH" in message


def test_backbone_without_torchvision_weights_asks_for_a_file(torch_home, tmp_path):
    assert imagenet_weights("seresnet50") is None and imagenet_weight_file("seresnet50") is None
    cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "seresnet50"])
    with pytest.raises(UserError, match="has no torchvision ImageNet weights: pass --pretrained PATH"):
        builders.default_pretrained(cfg)


def test_explicit_choices_and_the_synthetic_quick_start_are_left_alone(torch_home, tmp_path):
    _fake_cached_resnet18(torch_home)
    for value in ("none", "imagenet", str(tmp_path / "weights.pth")):
        cfg = resolve_config(["--data_path", str(tmp_path), "--pretrained", value])
        assert builders.default_pretrained(cfg) == value
    config = tmp_path / "c.yaml"
    config.write_text("pretrained: none\n")
    assert builders.default_pretrained(resolve_config(["--data_path", "d", "--config", str(config)])) == "none"
    assert builders.default_pretrained(resolve_config([])) is None  # no --data_path: random init, offline


def test_train_on_own_data_without_weights_is_a_user_error_before_training(torch_home, tmp_path):
    from metric_retrieval import data

    root = str(data.ensure_default_dataset())  # any folder-layout data given as --data_path
    with pytest.raises(UserError, match="--data_path given without --pretrained"):
        train(resolve_config(["--data_path", root, "--output_dir", str(tmp_path / "run"), "--workers", "0",
                              "--no_tensorboard", "--image_size", "32"]))
    assert not (tmp_path / "run" / "checkpoint_latest.pth").exists()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in ``tmp_path``, offline (hub lookups answer from the cache only)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf"


def _fake_cached_timm_resnet18(hf_cache) -> dict[str, torch.Tensor]:
    """timm's resnet18 weights (default tag ``a1_in1k``) laid out as ``hf_hub_download`` leaves them."""
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.arange(state["conv1.weight"].numel(), dtype=torch.float32).view_as(
        state["conv1.weight"])
    repo = hf_cache / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    return state


def test_timm_backbone_without_cached_weights_offers_pretrained_timm(hf_cache, tmp_path):
    assert cached_pretrained("timm:resnet18") is None
    cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "timm:resnet18"])
    with pytest.raises(UserError) as err:
        builders.default_pretrained(cfg)
    message = str(err.value)
    assert str(hf_cache) in message and "--pretrained timm" in message
    assert "timm.create_model('resnet18', pretrained=True)" in message
    assert "--pretrained none" in message and "--pretrained PATH" in message


def test_cached_timm_weights_are_the_default_for_timm_backbones(hf_cache, tmp_path):
    state = _fake_cached_timm_resnet18(hf_cache)
    assert cached_pretrained("timm:resnet18") == ("timm", hf_cache / "models--timm--resnet18.a1_in1k" / "snapshots"
                                                  / ("0" * 40) / "model.safetensors")
    cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "timm:resnet18"])
    cfg["pretrained"] = builders.default_pretrained(cfg)
    assert cfg["pretrained"] == "timm"
    model = builders.build_model(cfg, num_classes=0)  # loaded by timm itself, from the cache, offline
    assert torch.equal(model.backbone.net.conv1.weight, state["conv1.weight"])


@pytest.mark.slow  # a real epoch plus three evaluations: ~30 s of CPU
def test_from_scratch_recipe_trains_from_random_weights_and_selects_on_validation(tmp_path):
    from metric_retrieval import data

    root = str(data.ensure_default_dataset())
    scratch = Path(__file__).resolve().parents[2] / "configs" / "transfer" / "scratch.yaml"
    cfg = resolve_config(["--config", str(scratch), "--data_path", root, "--image_size", "32", "--num_epochs", "1",
                          "--eval_every", "1", "--output_dir", str(tmp_path / "run"), "--workers", "0",
                          "--no_tensorboard", "--amp", "off"])
    assert (cfg["pretrained"], cfg["val_classes"], cfg["eval_every"]) == ("none", 0.2, 1)
    assert builders.default_pretrained(cfg) == "none"  # no weights asked for, none needed
    result = train(cfg)
    assert result["best_epoch"] == 1
    assert {"test", "val"} <= set(result["untrained"])  # the untrained model was evaluated on both
    assert (tmp_path / "run" / "model_best.pth").is_file()


def test_the_transfer_recipe_is_the_default_for_own_data_with_pretrained_weights(tmp_path):
    from metric_retrieval.training.config import QUICK_RECIPE, TRANSFER_RECIPE

    recipe = {"optimizer": "adamw", "lr": 2e-4, "head_lr_mult": 1.0, "weight_decay": 1e-4, "num_epochs": 5,
              "scheduler": "cosine",
              "warmup_epochs": 0.25, "frozen_bn": True, "head": "gem",
              "loss": [{"name": "multi_similarity", "memory_size": 1024, "memory_warmup": 10}], "miner": "none"}
    assert set(recipe) == set(TRANSFER_RECIPE)
    for pretrained in ([], ["--pretrained", "imagenet"], ["--pretrained", str(tmp_path / "w.pth")]):
        cfg = resolve_config(["--data_path", str(tmp_path), "--backbone_type", "efficientnet_lite0", *pretrained])
        assert {k: cfg[k] for k in recipe} == recipe
    criterion = builders.build_criterion({**cfg, "feature_dim": 1280}, 10, torch.full((10,), 8))
    (memory,) = criterion.memories.values()  # the recipe's cross-batch memory is built
    assert (memory.size, memory.warmup_steps) == (1024, 10)
    flags = resolve_config(["--data_path", str(tmp_path), "--lr", "3e-4", "--no-frozen_bn", "--head", "baseline",
                            "--loss", "triplet"])
    assert (flags["lr"], flags["frozen_bn"], flags["head"], flags["optimizer"]) == (3e-4, False, "baseline", "adamw")
    assert flags["loss"] == "triplet"  # a --loss replaces the recipe's whole loss, memory included
    # from random weights, with a recipe file of its own, or on the built-in data: not this recipe
    scratch = resolve_config(["--data_path", str(tmp_path), "--pretrained", "none"])
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.01\n")
    own = resolve_config(["--data_path", str(tmp_path), "--config", str(config)])
    quick = resolve_config([])
    for cfg in (scratch, own, quick):
        assert (cfg["optimizer"], cfg["head"], cfg["warmup_epochs"]) == ("adam", "baseline", 0.0)
    assert own["lr"] == 0.01 and quick["lr"] == QUICK_RECIPE["lr"] and scratch["lr"] == 1e-4
