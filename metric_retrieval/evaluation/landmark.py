"""Landmark retrieval pipeline: descriptors → [whitening] → [DBA / query expansion] → mAP.

Descriptor extraction follows cirtorch: images one at a time at their own size
(the dataset has already thumbnailed them to ``imsize`` and cropped queries), and for each scale s the
input tensor is resized by ``interpolate(scale_factor=s, mode="bilinear", align_corners=False)`` (s = 1 uses
the input as is); per-scale embeddings are combined by a power mean
``v = ((1/|S|) Σ_s y_s^msp)^(1/msp)`` and L2-normalised. cirtorch sets ``msp`` to the learned GeM p for
plain GeM nets and 1 otherwise; with ``msp ≠ 1`` the embeddings must be non-negative (as GeM outputs are),
otherwise the fractional power is NaN — exactly as in cirtorch.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from metric_retrieval.data.landmark import LandmarkImageDataset
from metric_retrieval.data.transforms import build_transform
from metric_retrieval.evaluation.landmark_metrics import landmark_map
from metric_retrieval.evaluation.query_expansion import expand
from metric_retrieval.evaluation.whitening import load_whitening, whiten_apply
from metric_retrieval.utils.progress import bar_interval

__all__ = ["evaluate_landmarks", "extract_landmark_descriptors", "landmark_resize", "multiscale_descriptor"]


def _first(batch: list) -> Any:
    return batch[0]


def _embedding(out: Any) -> torch.Tensor:
    """The embedding of a model output ``(embedding, logits_or_None)`` (a bare tensor is accepted)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def multiscale_descriptor(model: torch.nn.Module, image: torch.Tensor, scales: Sequence[float] = (1,),
                          msp: float = 1.0) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) image → (D,) L2-normalised multi-scale descriptor."""
    x = image if image.dim() == 4 else image.unsqueeze(0)
    acc = None
    for s in scales:
        xs = x if float(s) == 1.0 else F.interpolate(x, scale_factor=float(s), mode="bilinear",
                                                     align_corners=False)
        y = _embedding(model(xs)).reshape(-1).float()
        y = y.pow(msp) if msp != 1.0 else y
        acc = y if acc is None else acc + y
    v = acc / len(scales)
    if msp != 1.0:
        v = v.pow(1.0 / msp)
    return F.normalize(v, dim=0)


@torch.no_grad()
def extract_landmark_descriptors(model: torch.nn.Module, dataset: Any, device: str | torch.device = "cpu",
                                 scales: Sequence[float] = (1,), msp: float = 1.0,
                                 num_workers: int = 0, progress: bool = True,
                                 autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Descriptors of every image of a landmark dataset, one image at a time (variable sizes).

    Args:
        model: returns ``(embedding (1, D), logits or None)`` for a (1, C, H, W) batch; put in eval mode here.
        dataset: yields ``(image (C, H, W) float tensor, index)`` (``data.LandmarkImageDataset``).
        device: where the model runs.
        scales: multi-scale setting (module docstring); ``(1,)`` = single scale.
        msp: the power of the multi-scale mean (module docstring).
        num_workers: DataLoader workers for image decoding.
        progress: show a tqdm bar (redrawn every 30 s when stderr is not a terminal:
            :mod:`metric_retrieval.utils.progress`).
        autocast_dtype: run the model under ``torch.autocast`` with this dtype (the run's ``--amp``); None: fp32.
            The power mean and normalisation are computed in float32 either way.

    Returns:
        (N, D) float32 CPU tensor, row i = the descriptor of item i.
    """
    if not scales:
        raise ValueError("scales must contain at least one scale")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                                         collate_fn=_first)
    rows: list[torch.Tensor | None] = [None] * len(dataset)
    from tqdm import tqdm  # noqa: PLC0415

    bar = tqdm(loader, desc="descriptors", unit="img", leave=False, dynamic_ncols=True, disable=not progress,
               mininterval=bar_interval())
    autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None)
    try:
        with autocast:
            for image, index in bar:
                image = torch.as_tensor(image)
                if image.dtype == torch.uint8:  # the network input is the model's to define: never guess it here
                    raise TypeError("landmark images must be normalised for the model: build the dataset with "
                                    "transform=data.build_transform('landmark', normalize=model.input_spec)")
                image = image.to(device=device, dtype=torch.float32)
                rows[int(index)] = multiscale_descriptor(model, image, scales, msp).cpu()
    finally:
        model.train(was_training)
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise RuntimeError(f"dataset returned no item for indices {missing[:10]}")
    return torch.stack(rows)  # type: ignore[arg-type]


