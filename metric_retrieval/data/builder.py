"""Entry points: ``build_dataset``, ``get_benchmark``, ``load_landmark_dataset``, ``describe_dataset``."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metric_retrieval.data.common import layout_error
from metric_retrieval.data.dataset import RetrievalDataset
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.landmark import LandmarkData, LandmarkImageDataset
from metric_retrieval.data.registry import DATASETS, BenchmarkInfo, Reader, datasets_with_boxes
from metric_retrieval.data.verify import find_bad_images, find_missing, handle_bad_images


def list_datasets() -> list[str]:
    return DATASETS.names()


def get_reader(name: str, root: str | Path, options: dict[str, Any] | None = None) -> Reader:
    """The reader of dataset ``name`` (or an alias) for ``root``, built with ``options``, the keywords of its own
    declared options (``training.components.component_kwargs("data_name", cfg)``); validates that the root
    exists."""
    cls = DATASETS.get(name)
    if not Path(root).expanduser().exists():
        raise layout_error(f"{cls.name} dataset root does not exist", root, cls.layout)
    return cls(root, **(options or {}))


def get_benchmark(name: str, root: str | Path | None = None) -> BenchmarkInfo:
    """Evaluation protocol, Recall@K values and splits of a benchmark (``folder`` looks at ``root``)."""
    return DATASETS.get(name).benchmark(root)


def build_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None, crop: bool = False,
                  verify_images: bool = True, skip_bad_images: bool = False, max_size: int | None = None,
                  imsize: int | None = 1024, decode: str = "fast", reader_options: dict[str, Any] | None = None
                  ) -> RetrievalDataset | LandmarkImageDataset:
    """One split of a dataset as a map-style ``Dataset``.

    Args:
        name: ``cub``, ``cars``, ``sop``, ``inshop``, ``folder`` or a landmark set (aliases accepted).
        root: dataset root in the official layout (see ``data_utils.py check``).
        split: ``train``/``test``, ``train``/``query``/``gallery`` (In-shop, folder) or, for landmark sets,
            ``query``/``database`` (a :class:`LandmarkImageDataset`; queries cropped to their boxes).
        transform: applied to each PIL image.
        crop: crop CUB/CARS images to their bounding boxes on the fly (an error for other datasets).
        verify_images: decode every image once (threads) before returning; bad files raise a
            :class:`DatasetError` listing them. Off: only missing files are detected. Files that decoded
            before with the same (size, mtime) are not decoded again (see
            :func:`metric_retrieval.data.verify.cache_dir`).
        skip_bad_images: drop bad files with a :class:`DatasetWarning` instead of raising (and replace or leave
            out files that go bad later, see :class:`RetrievalDataset`).
        max_size: reduced-size JPEG decoding (faster, slightly different pixels); None = exact.
        imsize: landmark sets only, the longest image side (cirtorch default 1024).
        decode: ``"fast"`` (reduced-size JPEG decoding + tensor transforms, the default), ``"cache"`` (fast + an
            exact on-disk cache of decode + fixed-size resize, :mod:`metric_retrieval.data.decoded_cache`) or ``"pil"``
            (full-size PIL, torchvision ``ImageFolder`` style); see :class:`RetrievalDataset`. Not used by
            landmark sets.
        reader_options: keywords for the reader's constructor, from its declared ``options``.

    Labels are in ``[0, num_classes)``, numbered by sorted raw class id; query and gallery share one map.
    """
    reader = get_reader(name, root, reader_options)
    if reader.kind == "landmark":
        if crop:
            raise DatasetError(f"crop is only for datasets with bounding boxes ({', '.join(datasets_with_boxes())}), "
                               f"not {reader.name}")
        data = reader.load()  # type: ignore[attr-defined]
        if split not in ("query", "database"):
            raise DatasetError(f"{reader.name} has splits query and database, not {split!r}")
        if split == "query":
            return LandmarkImageDataset(data.query_paths, data.query_boxes, imsize, transform)
        return LandmarkImageDataset(data.db_paths, None, imsize, transform)
    available = reader.available_splits()
    if split not in available:
        raise layout_error(f"{reader.name} has no split {split!r} (available: {', '.join(available)}) in",
                           root, reader.layout)
    if crop and not reader.has_boxes:
        raise DatasetError(f"crop is only for datasets with bounding boxes ({', '.join(datasets_with_boxes())}), "
                           f"not {reader.name}")
    records = reader.read(split, boxes=crop)
    mapping = reader.label_map(split, records)
    what = f"{reader.name} {split} split"
    bad = find_bad_images(records.paths) if verify_images else find_missing(records.paths)
    keep = handle_bad_images(bad, records.paths, what, skip_bad_images)
    ordered = sorted(mapping, key=mapping.get)
    classes = [str(records.class_names.get(raw, raw)) for raw in ordered]
    paths = [records.paths[i] for i in keep]
    labels = [mapping[records.raw_labels[i]] for i in keep]
    boxes = None if records.boxes is None else [records.boxes[i] for i in keep]
    return RetrievalDataset(paths, labels, classes, boxes, transform, crop, max_size, reader.name, split, decode,
                            skip_bad=skip_bad_images)


def load_landmark_dataset(name: str, root: str | Path, verify_images: bool = False) -> LandmarkData:
    """Ground truth and image lists of ``oxford5k``, ``paris6k``, ``roxford5k`` or ``rparis6k``.

    ``verify_images`` decodes every image; a bad one raises (dropping it would shift the gnd indices).
    """
    reader = get_reader(name, root)
    if reader.kind != "landmark":
        landmark = [n for n in DATASETS.names() if DATASETS.get(n).kind == "landmark"]
        raise DatasetError(f"{reader.name} is not a landmark dataset (those are: {', '.join(landmark)})")
    data = reader.load()  # type: ignore[attr-defined]
    if verify_images:
        paths = data.db_paths + [p for p in data.query_paths if p not in set(data.db_paths)]
        handle_bad_images(find_bad_images(paths), paths, f"{reader.name} images", skip=False)
    return data


def describe_dataset(name: str, root: str | Path, verify_images: bool = False) -> dict[str, Any]:
    """Per-split image and class counts plus every warning raised while reading (``data_utils.py check``)."""
    reader = get_reader(name, root)
    info = reader.benchmark(root)
    out: dict[str, Any] = {"dataset": reader.name, "root": str(root), "protocol": info.protocol,
                           "recall_ks": list(info.recall_ks), "splits": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if reader.kind == "landmark":
            data = load_landmark_dataset(name, root, verify_images)
            positive = "ok" if data.protocol == "old" else "easy"
            out["gt_protocol"] = data.protocol
            out["splits"] = {
                "database": {"images": len(data.db_paths)},
                "query": {"images": len(data.query_paths),
                          "positives": sum(len(g[positive]) + len(g.get("hard", [])) for g in data.gnd),
                          "junk": sum(len(g["junk"]) for g in data.gnd)}}
        else:
            for split in reader.available_splits():
                ds = build_dataset(name, root, split, verify_images=verify_images)
                out["splits"][split] = {"images": len(ds), "classes": ds.num_classes}
    out["warnings"] = [str(w.message) for w in caught]
    return out


__all__ = ["build_dataset", "describe_dataset", "get_benchmark", "get_reader", "list_datasets",
           "load_landmark_dataset"]
