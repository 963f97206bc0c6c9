"""Shared helpers of the dataset readers: layout errors, list-file parsing, count checks, label maps."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from metric_retrieval.data.errors import DatasetError, DatasetWarning

Box = tuple[float, float, float, float]

SYNTH_MARKER = ".synthetic.json"  # written by metric_retrieval.data.synth; readers skip the standard-count warnings


@dataclass
class SplitRecords:
    """One split as read from disk, before label remapping.

    ``paths`` are absolute; ``raw_labels`` are the dataset's own class ids (int or str); ``boxes``
    (x1, y1, x2, y2) in original-image pixels, or None when the dataset has none; ``class_names``
    maps a raw id to a human-readable name where the dataset provides one.
    """

    paths: list[str]
    raw_labels: list
    boxes: list[Box] | None = None
    class_names: dict = field(default_factory=dict)


def layout_error(problem: str, path: str | os.PathLike, layout: str) -> DatasetError:
    """A :class:`DatasetError` naming ``path`` and showing the expected layout tree."""
    return DatasetError(f"{problem}: {path}\nexpected layout:\n{layout.rstrip()}")


def require_file(path: Path, layout: str, what: str = "missing file") -> Path:
    if not path.is_file():
        raise layout_error(what, path, layout)
    return path


def require_dir(path: Path, layout: str, what: str = "missing folder") -> Path:
    if not path.is_dir():
        raise layout_error(what, path, layout)
    return path


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for c in candidates:
        if c.exists():
            return c
    return None


def is_synthetic(root: Path) -> bool:
    return (root / SYNTH_MARKER).is_file()


def check_count(found: int, standard: int | None, what: str, root: Path) -> None:
    """Warn (:class:`DatasetWarning`) when ``found`` differs from the standard count (not for synthetic data)."""
    if standard is None or found == standard or is_synthetic(root):
        return
    warnings.warn(f"found {found:,} images in the {what}, the standard split has {standard:,}: "
                  "is the archive fully extracted?", DatasetWarning, stacklevel=3)


def read_rows(path: Path, min_fields: int, expected: str, skip: int = 0) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a whitespace-separated list file, skipping ``skip`` header lines.

    Blank lines are ignored; a line with fewer than ``min_fields`` fields raises a :class:`DatasetError`
    naming the file, the 1-based line number and the expected format.
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if number <= skip:
                continue
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise DatasetError(f"{path} line {number}: expected '{expected}', got {line.strip()!r} "
                                   "(truncated or malformed list file)")
            yield number, fields


def parse_number(text: str, path: Path, line: int, kind: type = int):
    try:
        return kind(text) if kind is int else float(text)
    except ValueError:
        raise DatasetError(f"{path} line {line}: {text!r} is not a number") from None


def class_sort_key(raw) -> tuple:
    """Numeric ids (ints or digit strings) sort numerically (2 < 10); other names sort as text.

    The seed code (CGD/CLF ``data_utils.py``) sorted label *strings*, so class "10" came before "2"; here
    label i is the i-th smallest numeric class id instead (CUB and CARS classes, SOP class ids). Only
    the numbering differs: the classes and which images share one are the same. Names (class folders,
    zero-padded In-shop item ids such as ``id_00000002``) sort by name, which for zero-padded ids is
    the numeric order too.
    """
    if isinstance(raw, int):
        return (0, raw, "")
    text = str(raw)
    if text.isdigit():
        return (0, int(text), "")
    return (1, 0, text)


def label_map(raw_labels: Iterable) -> dict:
    """``raw id → index`` over the sorted distinct ids (see :func:`class_sort_key`)."""
    return {raw: i for i, raw in enumerate(sorted(set(raw_labels), key=class_sort_key))}
