"""Oxford5k (Philbin et al., CVPR 2007) and Paris6k (Philbin et al., CVPR 2008), original protocol.

55 queries (11 landmarks x 5) from ``<landmark>_<k>_{good,ok,junk,query}.txt``; positives = good ∪ ok,
junk ignored, everything else negative; query images stay in the database.
Paris: the 20 corrupted images of the release are left out of the database, as DIR, RA and
gnd_paris6k.mat do.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

from metric_retrieval.data.common import (
    check_count,
    is_synthetic,
    layout_error,
    parse_number,
    read_rows,
    require_dir,
)
from metric_retrieval.data.errors import DatasetError, DatasetWarning
from metric_retrieval.data.landmark import LandmarkData
from metric_retrieval.data.registry import DATASETS, BenchmarkInfo, Reader, SynthLayout
from metric_retrieval.data.synth import write_oxford5k, write_paris6k

LAYOUT = """\
<root>/
├── jpg/all_souls_000000.jpg ...            (all database images, flat; Paris: flatten paris/<landmark>/)
└── gt_files_170407/ (or lab/, gt/, paris_120310/, or <root> itself)
    ├── all_souls_1_good.txt  all_souls_1_ok.txt  all_souls_1_junk.txt
    └── all_souls_1_query.txt  ("oxc1_all_souls_000013 136.5 34.1 648.5 955.7")
"""
GT_DIRS = (".", "lab", "gt", "gt_files_170407", "paris_120310")
PARIS_CORRUPT = frozenset("""
paris_louvre_000136 paris_louvre_000146 paris_moulinrouge_000422 paris_museedorsay_001059
paris_notredame_000188 paris_pantheon_000284 paris_pantheon_000960 paris_pantheon_000974
paris_pompidou_000195 paris_pompidou_000196 paris_pompidou_000201 paris_pompidou_000467
paris_pompidou_000640 paris_sacrecoeur_000299 paris_sacrecoeur_000330 paris_sacrecoeur_000353
paris_triomphe_000662 paris_triomphe_000833 paris_triomphe_000863 paris_triomphe_000867
""".split())
NUM_QUERIES = 55


def find_gt_dir(root: Path) -> Path:
    for sub in GT_DIRS:
        d = root / sub
        if d.is_dir() and any(d.glob("*_query.txt")):
            return d
    raise layout_error("no ground-truth *_query.txt files in <root> or its lab/, gt/, gt_files_170407/, "
                       "paris_120310/ folders", root, LAYOUT)


def read_names(path: Path) -> set[str]:
    if not path.is_file():
        raise layout_error("missing ground-truth file", path, LAYOUT)
    with open(path, encoding="utf-8") as f:
        return {line.strip().removesuffix(".jpg") for line in f if line.strip()}


def read_query(path: Path) -> tuple[str, tuple[float, float, float, float]]:
    rows = list(read_rows(path, 5, "<image> <x1> <y1> <x2> <y2>"))
    if len(rows) != 1:
        raise DatasetError(f"{path}: expected one line '<image> <x1> <y1> <x2> <y2>', found {len(rows)}")
    n, f = rows[0]
    box = tuple(parse_number(v, path, n, float) for v in f[1:5])
    return f[0].removeprefix("oxc1_"), box  # type: ignore[return-value]


class OxfordParis(Reader):
    kind = "landmark"
    layout = LAYOUT
    protocol = "landmark"
    splits = ("query", "database")
    standard_db = 0
    corrupt: frozenset[str] = frozenset()

    @classmethod
    def benchmark(cls, root=None) -> BenchmarkInfo:
        return BenchmarkInfo(cls.name, "landmark", (), None, ("query", "database"), None)

    def load(self) -> LandmarkData:
        jpg = require_dir(self.root / "jpg", LAYOUT)
        gt_dir = find_gt_dir(self.root)
        names = sorted(p.stem for p in jpg.iterdir() if p.suffix.lower() == ".jpg")
        excluded = [n for n in names if n in self.corrupt]
        if excluded:
            warnings.warn(f"excluded {len(excluded)} known-corrupt {self.name} image(s) from the database "
                          f"(as the reference ground truth does), e.g. {excluded[0]}", DatasetWarning,
                          stacklevel=2)
            names = [n for n in names if n not in self.corrupt]
        index = {n: i for i, n in enumerate(names)}
        query_files = sorted(gt_dir.glob("*_query.txt"))
        query_paths, boxes, gnd, unknown = [], [], [], set()
        for qf in query_files:
            prefix = str(qf)[: -len("_query.txt")]
            qname, box = read_query(qf)
            positives = read_names(Path(prefix + "_good.txt")) | read_names(Path(prefix + "_ok.txt"))
            junk = read_names(Path(prefix + "_junk.txt"))
            for group in (positives, junk):
                unknown |= {n for n in group if n not in index and n not in self.corrupt}
            qpath = jpg / f"{qname}.jpg"
            if not qpath.is_file():
                raise layout_error(f"query image of {qf.name} not found", qpath, LAYOUT)
            query_paths.append(str(qpath))
            boxes.append(box)
            gnd.append({"ok": sorted(index[n] for n in positives if n in index),
                        "junk": sorted(index[n] for n in junk if n in index),
                        "bbx": list(box)})
        if unknown:
            warnings.warn(f"{len(unknown)} image name(s) in the ground truth of {gt_dir} are not in {jpg} "
                          f"(e.g. {sorted(unknown)[0]}); they are ignored", DatasetWarning, stacklevel=2)
        check_count(len(names), self.standard_db, f"{self.name} database", self.root)
        if len(query_files) != NUM_QUERIES and not is_synthetic(self.root):
            warnings.warn(f"found {len(query_files)} queries in {gt_dir}, the standard protocol has "
                          f"{NUM_QUERIES}: are the ground-truth files complete?", DatasetWarning, stacklevel=2)
        return LandmarkData([str(jpg / f"{n}.jpg") for n in names], query_paths, boxes, gnd, "old", self.name)


@DATASETS.register("oxford5k", aliases=("oxford", "oxf5k", "oxford5"))
class Oxford5k(OxfordParis):
    name = "oxford5k"
    synth = SynthLayout(write_oxford5k, images_per_class=8)
    standard_db = 5063


@DATASETS.register("paris6k", aliases=("paris", "par6k", "paris6"))
class Paris6k(OxfordParis):
    name = "paris6k"
    synth = SynthLayout(functools.partial(write_paris6k, corrupt=PARIS_CORRUPT), images_per_class=8)
    standard_db = 6392
    corrupt = PARIS_CORRUPT
