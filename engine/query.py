"""Query retrieval for ``test.py``: a stored or external query image against a saved feature database.

A query path stored in the database uses its stored feature (and, in a leave-one-out database, never
returns itself); any other image is embedded with the checkpoint saved next to the database.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

import data
import evaluation
from engine.checkpoint import load_model
from engine.evaluate import device_input
from engine.runtime import AMP_DTYPES, resolve_amp
from evaluation.database import QueryResult, find_path
from utils.errors import UserError


def embed_image(path: str, checkpoint: str | Path, device: str = "cpu") -> torch.Tensor:
    """(D,) embedding of one image file, computed exactly as the run computed its database: same eval
    transform, decoding path, normalisation on the device, precision and memory format."""
    model, ckpt = load_model(checkpoint, device)
    cfg = ckpt.get("config", {})
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    transform = data.build_transform(cfg.get("transform", "cgd"), train=False, image_size=cfg.get("image_size", 224))
    try:
        # the cache gives exactly the pixels of fast; one query image is not worth a cache entry
        decode = "pil" if cfg.get("decode") == "pil" else "fast"
        image = data.RetrievalDataset([path], [0], ["query"], transform=transform, decode=decode)[0][0]
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"--query_img_name {path}: cannot read it as an image ({err})") from None
    dtype = AMP_DTYPES[resolve_amp(cfg.get("amp", "off"), torch.device(device))]
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=dtype or torch.float32,
                                         enabled=dtype is not None):
        embedding, _ = model(device_input(model, cfg, torch.device(device))(image.unsqueeze(0)))
    return torch.nn.functional.normalize(embedding.float(), dim=1)[0].cpu()


def retrieve(database: str | Path | dict[str, Any], query_path: str, k: int, checkpoint: str | None = None,
             device: str = "cpu") -> QueryResult:
    db = evaluation.load_database(database) if not isinstance(database, dict) else database
    if find_path(db, query_path) is not None:
        return evaluation.query_database(db, query_path, k)
    if not Path(query_path).is_file():
        raise UserError(f"--query_img_name {query_path}: no such image, and it is not a path stored in the database")
    checkpoint = checkpoint or db.get("checkpoint")
    if not checkpoint:
        raise UserError(f"{query_path} is not in the database and the database names no checkpoint to embed "
                        "it with; pass --checkpoint")
    embedding = embed_image(query_path, checkpoint, device)
    stored = db["query"]["embeddings"].shape[1]
    if embedding.shape[0] != stored:
        raise UserError(f"--checkpoint {checkpoint} gives {embedding.shape[0]}-d embeddings but the database holds "
                        f"{stored}-d ones: use the checkpoint of the run that wrote the database")
    result = evaluation.query_database(db, embedding, k)
    return dataclasses.replace(result, query_path=query_path)


def write_outputs(result: QueryResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``montage.png`` (query, then the K results with rank, distance and a green/red border) + ``index.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, html = out_dir / "montage.png", out_dir / "index.html"
    evaluation.write_montage(result.query_path, result.paths, result.distances, result.correct, png)
    evaluation.write_html(result.query_path, result.paths, result.distances, result.correct, html)
    return png, html


def montage_for_query(database: dict[str, Any], query_index: int, k: int, out_png: str | Path) -> Path:
    """Montage of one stored query (used by the trainer to log retrieval examples per evaluation)."""
    db = {"version": 1, "metric": "ip", "query": database["query"], "gallery": database["gallery"],
          "checkpoint": None, "config": {}}
    result = evaluation.query_database(db, database["query"]["paths"][query_index], k)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    evaluation.write_montage(result.query_path, result.paths, result.distances, result.correct, out_png)
    return Path(out_png)
