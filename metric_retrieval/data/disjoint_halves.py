"""Writing a class-disjoint retrieval set in the ``folder`` layout: ``train/<class>/<file>``, ``test/...``.

The real-image builders (:mod:`metric_retrieval.data.icon_themes`, :mod:`metric_retrieval.data.font_glyphs`) decide the
classes, their pictures and the (seeded) class order; this writes the first half of that order to ``train/`` and the
rest to ``test/``, with a JSON marker describing the build.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from metric_retrieval.utils.errors import UserError


def write_disjoint_halves(out: str | Path, classes: dict[str, dict[str, Image.Image]], order: list[str],
                          marker: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Replace ``out`` with ``classes`` (class -> file name -> picture) split by ``order``; returns the summary.

    The summary (also written to ``out/marker``) is ``meta`` plus ``root`` and ``splits``: per split its
    numbers of classes and images.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder to write the set into (it is replaced)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    half = len(order) // 2
    splits = {"train": order[:half], "test": order[half:]}
    for split, names in splits.items():
        for name in names:
            folder = out / split / name
            folder.mkdir(parents=True)
            for file_name, img in classes[name].items():
                img.save(folder / file_name)
    summary = {"root": str(out), **meta,
               "splits": {s: {"classes": len(names), "images": sum(len(classes[n]) for n in names)}
                          for s, names in splits.items()}}
    (out / marker).write_text(json.dumps(summary, indent=1))
    return summary
