"""CUB-200-2011 (Wah et al., Caltech-UCSD Birds, 2011), zero-shot retrieval split.

Classes 1-100 train (5,864 images), 101-200 test (5,924); the official ``train_test_split.txt`` is a
classification split and is not used. Boxes: ``bounding_boxes.txt`` x, y, w, h → (x, y, x + w, y + h).
"""
from __future__ import annotations

from pathlib import Path

from metric_retrieval.data.class_folders import half_split
from metric_retrieval.data.common import (
    SplitRecords,
    check_count,
    layout_error,
    parse_number,
    read_rows,
    require_file,
)
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.registry import DATASETS, Reader, SynthLayout
from metric_retrieval.data.synth import write_cub

LAYOUT = """\
<root>/CUB_200_2011/                (or <root> = the CUB_200_2011 folder itself)
├── images.txt  image_class_labels.txt  bounding_boxes.txt  classes.txt  train_test_split.txt
└── images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
or the class-folder layout (DAS): <root>/images/<class>/*.jpg (sorted: first half train, second half test)
"""


@DATASETS.register("cub", aliases=("cub200", "CUB_200_2011", "cub_200_2011", "CUB"))
class CUB(Reader):
    name = "cub"
    layout = LAYOUT
    synth = SynthLayout(write_cub, images_per_class=3)
    standard_counts = {"train": 5864, "test": 5924}
    has_boxes = True
    num_train_classes = 100
    title = "CUB200"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.base = next((b for b in (self.root / "CUB_200_2011", self.root) if (b / "images.txt").is_file()),
                         None)
        if self.base is None and not (self.root / "images").is_dir():
            raise layout_error("missing file", self.root / "CUB_200_2011" / "images.txt", LAYOUT)

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        if self.base is None:  # class-folder layout
            if boxes:
                raise DatasetError(f"{self.root}: the class-folder layout has no bounding boxes; cropping "
                                   "needs the official CUB_200_2011 list files\nexpected layout:\n" + LAYOUT)
            records = half_split(self.root / "images", split, LAYOUT)
        else:
            records = self._read_lists(split, boxes)
        check_count(len(records.paths), self.standard_counts[split], f"CUB {split} split", self.root)
        return records

    def _read_lists(self, split: str, boxes: bool) -> SplitRecords:
        base = self.base
        images_txt = base / "images.txt"
        labels_txt = require_file(base / "image_class_labels.txt", LAYOUT)
        images = {parse_number(f[0], images_txt, n): f[1]
                  for n, f in read_rows(images_txt, 2, "<image_id> <relative path>")}
        classes = {parse_number(f[0], labels_txt, n): parse_number(f[1], labels_txt, n)
                   for n, f in read_rows(labels_txt, 2, "<image_id> <class_id>")}
        names: dict[int, str] = {}
        if (base / "classes.txt").is_file():
            names = {parse_number(f[0], base / "classes.txt", n): f[1]
                     for n, f in read_rows(base / "classes.txt", 2, "<class_id> <name>")}
        bbox: dict[int, tuple] = {}
        if boxes:
            bb_txt = require_file(base / "bounding_boxes.txt", LAYOUT)
            for n, f in read_rows(bb_txt, 5, "<image_id> <x> <y> <width> <height>"):
                x, y, w, h = (parse_number(v, bb_txt, n, float) for v in f[1:5])
                bbox[parse_number(f[0], bb_txt, n)] = (x, y, x + w, y + h)
        paths, labels, box_list = [], [], []
        for image_id in sorted(images):
            if image_id not in classes:
                raise DatasetError(f"{labels_txt} has no line for image id {image_id} "
                                   f"({images[image_id]} in {images_txt}): truncated list file?")
            cls = classes[image_id]
            if (cls <= 100) != (split == "train"):
                continue
            if boxes and image_id not in bbox:
                raise DatasetError(f"{base / 'bounding_boxes.txt'} has no line for image id {image_id}: "
                                   "truncated list file?")
            paths.append(str(base / "images" / images[image_id]))
            labels.append(cls)
            if boxes:
                box_list.append(bbox[image_id])
        class_names = {c: names.get(c, Path(images.get(i, '?/')).parent.name) for i, c in classes.items()}
        return SplitRecords(paths, labels, box_list if boxes else None, class_names)
