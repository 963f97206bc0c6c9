"""The ``DATASETS`` registry, the reader base class and what each reader declares: its benchmark metadata and
its synthetic layout."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metric_retrieval.data.common import SplitRecords, label_map
from metric_retrieval.data.errors import DatasetWarning
from metric_retrieval.utils.options import Option
from metric_retrieval.utils.registry import Registry

DATASETS = Registry("dataset")
# the option every reader with bounding boxes takes (declared by :class:`Reader` from ``has_boxes``)
CROP_TYPE = Option("crop_type", str, "uncropped", "crop the images to their bounding boxes",
                   choices=("uncropped", "cropped"), to_builder=False)


@dataclass(frozen=True)
class BenchmarkInfo:
    """How a benchmark is evaluated.

    Attributes:
        name: canonical dataset name (``cub``, ``cars``, ``sop``, ``inshop``, ``folder``, ``oxford5k``, ...).
        protocol: ``leave_one_out`` (each test image queries the rest of the test split),
            ``query_gallery`` (In-shop) or ``landmark`` (mAP on Oxford/Paris ground truth).
        recall_ks: the Recall@K values the papers report.
        train_split: split used for training (None for test-only landmark sets).
        eval_splits: splits evaluated (``("test",)``, ``("query", "gallery")`` or ``("query", "database")``).
        num_train_classes: classes of the standard training split (None when it depends on the data).
        has_boxes: the annotations include bounding boxes (``--crop_type cropped``).
        title: the name the papers' tables print (``CUB200``, ``CARS196``, ...).
    """

    name: str
    protocol: str
    recall_ks: tuple[int, ...]
    train_split: str | None
    eval_splits: tuple[str, ...]
    num_train_classes: int | None
    has_boxes: bool = False
    title: str = ""


@dataclass(frozen=True)
class SynthLayout:
    """How to write a miniature copy of a reader's on-disk layout (:func:`metric_retrieval.data.write_synthetic`).

    ``write(writer, images_per_class, **options)`` draws every image through ``writer.image(relative_path,
    class_index)`` (a :class:`metric_retrieval.data.synth.SynthWriter` rooted at the dataset root) and writes the
    layout's list files; ``images_per_class`` is the default number of images per class.
    """

    write: Callable[..., None]
    images_per_class: int


class Reader:
    """Reads one benchmark's split lists from ``root`` (subclasses: one per benchmark).

    A subclass sets the class attributes and implements :meth:`read`; validation (missing files,
    malformed lines, non-standard counts) happens there and raises/warns with the layout tree. ``options``
    (:mod:`metric_retrieval.utils.options`) are the reader's own settings, passed to its constructor as keywords
    after ``root`` (a reader that declares one takes it in ``__init__``); a reader with ``has_boxes`` takes
    ``--crop_type``, which the dataset builder reads itself. ``synth`` is the reader's synthetic layout (None: it
    has none), which ``data_utils.py synth --layout NAME`` and the tests write.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "retrieval"  # or "landmark"
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    standard_counts: ClassVar[dict[str, int]] = {}
    has_boxes: ClassVar[bool] = False
    protocol: ClassVar[str] = "leave_one_out"
    recall_ks: ClassVar[tuple[int, ...]] = (1, 2, 4, 8)
    num_train_classes: ClassVar[int | None] = None
    title: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    synth: ClassVar[SynthLayout | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.has_boxes and CROP_TYPE not in cls.options:
            cls.options = (*cls.options, CROP_TYPE)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def available_splits(self) -> tuple[str, ...]:
        return self.splits

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        raise NotImplementedError

    def label_group(self, split: str) -> tuple[str, ...]:
        """Splits whose labels share one raw-id → index map (query and gallery must agree)."""
        if split in ("query", "gallery"):
            return ("query", "gallery")
        return (split,)

    def label_map(self, split: str, records: SplitRecords) -> dict:
        group = self.label_group(split)
        raws = list(records.raw_labels)
        for other in group:
            if other != split:
                with warnings.catch_warnings():  # counts of the sibling split are reported when it is built
                    warnings.simplefilter("ignore", DatasetWarning)
                    raws += self.read(other).raw_labels
        return label_map(raws)

    @classmethod
    def benchmark(cls, root: str | Path | None = None) -> BenchmarkInfo:
        eval_splits = tuple(s for s in cls.splits if s != "train")
        return BenchmarkInfo(cls.name, cls.protocol, cls.recall_ks, "train", eval_splits, cls.num_train_classes,
                             cls.has_boxes, cls.title or cls.name)


def datasets_with_boxes() -> list[str]:
    """Registered datasets whose annotations include bounding boxes."""
    return [name for name in DATASETS.names() if DATASETS.get(name).has_boxes]
