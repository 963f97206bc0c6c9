"""DeepFashion In-shop Clothes Retrieval (Liu et al., CVPR 2016): train 25,882 images / 3,997 items,
query 14,218 and gallery 12,612 images of 3,985 other items.

Query and gallery labels come from ONE raw item-id map, so an item has the same label in both. The
seed code (CGD/CLF ``data_utils.py``) numbered each split separately, which is only right while both
splits hold exactly the same item set.
"""
from __future__ import annotations

import warnings

from metric_retrieval.data.common import SplitRecords, check_count, first_existing, layout_error, read_rows
from metric_retrieval.data.errors import DatasetError, DatasetWarning
from metric_retrieval.data.registry import DATASETS, Reader, SynthLayout
from metric_retrieval.data.synth import write_inshop

LAYOUT = """\
<root>/
├── Eval/list_eval_partition.txt   (line 1: count, line 2: header, then: img/<path> <item_id> train|query|gallery)
└── img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...
"""


@DATASETS.register("inshop", aliases=("isc", "in-shop", "in_shop", "InShop", "deepfashion_inshop"))
class InShop(Reader):
    name = "inshop"
    layout = LAYOUT
    synth = SynthLayout(write_inshop, images_per_class=4)
    splits = ("train", "query", "gallery")
    standard_counts = {"train": 25882, "query": 14218, "gallery": 12612}
    protocol = "query_gallery"
    recall_ks = (1, 10, 20, 30, 40, 50)
    num_train_classes = 3997
    title = "In-shop"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.list_path = self.root / "Eval" / "list_eval_partition.txt"
        if not self.list_path.is_file():
            raise layout_error("missing file", self.list_path, LAYOUT)
        self._rows: list[tuple[int, list[str]]] | None = None

    def rows(self) -> list[tuple[int, list[str]]]:
        if self._rows is None:
            path = self.list_path
            with open(path, encoding="utf-8") as f:
                first = f.readline().strip()
            rows = list(read_rows(path, 3, "<image path> <item_id> <evaluation_status>", skip=2))
            for n, f in rows:
                if f[2] not in self.standard_counts:
                    raise DatasetError(f"{path} line {n}: status {f[2]!r} is not train, query or gallery")
            if first.isdigit() and int(first) != len(rows):
                warnings.warn(f"{path} says {int(first):,} images on line 1 but lists {len(rows):,}",
                              DatasetWarning, stacklevel=2)
            self._rows = rows
        return self._rows

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        if boxes:
            raise DatasetError("In-shop has no bounding boxes here: crop is only for cub and cars")
        picked = [f for _, f in self.rows() if f[2] == split]
        base = self.root
        if picked:  # the release's Img/img.zip is sometimes extracted one level deeper
            base = first_existing([b for b in (self.root, self.root / "Img") if (b / picked[0][0]).is_file()])
            if base is None:
                raise layout_error(f"image listed in {self.list_path} not found", self.root / picked[0][0], LAYOUT)
        paths = [str(base / f[0]) for f in picked]
        labels = [f[1] for f in picked]
        check_count(len(paths), self.standard_counts[split], f"In-shop {split} split", self.root)
        return SplitRecords(paths, labels)
