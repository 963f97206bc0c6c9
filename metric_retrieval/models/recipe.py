"""The inference recipe: everything needed to turn an image into an embedding and to compare two embeddings.

As torchvision's ``Weights`` carry their transforms, every file this project writes for a trained model carries
its :class:`InferenceRecipe` as a plain dict (``"recipe"``): checkpoints (``model_best.pth``,
``checkpoint_latest.pth``), feature databases, exported models' JSON sidecars and indexes. Every inference path
(evaluation, ``query`` against a database or an index, :class:`~metric_retrieval.retrieval.embedder.Embedder`,
``index``, ``serve``, ``export``) reads the recipe of the file it was given and nothing else, so they all
preprocess the same pixels and rank by the same distance as the run that reported its Recall@K.

Files written before the recipe existed are read through :func:`read_recipe`, the one place that derives a
recipe from a saved run config and the model it rebuilds (see ``docs/recipe.md``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from metric_retrieval.models.backbones.base import COLOURS, InputSpec
from metric_retrieval.utils.errors import UserError

__all__ = ["METRICS", "RECIPE_VERSION", "InferenceRecipe", "read_recipe"]

RECIPE_VERSION = 1
METRICS = ("ip", "l2")
_FIELDS = ("version", "image_size", "transform", "input_spec", "embedding_dim", "metric", "normalized")


@dataclass(frozen=True)
class InferenceRecipe:
    """How a model's embeddings are made and compared.

    Attributes:
        image_size: side of the square evaluation image the network sees (pixels).
        transform: the evaluation resize/crop rule, a preset of :data:`metric_retrieval.data.TRANSFORMS`
            (built with ``train=False`` at ``image_size``; uint8 out).
        input_spec: the pixel normalisation: ``mean``, ``std``, and ``colour``, which names both the channel
            order and the scale (``RGB``: RGB in [0, 1]; ``BGR255``: BGR in [0, 255]), then ``(x - mean) / std``.
        embedding_dim: width D of the embedding.
        metric: how two embeddings are compared: ``"ip"`` (inner product, larger is nearer; cosine similarity,
            only for normalised embeddings) or ``"l2"`` (Euclidean distance, smaller is nearer).
        normalized: whether the model L2-normalises its embeddings (nothing downstream normalises them again).
    """

    image_size: int
    transform: str
    input_spec: InputSpec
    embedding_dim: int
    metric: str
    normalized: bool

    @classmethod
    def of_model(cls, model: torch.nn.Module, cfg: Mapping[str, Any], source: str = "the run config"
                 ) -> InferenceRecipe:
        """The recipe of a built model evaluated with run config ``cfg`` (its ``image_size`` and ``transform``).

        Raises:
            UserError: ``cfg`` lacks ``image_size`` or ``transform`` (``source`` names where it came from).
        """
        missing = [key for key in ("image_size", "transform") if cfg.get(key) is None]
        if missing:
            raise UserError(f"{source} lacks {', '.join(missing)}: cannot tell how its model preprocesses images")
        normalized = bool(getattr(getattr(model, "head", None), "embedding_norm", True))
        return cls.from_dict({"version": RECIPE_VERSION, "image_size": cfg["image_size"],
                              "transform": cfg["transform"], "input_spec": model.input_spec.as_dict(),
                              "embedding_dim": model.feature_dim, "metric": model.embedding_metric,
                              "normalized": normalized}, source)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints, strings, floats, lists): what ``torch.load(weights_only=True)`` and JSON read back."""
        spec = self.input_spec.as_dict()
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
        return {"version": RECIPE_VERSION, "image_size": self.image_size, "transform": self.transform,
                "input_spec": spec, "embedding_dim": self.embedding_dim, "metric": self.metric,
                "normalized": self.normalized}

    @classmethod
    def from_dict(cls, record: Any, source: str | os.PathLike) -> InferenceRecipe:
        """Validate a stored recipe; a missing or bad field is a :class:`UserError` naming ``source`` (the file)."""
        source = os.fspath(source)

        def bad(why: str) -> UserError:
            return UserError(f"{source}: its inference recipe {why}; expected the dict written by this project "
                             f"(keys {', '.join(_FIELDS)}): write the file again with this version")

        if not isinstance(record, Mapping):
            raise bad(f"is a {type(record).__name__}, not a dict")
        missing = [key for key in _FIELDS if key not in record]
        if missing:
            raise bad(f"lacks {', '.join(missing)}")
        if record["version"] != RECIPE_VERSION:
            raise bad(f"has version {record['version']!r} (this code reads {RECIPE_VERSION})")
        for key in ("image_size", "embedding_dim"):
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f"has {key} {value!r}, expected a positive integer")
        if not isinstance(record["transform"], str) or not record["transform"]:
            raise bad(f"has transform {record['transform']!r}, expected a preset name")
        if record["metric"] not in METRICS:
            raise bad(f"has metric {record['metric']!r}, expected one of {', '.join(METRICS)}")
        if not isinstance(record["normalized"], bool):
            raise bad(f"has normalized {record['normalized']!r}, expected true or false")
        if record["metric"] == "ip" and not record["normalized"]:
            raise bad("ranks un-normalised embeddings by inner product (their lengths would count as much as their "
                      "directions); expected metric l2 for normalized false")
        return cls(record["image_size"], record["transform"], _input_spec(record["input_spec"], bad),
                   record["embedding_dim"], record["metric"], record["normalized"])

    def eval_transform(self) -> Any:
        """The evaluation resize/crop at ``image_size``: PIL or uint8 (3, H, W) → uint8 (3, image_size, image_size)."""
        from metric_retrieval import data  # local: data imports the models' InputSpec

        return data.build_transform(self.transform, train=False, image_size=self.image_size)

    def normalize(self) -> Any:
        """The :class:`~metric_retrieval.data.batch.Normalize` of ``input_spec`` (uint8 → float32 network input)."""
        from metric_retrieval import data

        return data.build_normalize(self.input_spec)

    def check_model(self, model: torch.nn.Module, source: str | os.PathLike) -> None:
        """Refuse a file whose recipe contradicts the model it holds (edited, or put together by hand)."""
        expected = {"embedding_dim": getattr(model, "feature_dim", None), "metric": model.embedding_metric,
                    "input_spec": model.input_spec}
        for key, value in expected.items():
            if value is not None and getattr(self, key) != value:
                raise UserError(f"{os.fspath(source)}: its inference recipe says {key} {getattr(self, key)!r} but "
                                f"its model gives {value!r}; the file is inconsistent: write it again")