def _resolve_whitening(whitening: Any) -> tuple[Any, Any, int | None] | None:
    if whitening is None:
        return None
    if isinstance(whitening, (str, bytes)) or hasattr(whitening, "__fspath__"):
        mean, P, info = load_whitening(whitening, with_meta=True)
        return mean, P, info["dim"]
    if isinstance(whitening, Mapping):
        return whitening["mean"], whitening["P"], whitening.get("dim")
    mean, P = whitening[:2]
    return mean, P, (whitening[2] if len(whitening) > 2 else None)


def landmark_resize(model: torch.nn.Module) -> str:
    """How landmark images are resized for ``model``: its head's ``landmark_resize`` (``bilinear`` for the
    regional-attention original's grid), else cirtorch's ``thumbnail``."""
    return getattr(getattr(model, "head", None), "landmark_resize", "thumbnail")


def evaluate_landmarks(model: torch.nn.Module, landmark_data: Any, device: str | torch.device,
                       transform: Callable | None, imsize: int = 1024, scales: Sequence[float] = (1,),
                       whitening: Any = None, qe: Mapping[str, Any] | None = None, msp: float = 1.0,
                       kappas: Sequence[int] = (1, 5, 10), dataset_factory: Callable | None = None,
                       num_workers: int = 0, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Extract, post-process and score a landmark benchmark.

    Args:
        model: the retrieval model (``forward(images) -> (embedding, logits or None)``).
        landmark_data: ``data.LandmarkData`` (``db_paths``, ``query_paths``, ``query_boxes``, ``gnd``,
            ``protocol`` "old" | "revisited").
        transform: image → normalised tensor; None: ``data.build_transform("landmark",
            normalize=model.input_spec)`` (the model's own normalisation, cirtorch's whole image, no resize).
        imsize: longest side of database images (queries get the same scale factor).
        scales: multi-scale descriptor setting.
        msp: the power of the multi-scale mean.
        whitening: None, ``(mean, P[, dim])``, ``{"mean", "P"[, "dim"]}`` or a path saved by
            :func:`metric_retrieval.evaluation.whitening.save_whitening`; applied to database and queries.
        qe: None or ``{"method": "aqe" | "alpha", "k": int, "alpha": float, "dba_k": int}``; DBA (``dba_k``,
            DIR weights) is applied to the database first, then AQE / αQE to the queries. Method "none" with
            a ``dba_k`` runs DBA only.
        kappas: the k of mP@k (revisited).
        dataset_factory: builds the image datasets, ``(paths, boxes=..., imsize=..., transform=...)``;
            defaults to ``data.LandmarkImageDataset`` resizing as the model's head asks (:func:`landmark_resize`).
        autocast_dtype: the precision the model runs in (the run's ``--amp``; None: fp32).

    Returns:
        :func:`metric_retrieval.evaluation.landmark_metrics.landmark_map`'s dict plus ``num_queries`` and
        ``num_database``.
    """
    dataset_factory = dataset_factory or partial(LandmarkImageDataset, resize=landmark_resize(model))
    transform = transform or build_transform("landmark", train=False, normalize=model.input_spec)

    db_ds = dataset_factory(list(landmark_data.db_paths), boxes=None, imsize=imsize, transform=transform)
    q_ds = dataset_factory(list(landmark_data.query_paths), boxes=landmark_data.query_boxes, imsize=imsize,
                           transform=transform)
    X = extract_landmark_descriptors(model, db_ds, device, scales, msp, num_workers, autocast_dtype=autocast_dtype)
    Q = extract_landmark_descriptors(model, q_ds, device, scales, msp, num_workers, autocast_dtype=autocast_dtype)
    w = _resolve_whitening(whitening)
    if w is not None:
        X = whiten_apply(X, w[0], w[1], w[2])
        Q = whiten_apply(Q, w[0], w[1], w[2])
    if qe:
        Q, X = expand(Q, X, qe)
    sim = Q @ X.T
    out = landmark_map(sim, landmark_data.gnd, getattr(landmark_data, "protocol", "old"), kappas)
    out_all: dict[str, Any] = dict(out)
    out_all["num_queries"] = int(Q.shape[0])
    out_all["num_database"] = int(X.shape[0])
    return out_all
