"""A user's image catalogue embedded in streamed, fixed-size shards on disk, resumable, split over ranks.

**Catalogue** (:func:`read_catalogue`): a folder tree (every image below it, sorted; an image in a sub-folder
is labelled by its first-level folder name, as torchvision's ``ImageFolder``) or a list file:

- ``.csv`` with a header row naming a ``path`` column and optionally ``label`` and ``id`` columns;
- any other text file: one path per line, optionally followed by whitespace and a label.

Relative paths in a list are relative to the list file's folder. An item's id defaults to its path as
written in the list (relative to the root for a folder tree).

**Shards** (:func:`embed_catalogue`): item ``i`` belongs to shard ``i // shard_size``; shard ``s`` is embedded
by rank ``s % world_size`` (``torchrun``) and written atomically to ``shard-{s:06d}.pt`` as soon as it is
complete, so memory holds one shard however large the catalogue, and a killed build loses at most the shard in
progress: the next run skips every shard on disk whose catalogue and model fingerprints match (a shard is
verified against its raw-byte checksum when read; a damaged one is recomputed or reported). The settings of a
shard folder (``settings.json``: catalogue, model, shard size) are fixed by its first run: a resume with another
``--shard_size`` is refused, since its shards would cover other items. An image that cannot be decoded, or has
more pixels than the limit, is skipped; its index and the decoder's message are kept in its shard
(:func:`bad_items` gathers them for the report file). Each embedded item carries the SHA-256 of its file's bytes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from metric_retrieval.data.batch import collate
from metric_retrieval.data.class_folders import image_extensions
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import CorruptFileError, atomic_save, atomic_write_text, file_sha256, load_verified
from metric_retrieval.utils.progress import bar_interval

__all__ = ["Catalogue", "bad_items", "catalogue_root", "embed_catalogue", "embed_paths", "file_hashes", "iter_shards",
           "read_catalogue", "shard_files"]

logger = logging.getLogger(__name__)
SHARD_VERSION = 3  # 3: embeddings as the model gives them (its recipe), no longer always L2-normalised
SETTINGS = "settings.json"


@dataclass(frozen=True)
class Catalogue:
    """Image paths with optional labels (class names; None where unlabelled) and ids, in catalogue order."""

    paths: list[str]
    labels: list[str | None]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the paths in order: shards written for another list are never reused."""
        h = hashlib.sha256()
        for p in self.paths:
            h.update(p.encode("utf-8", "surrogateescape") + b"\0")
        return h.hexdigest()


def _folder_catalogue(root: Path) -> Catalogue:
    exts = image_extensions()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    rel = [p.relative_to(root) for p in files]
    labels = [r.parts[0] if len(r.parts) > 1 else None for r in rel]
    return Catalogue([str(p) for p in files], labels, [r.as_posix() for r in rel])


def _csv_catalogue(path: Path) -> Catalogue:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise UserError(f"{path}: a CSV catalogue needs a header row with a 'path' column "
                        f"(optional 'label' and 'id'), got {list(rows[0]) if rows else 'no rows'}")
    base = path.parent
    paths, labels, ids = [], [], []
    for n, row in enumerate(rows, start=2):
        if not row["path"]:
            raise UserError(f"{path}:{n}: empty 'path'")
        paths.append(str(base / row["path"]))
        labels.append(row.get("label") or None)
        ids.append(row.get("id") or row["path"])
    return Catalogue(paths, labels, ids)


def _text_catalogue(path: Path) -> Catalogue:
    paths, labels, ids = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.strip().split(maxsplit=1)
        if not fields or fields[0].startswith("#"):
            continue
        paths.append(str(path.parent / fields[0]))
        labels.append(fields[1].strip() if len(fields) > 1 else None)
        ids.append(fields[0])
    return Catalogue(paths, labels, ids)


def read_catalogue(source: str | os.PathLike, flag: str = "--images") -> Catalogue:
    """The catalogue of a folder tree or a list file (see the module docstring); empty → :class:`UserError`."""
    path = Path(source)
    if path.is_dir():
        cat = _folder_catalogue(path)
    elif path.is_file():
        try:
            cat = _csv_catalogue(path) if path.suffix.lower() == ".csv" else _text_catalogue(path)
        except UnicodeDecodeError:
            raise UserError(f"{flag} {path}: expected a folder or a text/CSV list of image paths, "
                            "got a binary file") from None
    else:
        raise UserError(f"{flag} {path}: no such folder or list file")
    if not len(cat):
        raise UserError(f"{flag} {path}: no images found (a folder of images, or a list with one path a line)")
    return cat


