"""Embedding extraction for the retrieval benchmarks: run the model over a loader in eval mode."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from metric_retrieval.utils.progress import bar_interval

__all__ = ["embed"]


@torch.no_grad()
def embed(model: torch.nn.Module, loader: Any, device: str | torch.device = "cpu", amp: bool = False,
          preprocess: Callable[[Any], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings of every batch ``(images, labels, indices)`` of ``loader``.

    The model returns ``(embedding (B, D), logits or None)`` (a bare tensor is accepted); it is put in eval
    mode for the pass and restored afterwards. Rows are returned in loader order. ``preprocess`` maps the
    loader's image batch to the model input on ``device`` (a :class:`metric_retrieval.data.batch.DeviceInput` for the
    uint8 loaders of the trainer); without it the images are moved as they are.

    Returns:
        (embeddings (N, D) float32, labels (N,) int64, indices (N,) int64), CPU tensors.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    embs, labels, indices = [], [], []
    try:
        for batch in tqdm(loader, desc="embed", unit="batch", leave=False, dynamic_ncols=True,
                          mininterval=bar_interval()):
            images, y = batch[0], batch[1]
            idx = batch[2] if len(batch) > 2 else torch.arange(len(y)) + sum(len(t) for t in labels)
            with torch.autocast(device.type) if amp else contextlib.nullcontext():  # keep a caller's autocast
                out = model(preprocess(images) if preprocess else images.to(device, non_blocking=True))
            e = out[0] if isinstance(out, (tuple, list)) else out
            embs.append(e.float().cpu())
            labels.append(torch.as_tensor(y).long().cpu())
            indices.append(torch.as_tensor(idx).long().cpu())
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("the loader yielded no batches")
    return torch.cat(embs), torch.cat(labels), torch.cat(indices)
