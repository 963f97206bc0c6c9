"""Checkpoint helpers: bit-exact round trip and mismatch reports that list every problem."""
import pytest
import torch

from metric_retrieval import models
from metric_retrieval.models.checkpoint import unwrap_state_dict
from metric_retrieval.utils.errors import UserError


def test_state_dict_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("resnet18", "cgd", 32, 4, gd_config="SM")
    model.train()
    model(torch.randn(4, 3, 64, 64))  # moves the head's BatchNorm1d statistics
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    fresh = models.build_model("resnet18", "cgd", 32, 4, gd_config="SM")
    models.load_model_state(fresh, torch.load(path, weights_only=True))
    for (k, a), (k2, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 64, 64)
    model.eval(), fresh.eval()
    with torch.no_grad():
        (e1, l1), (e2, l2) = model(x), fresh(x)
    assert torch.equal(e1, e2) and torch.equal(l1, l2)


def test_mismatch_lists_missing_unexpected_and_shapes():
    model = models.build_model("resnet18", "clf", 16, 5)
    state = model.state_dict()
    del state["head.refactor.weight"]
    state["head.extra.weight"] = torch.zeros(3)
    state["head.classifier.1.weight"] = torch.zeros(7, 16)
    with pytest.raises(UserError) as info:
        models.load_model_state(model, state, what="ckpt.pth")
    message = str(info.value)
    assert "ckpt.pth" in message
    assert "missing keys (1): head.refactor.weight" in message
    assert "unexpected keys (1): head.extra.weight" in message
    assert "head.classifier.1.weight: checkpoint (7, 16) vs model (5, 16)" in message


def test_wrapped_and_prefixed_state_dicts():
    model = models.build_model("resnet18", "baseline", 8)
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    assert set(unwrap_state_dict(wrapped)) == set(model.state_dict())
    models.load_model_state(model, {"state_dict": model.state_dict()})
    with pytest.raises(UserError, match="not a tensor"):
        unwrap_state_dict({"weights": [1, 2]})


def test_missing_num_batches_tracked_is_filled_in():
    """Old ImageNet files (torchvision 2017, Cadene) have no num_batches_tracked buffers."""
    model = models.build_model("resnet18", "baseline", 8)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    models.load_model_state(model, state)