def catalogue_root(source: str | os.PathLike) -> Path:
    """The folder a catalogue's paths are relative to: the folder tree itself, or a list file's folder."""
    path = Path(source)
    return path if path.is_dir() else path.parent


def file_hashes(paths: Sequence[str]) -> list[str | None]:
    """SHA-256 of each file's bytes (None for a file that cannot be read)."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(file_sha256(p))
        except OSError:
            out.append(None)
    return out


class _Items(Dataset):
    """``(image or None, index, error, sha256)`` for catalogue items: a decoding failure is returned, not raised."""

    def __init__(self, embedder: Embedder, paths: Sequence[str]) -> None:
        self.dataset = embedder.dataset(paths)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str, str]:
        try:
            return self.dataset.load(i)[0], i, "", file_sha256(self.dataset.paths[i])
        except (OSError, SyntaxError, ValueError, RuntimeError) as err:  # PIL, torchvision decoders, pixel limit
            return None, i, f"{type(err).__name__}: {err}".replace("\n", " "), ""


def _collate(batch: list[tuple[Any, int, str, str]]
             ) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]], list[str]]:
    good = [(img, 0, i) for img, i, err, _ in batch if img is not None]
    bad = [(i, err) for img, i, err, _ in batch if img is None]
    images = collate(good)[0] if good else None
    return images, [i for _, _, i in good], bad, [h for img, _, _, h in batch if img is not None]


def shard_files(shard_dir: str | Path) -> list[Path]:
    return sorted(Path(shard_dir).glob("shard-*.pt"))


def _shard_path(shard_dir: Path, s: int) -> Path:
    return shard_dir / f"shard-{s:06d}.pt"


def _load_shard(path: Path) -> dict[str, Any] | None:
    """The verified shard, or None (with a warning) for a damaged, torn or foreign file."""
    try:
        shard = load_verified(path, "shard")
    except (CorruptFileError, OSError) as err:
        logger.warning("%s", err)
        return None
    return shard if isinstance(shard, dict) and shard.get("version") == SHARD_VERSION else None


def _check_settings(shard_dir: Path, catalogue_fp: str, model_fp: str, shard_size: int) -> None:
    """Record the folder's settings on its first run; refuse a resume of the same catalogue and model with
    another shard size (its shard numbers would name other items)."""
    path = shard_dir / SETTINGS
    settings = {"catalogue": catalogue_fp, "model": model_fp, "shard_size": shard_size}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("catalogue") == catalogue_fp and old.get("model") == model_fp and \
                old.get("shard_size") != shard_size:
            raise UserError(f"{shard_dir} holds the shards of an interrupted run with --shard_size "
                            f"{old.get('shard_size')}; rerun with --shard_size {old.get('shard_size')} to resume it "
                            f"(or delete {shard_dir} to start over)")
        if old == settings:
            return
    atomic_write_text(path, json.dumps(settings))


def _done(path: Path, s: int, catalogue_fp: str, model_fp: str) -> bool:
    if not path.is_file():
        return False
    shard = _load_shard(path)
    ok = shard is not None and shard["shard"] == s and shard["catalogue"] == catalogue_fp and shard["model"] == model_fp
    if shard is not None and not ok:
        logger.warning("shard %s was written for another catalogue or model: recomputing it", path)
    return ok


def embed_catalogue(embedder: Embedder, catalogue: Catalogue, shard_dir: str | Path, shard_size: int = 4096,
                    batch_size: int = 64, workers: int = 2, rank: int = 0, world_size: int = 1,
                    progress: bool = True) -> dict[str, int]:
    """Embed this rank's shards of ``catalogue`` into ``shard_dir``; shards already on disk are skipped.

    Returns ``{"shards": this rank's shard count, "skipped": of them already done, "images": embedded now}``.
    """
    if shard_size < 1 or batch_size < 1:
        raise UserError(f"--shard_size and --batch_size must be >= 1, got {shard_size} and {batch_size}")
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    n, cat_fp = len(catalogue), catalogue.fingerprint
    if rank == 0:
        _check_settings(shard_dir, cat_fp, embedder.fingerprint, shard_size)
    num_shards = (n + shard_size - 1) // shard_size
    for path in shard_files(shard_dir)[num_shards:] if rank == 0 else []:  # left by a longer catalogue
        path.unlink(missing_ok=True)
    mine = [s for s in range(num_shards) if s % world_size == rank]
    todo = [s for s in mine if not _done(_shard_path(shard_dir, s), s, cat_fp, embedder.fingerprint)]
    batches = [list(range(b, min(b + batch_size, (s + 1) * shard_size, n)))
               for s in todo for b in range(s * shard_size, min((s + 1) * shard_size, n), batch_size)]
    total = sum(min(shard_size, n - s * shard_size) for s in mine)
    remaining = sum(len(b) for b in batches)
    loader = DataLoader(_Items(embedder, catalogue.paths), batch_sampler=batches, num_workers=workers,
                        collate_fn=_collate, pin_memory=embedder.device.type == "cuda")
    bar = tqdm(total=total, initial=total - remaining, unit="img", desc=f"embedding (rank {rank})",
               disable=not progress, dynamic_ncols=True, mininterval=bar_interval())
    parts: dict[str, list] = {"embeddings": [], "indices": [], "bad": [], "sha256": []}
    current = None
    for images, indices, bad, hashes in loader:
        s = (indices or [bad[0][0]])[0] // shard_size
        if current is not None and s != current:
            _write_shard(shard_dir, current, parts, catalogue, embedder, rank)
        current = s
        if images is not None:
            parts["embeddings"].append(embedder(images))
            parts["indices"].extend(indices)
            parts["sha256"].extend(hashes)
        parts["bad"].extend(bad)
        bar.update(len(indices) + len(bad))
    if current is not None:
        _write_shard(shard_dir, current, parts, catalogue, embedder, rank)
    bar.close()
    return {"shards": len(mine), "skipped": len(mine) - len(todo), "images": remaining}


def _write_shard(shard_dir: Path, s: int, parts: dict[str, list], catalogue: Catalogue, embedder: Embedder,
                 rank: int) -> None:
    """Write one complete shard atomically and empty ``parts``."""
    emb = torch.cat(parts["embeddings"]) if parts["embeddings"] else torch.empty(0, embedder.dim)
    shard = {"version": SHARD_VERSION, "shard": s, "rank": rank, "catalogue": catalogue.fingerprint,
             "model": embedder.fingerprint,
             "embeddings": emb, "indices": torch.tensor(parts["indices"], dtype=torch.long),
             "sha256": list(parts["sha256"]), "bad": [[i, catalogue.paths[i], err] for i, err in parts["bad"]]}
    path = _shard_path(shard_dir, s)
    try:
        atomic_save(shard, path)
    except OSError as err:
        raise UserError(f"cannot write shard {path}: {err.strerror or err} (free some space and rerun the same "
                        "command: finished shards are kept)") from None
    for v in parts.values():
        v.clear()


def embed_paths(embedder: Embedder, paths: Sequence[str], batch_size: int = 64, workers: int = 0
                ) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """In-memory embeddings of a few files (queries): ``(embeddings (n, D), their indices, [(index, error)])``."""
    loader = DataLoader(_Items(embedder, paths), batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    embs, good, bad = [torch.empty(0, embedder.dim)], [], []
    for images, indices, errors, _ in loader:
        if images is not None:
            embs.append(embedder(images))
        good.extend(indices)
        bad.extend(errors)
    return torch.cat(embs), good, bad


def iter_shards(shard_dir: str | Path) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """``(embeddings (n, D), catalogue indices (n,), file SHA-256s (n,))`` of every shard in order (one shard in
    memory at a time); a damaged shard → :class:`UserError`."""
    for path in shard_files(shard_dir):
        shard = _load_shard(path)
        if shard is None:
            raise UserError(f"shard {path} is unreadable or damaged; delete it and rerun the build to recompute it")
        yield shard["embeddings"], shard["indices"], shard["sha256"]


def bad_items(shard_dir: str | Path) -> list[tuple[int, str, str]]:
    """``(catalogue index, path, error)`` of every image the shards skipped."""
    out = []
    for path in shard_files(shard_dir):
        shard = _load_shard(path)
        out.extend((int(i), str(p), str(err)) for i, p, err in (shard or {}).get("bad", []))
    return out