def _input_spec(record: Any, bad: Any) -> InputSpec:
    if not isinstance(record, Mapping):
        raise bad("has no input_spec dict")
    try:
        mean, std = (tuple(float(v) for v in record[key]) for key in ("mean", "std"))
        size = record.get("input_size")
        spec = InputSpec(mean=mean, std=std, colour=record["colour"],
                         interpolation=str(record.get("interpolation", "bilinear")),
                         input_size=None if size is None else tuple(int(v) for v in size))
    except (KeyError, TypeError, ValueError) as err:
        raise bad(f"has a malformed input_spec ({err}; expected mean, std and colour {' or '.join(COLOURS)})"
                  ) from None
    if len(spec.mean) != 3 or len(spec.std) != 3 or not all(s > 0 for s in spec.std):
        raise bad("has an input_spec without 3 means and 3 positive stds")
    return spec


def read_recipe(record: Mapping[str, Any], source: str | os.PathLike, model: torch.nn.Module) -> InferenceRecipe:
    """The recipe a file holds under ``"recipe"``, checked against its ``model``; for a file written before
    recipes existed (no ``"recipe"`` key), the recipe derived from its saved run config (``record["config"]``:
    ``image_size``, ``transform``) and ``model``, the model it rebuilds. This is the only place a recipe is
    derived from a saved config.
    """
    if "recipe" in record:
        recipe = InferenceRecipe.from_dict(record["recipe"], source)
    else:
        cfg = record.get("config")
        recipe = InferenceRecipe.of_model(model, cfg if isinstance(cfg, Mapping) else {},
                                          f"{os.fspath(source)} (written before inference recipes; its run config)")
    recipe.check_model(model, source)
    return recipe
