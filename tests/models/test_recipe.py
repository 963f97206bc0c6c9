"""InferenceRecipe: the record's round trip through torch.save(weights_only) and JSON, its validation, and the
one derivation for checkpoints written before it existed."""
from __future__ import annotations

import json

import pytest
import torch

from metric_retrieval import models
from metric_retrieval.models.backbones.base import CAFFE_BGR255
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.training.checkpoint import load_model
from metric_retrieval.utils.errors import UserError

RECIPE = InferenceRecipe(48, "cgd", CAFFE_BGR255, 16, "l2", False)


def test_the_plain_dict_round_trips_through_weights_only_and_json(tmp_path):
    torch.save({"recipe": RECIPE.to_dict()}, tmp_path / "r.pth")
    assert InferenceRecipe.from_dict(torch.load(tmp_path / "r.pth", weights_only=True)["recipe"], "r.pth") == RECIPE
    assert InferenceRecipe.from_dict(json.loads(json.dumps(RECIPE.to_dict())), "r.json") == RECIPE


@pytest.mark.parametrize("change, message", [
    ({"metric": "cos"}, "has metric 'cos', expected one of ip, l2"),
    ({"image_size": 0}, "has image_size 0, expected a positive integer"),
    ({"embedding_dim": True}, "has embedding_dim True"),
    ({"normalized": "yes"}, "has normalized 'yes'"),
    ({"metric": "ip"}, "ranks un-normalised embeddings by inner product"),
    ({"version": 2}, "has version 2"),
    ({"input_spec": {"mean": [0, 0, 0], "std": [1, 1, 1], "colour": "HSV"}}, "has a malformed input_spec"),
    ({"input_spec": {"mean": [0, 0], "std": [1, 1], "colour": "RGB"}},
     "has an input_spec without 3 means and 3 positive stds"),
])
def test_a_bad_field_is_an_error_naming_the_file_and_the_field(change, message):
    with pytest.raises(UserError, match=rf"^runs/x/model_best\.pth: its inference recipe {message}"):
        InferenceRecipe.from_dict({**RECIPE.to_dict(), **change}, "runs/x/model_best.pth")


def test_a_missing_field_is_named():
    record = {k: v for k, v in RECIPE.to_dict().items() if k != "transform"}
    with pytest.raises(UserError, match="db.pth: its inference recipe lacks transform"):
        InferenceRecipe.from_dict(record, "db.pth")
    with pytest.raises(UserError, match="is a list, not a dict"):
        InferenceRecipe.from_dict([], "db.pth")


def save(path, model, **extra):
    mc = {"backbone": "resnet18", "head": "baseline", "feature_dim": 16, "num_classes": 0,
          "options": {"embedding_norm": False}}
    torch.save({"model": model.state_dict(), "model_config": mc, **extra}, path)
    return path


def test_an_older_checkpoint_derives_its_recipe_from_its_config_and_model(tmp_path):
    model = models.build_model("resnet18", "baseline", 16, 0, embedding_norm=False)
    _, ckpt = load_model(save(tmp_path / "old.pth", model, config={"image_size": 48, "transform": "cgd"}))
    assert ckpt["recipe"] == InferenceRecipe(48, "cgd", model.input_spec, 16, "l2", False)
    with pytest.raises(UserError, match=r"nocfg\.pth \(written before inference recipes.*lacks image_size, transform"):
        load_model(save(tmp_path / "nocfg.pth", model, config={}))


def test_a_recipe_that_contradicts_its_model_is_refused(tmp_path):
    model = models.build_model("resnet18", "baseline", 16, 0, embedding_norm=False)
    good = InferenceRecipe(48, "cgd", model.input_spec, 16, "l2", False)
    assert load_model(save(tmp_path / "ok.pth", model, recipe=good.to_dict()))[1]["recipe"] == good
    for field, value in (("embedding_dim", 32), ("input_spec", CAFFE_BGR255)):
        bad = InferenceRecipe(**{**good.__dict__, field: value})
        with pytest.raises(UserError, match=rf"bad\.pth: its inference recipe says {field}"):
            load_model(save(tmp_path / "bad.pth", model, recipe=bad.to_dict()))
    normalised = InferenceRecipe(**{**good.__dict__, "metric": "ip", "normalized": True})
    with pytest.raises(UserError, match="says metric 'ip' but its model gives 'l2'"):
        load_model(save(tmp_path / "bad.pth", model, recipe=normalised.to_dict()))
