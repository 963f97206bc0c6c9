"""CARS196 (Krause et al., "3D Object Representations for Fine-Grained Categorization", 3dRR 2013).

Zero-shot split: classes 1-98 train (8,054 images), 99-196 test (8,131). ``cars_annos.mat`` fields
are read by name (``relative_im_path``, ``bbox_x1`` .. ``bbox_y2``, ``class``, ``test``); the seed code
indexed them by position.
"""
from __future__ import annotations

import numpy as np

from metric_retrieval.data.class_folders import half_split
from metric_retrieval.data.common import SplitRecords, check_count, layout_error
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.registry import DATASETS, Reader, SynthLayout
from metric_retrieval.data.synth import write_cars
from metric_retrieval.utils.lazy import lazy_module

scipy_io = lazy_module("scipy.io")  # imported when a .mat file is read or written

LAYOUT = """\
<root>/
├── cars_annos.mat     (struct 'annotations': relative_im_path, bbox_x1..bbox_y2, class, test; 'class_names')
└── car_ims/000001.jpg ... 016185.jpg
or the class-folder layout (DAS): <root>/images/<class>/*.jpg (sorted: first half train, second half test)
"""
FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class")


def read_annotations(path) -> tuple[list[dict], list[str]]:
    """Rows of ``cars_annos.mat`` as dicts (by field name) and the class names (index = class - 1)."""
    try:
        mat = scipy_io.loadmat(str(path), squeeze_me=True)
    except Exception as err:  # noqa: BLE001 - scipy raises several types for damaged files
        raise DatasetError(f"{path}: cannot read the MATLAB file ({type(err).__name__}: {err})") from None
    if "annotations" not in mat:
        raise DatasetError(f"{path}: no 'annotations' struct (found {sorted(k for k in mat if k[0] != '_')})")
    ann = np.atleast_1d(mat["annotations"])
    names = ann.dtype.names or ()
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise DatasetError(f"{path}: 'annotations' lacks field(s) {missing} (has {list(names)})")
    rows = [{f: ann[f][i] for f in names} for i in range(len(ann))]
    class_names = [str(c) for c in np.atleast_1d(mat.get("class_names", np.array([])))]
    return rows, class_names


@DATASETS.register("cars", aliases=("car", "cars196", "CARS196", "stanford_cars"))
class Cars(Reader):
    name = "cars"
    layout = LAYOUT
    synth = SynthLayout(write_cars, images_per_class=3)
    standard_counts = {"train": 8054, "test": 8131}
    has_boxes = True
    num_train_classes = 98
    title = "CARS196"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.mat = self.root / "cars_annos.mat"
        if not self.mat.is_file() and not (self.root / "images").is_dir():
            raise layout_error("missing file", self.mat, LAYOUT)

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        if not self.mat.is_file():
            if boxes:
                raise DatasetError(f"{self.root}: the class-folder layout has no bounding boxes; cropping "
                                   "needs cars_annos.mat\nexpected layout:\n" + LAYOUT)
            records = half_split(self.root / "images", split, LAYOUT)
        else:
            rows, class_names = read_annotations(self.mat)
            paths, labels, box_list = [], [], []
            for row in rows:
                cls = int(row["class"])
                if (cls <= 98) != (split == "train"):
                    continue
                paths.append(str(self.root / str(row["relative_im_path"])))
                labels.append(cls)
                box_list.append(tuple(float(row[f"bbox_{k}"]) for k in ("x1", "y1", "x2", "y2")))
            names = {c: class_names[c - 1] for c in set(labels) if 0 < c <= len(class_names)}
            records = SplitRecords(paths, labels, box_list if boxes else None, names)
        check_count(len(records.paths), self.standard_counts[split], f"CARS196 {split} split", self.root)
        return records
