"""Training-time evaluation: embedding a split and scoring it (``test.py``'s commands are
:mod:`metric_retrieval.retrieval.eval_commands`).

Evaluation runs on rank 0 with the unwrapped model (other ranks wait at a barrier), on the real
embeddings only: rows an embedding producer generates exist inside the criterion and never reach this code.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from metric_retrieval import data, evaluation
from metric_retrieval.data.batch import DeviceInput
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.training.loading import eval_loader

log = logging.getLogger("metric_retrieval")


def device_input(model: torch.nn.Module, cfg: dict[str, Any], device: torch.device) -> DeviceInput:
    """How the run's uint8 evaluation batches become model input: the model's normalisation, the run's memory
    format."""
    return DeviceInput(device, data.build_normalize(model.input_spec), bool(cfg.get("channels_last")))


def embed_dataset(model: torch.nn.Module, dataset: Any, cfg: dict[str, Any], device: torch.device,
          autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """``{"embeddings" (N, D) float32 cpu, "labels" (N,), "paths"[, "classes"]}`` for a dataset of uint8 images in
    eval mode.

    Images that became unreadable during the run are left out with ``--skip_bad_images`` (the dataset marks
    them with a negative index; see :class:`data.RetrievalDataset`), and the count is logged.
    """
    loader = eval_loader(dataset, cfg["eval_batch_size"], cfg["workers"], device.type == "cuda")
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        embeddings, labels, indices = evaluation.embed(model, loader, device,
                                                       preprocess=device_input(model, cfg, device))
    keep = indices >= 0
    if not bool(keep.all()):
        log.warning("left %d unreadable image(s) out of the evaluation (--skip_bad_images)", int((~keep).sum()))
    out = {"embeddings": embeddings[keep].float(), "labels": labels[keep].long(),
           "paths": [dataset.paths[i] for i in indices[keep].tolist()]}
    if getattr(dataset, "classes", None) is not None:
        out["classes"] = list(dataset.classes)  # label → class name, for the query outputs
    return out


def evaluate_split(model: torch.nn.Module, splits: dict[str, Any], protocol: str, ks: list[int],
                   cfg: dict[str, Any], device: torch.device, autocast_dtype: torch.dtype | None,
                   recipe: InferenceRecipe | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and the feature database for one evaluation set, ranked by the recipe's metric.

    ``splits`` holds ``test`` (leave-one-out) or ``query`` + ``gallery`` (query→gallery protocol), datasets
    built with the recipe's evaluation transform. ``recipe``: the model's (a loaded checkpoint's); ``None`` for the
    model being trained, whose recipe is that of the model and run config ``cfg`` (what the run saves with it).
    The database is ``{"query", "gallery", "recipe"}``.
    """
    recipe = recipe or InferenceRecipe.of_model(model, cfg)
    if protocol == "query_gallery":
        query, gallery = (embed_dataset(model, splits[s], cfg, device, autocast_dtype) for s in ("query", "gallery"))
    else:
        query, gallery = embed_dataset(model, next(iter(splits.values())), cfg, device, autocast_dtype), None
    metrics = evaluation.retrieval_metrics(
        query["embeddings"], query["labels"],
        None if gallery is None else gallery["embeddings"], None if gallery is None else gallery["labels"],
        ks=tuple(ks), metric=recipe.metric, backend=cfg["knn_backend"], chunk_size=cfg["eval_chunk_size"])
    return metrics, {"query": query, "gallery": gallery, "recipe": recipe}
