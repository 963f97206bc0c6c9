"""Stanford Online Products (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding", CVPR 2016): ``Ebay_train.txt`` 59,551 images / 11,318 classes, ``Ebay_test.txt`` 60,502 / 11,316.
"""
from __future__ import annotations

from metric_retrieval.data.common import (
    SplitRecords,
    check_count,
    first_existing,
    layout_error,
    parse_number,
    read_rows,
)
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.registry import DATASETS, Reader, SynthLayout
from metric_retrieval.data.synth import write_sop

LAYOUT = """\
<root>/                              (Stanford_Online_Products/ or DAS's online_products/)
├── Ebay_train.txt  Ebay_test.txt    (or Info_Files/Ebay_*.txt; header, then: image_id class_id super_class_id path)
└── bicycle_final/111085122871_0.JPG ...   (or images/bicycle_final/...)
"""
FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}


@DATASETS.register("sop", aliases=("online_products", "stanford_online_products", "SOP"))
class SOP(Reader):
    name = "sop"
    layout = LAYOUT
    synth = SynthLayout(write_sop, images_per_class=3)
    standard_counts = {"train": 59551, "test": 60502}
    recall_ks = (1, 10, 100, 1000)
    num_train_classes = 11318
    title = "SOP"

    def list_file(self, split: str):
        name = FILES[split]
        found = first_existing([self.root / name, self.root / "Info_Files" / name])
        if found is None:
            raise layout_error("missing file", self.root / name, LAYOUT)
        return found

    def read(self, split: str, boxes: bool = False) -> SplitRecords:
        if boxes:
            raise DatasetError("SOP has no bounding boxes: crop is only for cub and cars")
        path = self.list_file(split)
        rows = list(read_rows(path, 4, "<image_id> <class_id> <super_class_id> <path>", skip=1))
        if not rows:
            raise DatasetError(f"{path} lists no images (empty or header only)")
        base = self._image_base(rows[0][1][3], path)
        paths = [str(base / f[3]) for _, f in rows]
        labels = [parse_number(f[1], path, n) for n, f in rows]
        check_count(len(paths), self.standard_counts[split], f"SOP {split} split", self.root)
        return SplitRecords(paths, labels)

    def _image_base(self, first: str, list_path):
        base = first_existing([self.root / first, self.root / "images" / first])
        if base is None:
            raise layout_error(f"image listed in {list_path} not found (looked in <root> and <root>/images)",
                               self.root / first, LAYOUT)
        return base.parents[len(first.replace("\\", "/").split("/")) - 1]
