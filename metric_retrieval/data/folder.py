"""A user's own images in class folders: ``train/`` + ``test/`` (leave-one-out) or ``query/`` + ``gallery/``."""
from __future__ import annotations

from pathlib import Path

from metric_retrieval.data.class_folders import list_class_folders, read_class_folders
from metric_retrieval.data.common import SplitRecords, layout_error
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.registry import DATASETS, BenchmarkInfo, Reader, SynthLayout
from metric_retrieval.data.synth import write_folder

LAYOUT = """\
<root>/
├── train/<class name>/<image>.jpg|png|...   (training classes)
├── test/<class name>/...                    (evaluation, leave-one-out), or instead:
├── query/<class name>/...                   (evaluation queries)
└── gallery/<class name>/...                 (searched by the queries)
"""
SPLITS = ("train", "test", "query", "gallery")


@DATASETS.register("folder", aliases=("generic", "imagefolder"))
class Folder(Reader):
    name = "folder"
    layout = LAYOUT
    synth = SynthLayout(write_folder, images_per_class=4)
    splits = SPLITS

    def __init__(self, root) -> None:
        super().__init__(root)
        if not self.root.is_dir():
            raise layout_error("missing folder", self.root, LAYOUT)
        if not self.available_splits():
            raise layout_error("no train/, test/, query/ or gallery/ folder in", self.root, LAYOUT)
        if (self.root / "test").is_dir() and (self.root / "query").is_dir():
            raise layout_error("test/ and query/ + gallery/ are two evaluation layouts; keep one of them in",
                               self.root, LAYOUT)

    def available_splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if (self.root / s).is_dir())

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        if boxes:
            raise DatasetError("the folder layout has no bounding boxes: crop is only for cub and cars")
        if split in ("query", "gallery") and (self.root / "query").is_dir() != (self.root / "gallery").is_dir():
            raise layout_error("query/ and gallery/ go together; missing", self.root / split, LAYOUT)
        records = read_class_folders(list_class_folders(self.root / split, LAYOUT))
        if not records.paths:
            raise layout_error("no images in the class folders of", self.root / split, LAYOUT)
        return records

    @classmethod
    def benchmark(cls, root: str | Path | None = None) -> BenchmarkInfo:
        query_gallery = root is not None and (Path(root).expanduser() / "query").is_dir()
        num = None
        if root is not None and (Path(root).expanduser() / "train").is_dir():
            num = sum(1 for p in (Path(root).expanduser() / "train").iterdir() if p.is_dir())
        if query_gallery:
            return BenchmarkInfo("folder", "query_gallery", (1, 10, 20, 30, 40, 50), "train",
                                 ("query", "gallery"), num)
        return BenchmarkInfo("folder", "leave_one_out", (1, 2, 4, 8), "train", ("test",), num)
