"""Query retrieval for ``test.py``: a stored or external query image against a saved feature database.

A query path stored in the database uses its stored feature (and, in a leave-one-out database, never
returns itself); any other image is embedded with the checkpoint saved next to the database, whose inference
recipe must be the database's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from metric_retrieval.retrieval.database import QueryResult, find_path, load_database, query_database
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.visualize import write_html, write_montage
from metric_retrieval.training.checkpoint import load_file, weights_digest
from metric_retrieval.utils.errors import UserError


def embed_image(path: str, embedder: Embedder) -> torch.Tensor:
    """(D,) embedding of one image file, computed exactly as the run computed its database
    (:class:`metric_retrieval.retrieval.embedder.Embedder`: the recipe's transform and normalisation, the run's
    decoding and precision)."""
    try:
        return embedder.embed_file(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"--query_img_name {path}: cannot read it as an image ({err})") from None


def retrieve(database: str | Path | dict[str, Any], query_path: str, k: int, checkpoint: str | None = None,
             device: str = "cpu") -> QueryResult:
    """The ``k`` nearest database images of a stored query path or an image file.

    An explicit ``checkpoint`` must be the model that wrote the database (weights digest, where the database has
    one), for stored queries too, and its recipe the database's; without one, an image file is embedded with the
    database's own checkpoint, looked up next to the database file first.
    """
    if k < 1:
        raise UserError(f"--retrieval_num must be a positive number of results, got {k}")
    db_path = None if isinstance(database, dict) else Path(database)
    db = database if db_path is None else load_database(db_path)
    if checkpoint:
        check_same_model(db, checkpoint)
    if find_path(db, query_path) is not None:
        return query_database(db, query_path, k)
    if not Path(query_path).is_file():
        raise UserError(f"--query_img_name {query_path}: no such image, and it is not a path stored in the database")
    if not checkpoint:
        checkpoint = str(locate_checkpoint(db, db_path))
        check_same_model(db, checkpoint)
    embedder = Embedder(checkpoint, device)
    if embedder.recipe != db["recipe"]:
        raise UserError(f"--checkpoint {checkpoint} embeds images with another inference recipe than the database's "
                        f"(its {embedder.recipe}, the database's {db['recipe']}): use the checkpoint of the run "
                        "that wrote the database")
    embedding = embed_image(query_path, embedder)
    result = query_database(db, embedding, k)
    return dataclasses.replace(result, query_path=query_path)


def locate_checkpoint(db: dict[str, Any], db_path: Path | None) -> Path:
    """The database's checkpoint: the file of that name next to the database, else the path as stored
    (which was relative to the working directory of the training run)."""
    stored = db.get("checkpoint")
    if not stored:
        raise UserError("the query image is not in the database and the database names no checkpoint to embed "
                        "it with; pass --checkpoint")
    candidates = ([db_path.parent / Path(stored).name] if db_path is not None else []) + [Path(stored)]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"the database's checkpoint {stored} is neither next to the database nor at that path; "
                        "pass --checkpoint (the model_best.pth of the run that wrote the database)")
    return found


def check_same_model(db: dict[str, Any], checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose weights are not those that computed the database's embeddings."""
    record = db.get("model")
    if not record:
        return  # an older database: only its recipe can be compared (in ``retrieve``)
    ckpt = load_file(checkpoint)
    if "model" not in ckpt or "model_config" not in ckpt:
        raise UserError(f"--checkpoint {checkpoint} is not a metric-retrieval checkpoint (expected keys 'model' "
                        "and 'model_config')")
    if weights_digest(ckpt["model"]) != record["sha256"]:
        theirs, ours = ckpt["model_config"], record["config"]
        what = "other weights" if theirs == ours else f"another model ({_describe(theirs)}, the database's: " \
                                                       f"{_describe(ours)})"
        raise UserError(f"--checkpoint {checkpoint} holds {what} than the model that wrote the database, so its "
                        "distances would be meaningless; use that run's model_best.pth (next to the database)")


def _describe(model_cfg: dict[str, Any]) -> str:
    return f"{model_cfg.get('backbone')} + {model_cfg.get('head')}, {model_cfg.get('feature_dim')}-d"


def write_outputs(result: QueryResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``montage.png`` (query, then the K results with rank, distance and a green/red border) + ``index.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, html = out_dir / "montage.png", out_dir / "index.html"
    write_montage(result.query_path, result.paths, result.distances, result.correct, png)
    write_html(result.query_path, result.paths, result.distances, result.correct, html,
                          query_class=result.query_class, classes=result.classes)
    return png, html


def montage_for_query(database: dict[str, Any], query_index: int, k: int, out_png: str | Path) -> Path:
    """Montage of one stored query (used by the trainer to log retrieval examples per evaluation); ``database``
    is :func:`metric_retrieval.training.evaluate.evaluate_split`'s (with its ``"recipe"``)."""
    db = {"version": 1, "recipe": database["recipe"], "query": database["query"], "gallery": database["gallery"],
          "checkpoint": None, "config": {}}
    result = query_database(db, database["query"]["paths"][query_index], k)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    write_montage(result.query_path, result.paths, result.distances, result.correct, out_png)
    return Path(out_png)
