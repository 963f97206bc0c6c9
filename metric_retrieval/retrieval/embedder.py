"""A checkpoint's embedding function for images outside its run: the model with its own evaluation path.

Everything that decides an embedding comes from the checkpoint's run config, exactly as the run computed its
feature database: the preset's evaluation transform at the run's image size (uint8 out), the decoding path,
the device-side normalisation and memory format (:func:`metric_retrieval.training.evaluate.device_input`), the autocast
precision, and the final L2 normalisation. ``test.py`` queries, ``index.py`` catalogues and ``serve.py``
uploads all go through :class:`Embedder`, so an index and its queries can never disagree on preprocessing.
The model may also be a file written by ``export.py`` (``.onnx``, ``.ts``): it is run as it is, with the
preprocessing its JSON names, so the file a server ships is the one that built the index.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

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
    """L2-normalised (B, D) float32 embeddings of image files, computed the way the checkpoint's run did.

    Attributes:
        checkpoint: the checkpoint or exported file; fingerprint: :func:`model_fingerprint` of its weights
            (:func:`exported_fingerprint` for an exported file).
        input_spec: what an image goes through before the network (transform preset, image size, decoding,
            normalisation mean/std/BGR, memory format, precision); stored with every index.
        dim: embedding width D.
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        self.checkpoint, self.device = str(checkpoint), torch.device(device)
        self.model, ckpt = load_model(checkpoint, self.device)
        cfg = ckpt.get("config", {})
        if cfg.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preset, self.image_size = cfg.get("transform", data.DEFAULT_TRANSFORM), int(cfg.get("image_size", 224))
        self.transform = data.build_transform(self.preset, train=False, image_size=self.image_size)  # uint8 out
        # the decoded cache gives exactly the pixels of fast; a catalogue is read once, not worth caching
        self.decode = "pil" if cfg.get("decode") == "pil" else "fast"
        self.prepare = device_input(self.model, cfg, self.device)
        self.amp = resolve_amp(cfg.get("amp", "off"), self.device)
        self.amp_dtype = AMP_DTYPES[self.amp]
        self.fingerprint = model_fingerprint(self.model, ckpt["model_config"]) if "model_config" in ckpt \
            else exported_fingerprint(checkpoint)
        spec = self.model.input_spec
        self.input_spec = {"transform": self.preset, "image_size": self.image_size, "decode": self.decode,
                           "mean": list(spec.mean), "std": list(spec.std), "colour": spec.colour,
                           "channels_last": bool(cfg.get("channels_last")), "amp": self.amp}
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """Embedding width D, known from the first batch embedded (a one-image probe when asked before one: a
        cold first forward costs about as much as a batch, so a build does not pay it for nothing)."""
        if self._dim is None:
            self(self.transform(torch.zeros(3, 8, 8, dtype=torch.uint8)).unsqueeze(0))
        return self._dim

    def dataset(self, paths: Sequence[str], labels: Sequence[int] | None = None) -> data.RetrievalDataset:
        """The files as a dataset yielding this model's uint8 evaluation images."""
        labels = [0] * len(paths) if labels is None else labels
        return data.RetrievalDataset(list(paths), labels, ["item"], transform=self.transform, decode=self.decode)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 evaluation images (a loader batch) → (B, D) L2-normalised float32 CPU embeddings."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.model(self.prepare(images))
        embedding = out[0] if isinstance(out, (tuple, list)) else out
        self._dim = int(embedding.shape[1])
        return F.normalize(embedding.float(), dim=1).cpu()

    def embed_file(self, path: str) -> torch.Tensor:
        """(D,) embedding of one image file; unreadable files raise the decoder's ``OSError``/``ValueError``."""
        image = self.dataset([path]).load(0)[0]
        return self(image.unsqueeze(0))[0]
