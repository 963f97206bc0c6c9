"""Models: backbones (``BACKBONES``), heads (``HEADS``) and ``build_model`` joining them::

    from metric_retrieval import models
    model = models.build_model("resnet50", "cgd", feature_dim=1536, num_classes=98, gd_config="SG")
    embedding, logits = model(images)  # (B, 1536) L2-normalised, (B, 98)

``models.list_models()`` prints what exists; ``metric_retrieval.models.profile(model)`` returns ``(params, macs)``;
``models.load_model_state(model, state_dict)`` loads strictly with a readable mismatch report.
"""
from __future__ import annotations

import importlib
from typing import Any

from metric_retrieval.models.backbones import (
    BACKBONES,
    Backbone,
    InputSpec,
    build_backbone,
    convert_cadene_se_resnet50,
)
from metric_retrieval.models.checkpoint import load_model_state, read_state_dict, unwrap_state_dict
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.models.heads import HEADS, Head, rmac_regions
from metric_retrieval.models.retrieval_model import (
    RetrievalModel,
    build_model,
    flag_options,
    list_models,
    option_names,
    option_problems,
    options_from_config,
)

__all__ = ["BACKBONES", "HEADS", "Backbone", "Head", "InputSpec", "ModelConfigError", "RetrievalModel",
           "build_backbone", "build_model", "convert_cadene_se_resnet50", "flag_options", "list_models",
           "load_model_state", "option_names", "option_problems", "options_from_config", "profile", "read_state_dict",
           "rmac_regions", "unwrap_state_dict"]


def __getattr__(name: str) -> Any:
    # ``metric_retrieval.models.profile`` is imported lazily so that ``python -m metric_retrieval.models.profile`` does
    # not find it imported; the module is callable:
    # ``metric_retrieval.models.profile(model, image_size=224) -> (params, macs)``.
    if name == "profile":
        return importlib.import_module("metric_retrieval.models.profile")
    raise AttributeError(f"module 'models' has no attribute {name!r}")
