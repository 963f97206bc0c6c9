"""A checkpoint's embedding function for images outside its run: the model with its own evaluation path.

What an embedding is comes from the checkpoint's inference recipe
(:class:`~metric_retrieval.models.recipe.InferenceRecipe`), exactly as the run computed its feature database: the
evaluation resize/crop at the recipe's image size (uint8 out), the device-side normalisation of its
``input_spec``, and the embedding as the model gives it (L2-normalised or not, as the recipe says: nothing
normalises it again). How the network is run comes from the run config: the decoding path, the memory format
(:func:`metric_retrieval.training.evaluate.device_input`) and the autocast precision. ``query`` images, ``index``
catalogues and ``serve`` uploads all go through :class:`Embedder`, so an index and its queries can never disagree.
The model may also be a file written by ``export`` (``.onnx``, ``.ts``): it is run as it is, with the recipe its
JSON holds, so the file a server ships is the one that built the index.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metric_retrieval import data
from metric_retrieval.training.checkpoint import load_model, weights_digest
from metric_retrieval.training.evaluate import device_input
from metric_retrieval.training.runtime import AMP_DTYPES, resolve_amp
from metric_retrieval.utils.io import file_sha256, payload_digest

__all__ = ["Embedder", "exported_fingerprint", "model_fingerprint"]


def model_fingerprint(model: torch.nn.Module, model_config: dict[str, Any]) -> str:
    """SHA-256 of the model's architecture config and its :func:`~metric_retrieval.training.checkpoint.weights_digest`.

    It identifies the *weights*, not the file: ``model_best.pth`` copied or re-saved with another epoch
    number keeps its fingerprint, a retrained model does not.
    """
    return payload_digest({"config": sorted(model_config.items()), "weights": weights_digest(model.state_dict())})


def exported_fingerprint(path: str | Path) -> str:
    """SHA-256 of an exported model file's bytes and of its preprocessing JSON's checksum: for ``.onnx`` / ``.ts``
    the file is the weights, and the JSON decides the pixels it sees (an index built with one refuses the other)."""
    from metric_retrieval.models.export import preprocessing_path, spec_digest  # local: export pulls in exporters

    spec = json.loads(preprocessing_path(path).read_text())
    return payload_digest({"model": file_sha256(path), "preprocessing": spec_digest(spec)})


class Embedder:
    """(B, D) float32 embeddings of image files, computed the way the checkpoint's run did.

    Attributes:
        checkpoint: the checkpoint or exported file; fingerprint: :func:`model_fingerprint` of its weights
            (:func:`exported_fingerprint` for an exported file).
        recipe: the model's :class:`~metric_retrieval.models.recipe.InferenceRecipe` (preprocessing, width D,
            metric, normalisation); stored with every index.
        runtime: how the network is run (decoding path, memory format, precision); stored with every index.
        dim: embedding width D (the recipe's).
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        self.checkpoint, self.device = str(checkpoint), torch.device(device)
        self.model, ckpt = load_model(checkpoint, self.device)
        self.recipe = ckpt["recipe"]
        cfg = ckpt.get("config", {})
        if cfg.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.transform = self.recipe.eval_transform()  # uint8 out
        # the decoded cache gives exactly the pixels of fast; a catalogue is read once, not worth caching
        self.decode = "pil" if cfg.get("decode") == "pil" else "fast"
        self.prepare = device_input(self.model, cfg, self.device)
        self.amp = resolve_amp(cfg.get("amp", "off"), self.device)
        self.amp_dtype = AMP_DTYPES[self.amp]
        self.fingerprint = model_fingerprint(self.model, ckpt["model_config"]) if "model_config" in ckpt \
            else exported_fingerprint(checkpoint)
        self.runtime = {"decode": self.decode, "channels_last": bool(cfg.get("channels_last")), "amp": self.amp}

    @property
    def dim(self) -> int:
        """Embedding width D (the recipe's)."""
        return self.recipe.embedding_dim

    def dataset(self, paths: Sequence[str], labels: Sequence[int] | None = None) -> data.RetrievalDataset:
        """The files as a dataset yielding this model's uint8 evaluation images."""
        labels = [0] * len(paths) if labels is None else labels
        return data.RetrievalDataset(list(paths), labels, ["item"], transform=self.transform, decode=self.decode)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 evaluation images (a loader batch) → (B, D) float32 CPU embeddings, as the model
        gives them (normalised when the recipe says so)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.model(self.prepare(images))
        embedding = out[0] if isinstance(out, (tuple, list)) else out
        return embedding.float().cpu()

    def embed_file(self, path: str) -> torch.Tensor:
        """(D,) embedding of one image file; unreadable files raise the decoder's ``OSError``/``ValueError``."""
        image = self.dataset([path]).load(0)[0]
        return self(image.unsqueeze(0))[0]
