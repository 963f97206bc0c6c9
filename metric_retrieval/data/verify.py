"""Decode every image once, in threads, before training starts (``--skip_bad_images``)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from metric_retrieval.data.errors import DatasetError, DatasetWarning
from metric_retrieval.data.image_io import check_image

MAX_LISTED = 10
BAR_MIN_IMAGES = 1000  # fewer files to decode take seconds: no progress bar for them


def cache_root() -> Path:
    """``$METRIC_RETRIEVAL_CACHE`` or ``~/.cache/metric-retrieval``: verification results, decoded images."""
    base = os.environ.get("METRIC_RETRIEVAL_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "metric-retrieval"


def cache_dir() -> Path:
    """Where verification results are kept: ``cache_root()/verified``."""
    return cache_root() / "verified"


def _cache_file(paths: Sequence[str]) -> Path:
    digest = hashlib.sha1("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def find_bad_images(paths: Sequence[str], workers: int | None = None, use_cache: bool = True) -> dict[int, str]:
    """``{index: reason}`` for every path that is missing or cannot be decoded.

    With ``use_cache``, files that decoded before and still have the same (size, mtime) are not opened
    again: the good ones are remembered in a small JSON file under :func:`cache_dir` (keyed by the path
    list), so a second run over an unchanged dataset only stats its files.
    """
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    stats = [_stat(p) for p in paths]
    known: dict[str, list[int]] = {}
    cache = _cache_file(paths) if use_cache else None
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
    todo = [i for i, st in enumerate(stats) if st is not None and known.get(paths[i]) != st]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = pool.map(check_image, [paths[i] for i in todo], chunksize=64)
        reasons = dict(zip(todo, tqdm(checked, total=len(todo), desc="verify images", unit="img", leave=False,
                                      disable=len(todo) < BAR_MIN_IMAGES, dynamic_ncols=True)))
    bad = {i: "missing" for i, st in enumerate(stats) if st is None}
    bad.update({i: r for i, r in reasons.items() if r is not None})
    if cache is not None and todo:
        good = {p: st for i, (p, st) in enumerate(zip(paths, stats)) if st is not None and i not in bad}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(good), encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:  # a read-only home is no reason to fail
            pass
    return dict(sorted(bad.items()))


def find_missing(paths: Sequence[str]) -> dict[int, str]:
    """``{index: "missing"}`` for paths that do not exist (a cheap check used when verification is off)."""
    return {i: "missing" for i, p in enumerate(paths) if not os.path.isfile(p)}


def handle_bad_images(bad: dict[int, str], paths: Sequence[str], what: str, skip: bool) -> list[int]:
    """Indices to keep. Raises a :class:`DatasetError` listing bad files unless ``skip`` (then warns)."""
    if not bad:
        return list(range(len(paths)))
    if not skip:
        listed = "\n".join(f"  {paths[i]} ({bad[i]})" for i in sorted(bad)[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise DatasetError(f"{len(bad)} image(s) of the {what} cannot be read:\n{listed}{more}\n"
                           "fix or re-extract them; train.py and data_utils.py prepare drop them with "
                           "--skip_bad_images")
    warnings.warn(f"dropped {len(bad)} unreadable image(s) from the {what} (--skip_bad_images)",
                  DatasetWarning, stacklevel=3)
    return [i for i in range(len(paths)) if i not in bad]


__all__ = ["cache_dir", "cache_root", "find_bad_images", "find_missing", "handle_bad_images"]
