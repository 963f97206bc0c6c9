"""Query retrieval for ``test.py``: a stored or external query image against a saved feature database.

A query path stored in the database uses its stored feature (and, in a leave-one-out database, never
returns itself); any other image is embedded with the checkpoint saved next to the database.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

import evaluation
from engine.embedder import Embedder
from evaluation.database import QueryResult, find_path
from utils.errors import UserError


def embed_image(path: str, checkpoint: str | Path, device: str = "cpu") -> torch.Tensor:
    """(D,) embedding of one image file, computed exactly as the run computed its database
    (:class:`engine.embedder.Embedder`: same eval transform, decoding, normalisation, precision)."""
    embedder = Embedder(checkpoint, device)
    try:
        return embedder.embed_file(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"--query_img_name {path}: cannot read it as an image ({err})") from None


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
