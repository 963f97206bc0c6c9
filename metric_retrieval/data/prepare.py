"""``data_utils.py prepare``: a resized (optionally box-cropped) copy of a dataset in its own layout.

In the spirit of the CGD/CLF ``data_utils.py`` (which re-saved every image, cropped or not), but the
copy keeps the original folder layout and list files, so it is itself a valid root for the same reader.
Boxes are rescaled in the copied ``bounding_boxes.txt`` / ``cars_annos.mat``; after ``crop`` every box
is the whole (cropped) image.
"""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from metric_retrieval.data.builder import get_reader
from metric_retrieval.data.cars import Cars, read_annotations
from metric_retrieval.data.class_folders import image_extensions
from metric_retrieval.data.common import Box, parse_number, read_rows
from metric_retrieval.data.cub import CUB
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.image_io import load_image
from metric_retrieval.data.registry import datasets_with_boxes
from metric_retrieval.data.synth import write_cars_annos
from metric_retrieval.data.verify import handle_bad_images
from metric_retrieval.utils.progress import bar_interval


def resize_shorter(img: Image.Image, size: int | None) -> Image.Image:
    """Scale so the shorter side is ``size`` (aspect kept, never upsampled); None keeps the image."""
    w, h = img.size
    if size is None or min(w, h) <= size:
        return img
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


def _convert(src: str, dst: Path, box: Box | None, crop: bool, size: int | None) -> tuple[Box | None, str | None]:
    """Write the converted image; returns (its new box or None, error or None)."""
    try:
        img = load_image(src, box=box if crop else None)
        with Image.open(src) as im:
            full_w, full_h = im.size
        out = resize_shorter(img, size)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fmt = Image.registered_extensions().get(dst.suffix.lower(), "JPEG")
        out.save(dst, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    except Exception as err:  # noqa: BLE001 - reported with the path below
        return None, f"{type(err).__name__}: {err}"
    if box is None:
        return None, None
    if crop:
        return (0.0, 0.0, float(out.width), float(out.height)), None
    sx, sy = out.width / full_w, out.height / full_h
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), None


def _copy_lists(root: Path, out: Path) -> None:
    """Copy every non-image file (list files, .mat, .pkl, markers) with its relative path."""
    exts = image_extensions()
    for path in root.rglob("*"):
        if path.is_file() and path.suffix.lower() not in exts:
            dst = out / path.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst)


def _rewrite_cub(reader: CUB, root: Path, out: Path, boxes: dict[str, Box]) -> None:
    base = reader.base
    if base is None:
        return
    images_txt = base / "images.txt"
    id_to_path = {f[0]: str(base / "images" / f[1]) for _, f in read_rows(images_txt, 2, "<id> <path>")}
    src = base / "bounding_boxes.txt"
    lines = []
    for n, f in read_rows(src, 5, "<image_id> <x> <y> <width> <height>"):
        new = boxes.get(id_to_path.get(f[0], ""))
        if new is None:
            x, y, w, h = (parse_number(v, src, n, float) for v in f[1:5])
        else:
            x, y, w, h = new[0], new[1], new[2] - new[0], new[3] - new[1]
        lines.append(f"{f[0]} {x:.1f} {y:.1f} {w:.1f} {h:.1f}\n")
    (out / base.relative_to(root) / "bounding_boxes.txt").write_text("".join(lines), encoding="utf-8")


def _rewrite_cars(reader: Cars, root: Path, out: Path, boxes: dict[str, Box]) -> None:
    if not reader.mat.is_file():
        return
    rows, names = read_annotations(reader.mat)
    new_rows = []
    for row in rows:
        rel = str(row["relative_im_path"])
        box = boxes.get(str(root / rel)) or tuple(float(row[f"bbox_{k}"]) for k in ("x1", "y1", "x2", "y2"))
        new_rows.append((rel, *box, int(row["class"]), int(row.get("test", 0))))
    write_cars_annos(out / reader.mat.relative_to(root), new_rows, names)


def prepare_dataset(name: str, root: str | Path, out: str | Path, size: int | None = 256, crop: bool = False,
                    workers: int = 2, skip_bad_images: bool = False) -> dict[str, Any]:
    """Write the resized (shorter side = ``size``) and optionally cropped copy of ``root`` to ``out``.

    Returns a summary ``{"dataset", "out", "images", "size", "crop"}``. Supported: cub, cars, sop, inshop,
    folder; bad images raise a :class:`DatasetError` (or are left out with ``skip_bad_images``, their
    list entries staying, so verify the copy with ``--skip_bad_images`` too).
    """
    reader = get_reader(name, root)
    root, out = Path(root).expanduser().absolute(), Path(out).expanduser().absolute()
    if reader.kind == "landmark":
        raise DatasetError(f"prepare supports cub, cars, sop, inshop and folder, not {reader.name} "
                           "(landmark images are resized at test time, see --imsize)")
    if crop and not reader.has_boxes:
        raise DatasetError(f"crop is only for datasets with bounding boxes ({', '.join(datasets_with_boxes())}), "
                           f"not {reader.name}")
    if size is not None and size < 1:
        raise DatasetError(f"--size must be a positive number of pixels, got {size}")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file, not a folder")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise DatasetError(f"--out {out} is inside the dataset root {root}: the copy would be copied into "
                           "itself; choose a folder outside it")
    jobs: list[tuple[str, Box | None]] = []
    for split in reader.available_splits():
        try:
            records = reader.read(split, boxes=reader.has_boxes)
        except DatasetError:
            if crop:
                raise
            records = reader.read(split)
        jobs += zip(records.paths, records.boxes or [None] * len(records.paths))
    out.mkdir(parents=True, exist_ok=True)
    _copy_lists(root, out)

    def run(job: tuple[str, Box | None]):
        src, box = job
        return _convert(src, out / Path(src).relative_to(root), box, crop, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(run, jobs), total=len(jobs), desc="prepare", unit="img", dynamic_ncols=True,
                            mininterval=bar_interval()))
    bad = {i: err for i, (_, err) in enumerate(results) if err is not None}
    handle_bad_images(bad, [p for p, _ in jobs], f"{reader.name} dataset", skip_bad_images)
    new_boxes = {src: nb for (src, _), (nb, _) in zip(jobs, results) if nb is not None}
    if isinstance(reader, CUB):
        _rewrite_cub(reader, root, out, new_boxes)
    elif isinstance(reader, Cars):
        _rewrite_cars(reader, root, out, new_boxes)
    summary = {"dataset": reader.name, "source": str(root), "out": str(out), "images": len(jobs) - len(bad),
               "size": size, "crop": crop}
    (out / ".prepared.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


__all__ = ["prepare_dataset", "resize_shorter"]
