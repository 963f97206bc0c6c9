"""Revisited Oxford and Paris (Radenović et al., "Revisiting Oxford and Paris", CVPR 2018).

``gnd_<name>.pkl`` holds ``imlist``, ``qimlist`` and per-query ``bbx``/``easy``/``hard``/``junk``
(0-based indices into ``imlist``). Queries are not in the database and are cropped to ``bbx``.
The pickle is trusted input (it is loaded with :mod:`pickle`), as in revisitop.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from metric_retrieval.data.common import check_count, require_dir, require_file
from metric_retrieval.data.errors import DatasetError
from metric_retrieval.data.landmark import LandmarkData
from metric_retrieval.data.registry import DATASETS, BenchmarkInfo, Reader, SynthLayout
from metric_retrieval.data.synth import write_roxford5k, write_rparis6k

LAYOUT = """\
<root>/                       (revisitop: <data>/datasets/roxford5k/)
├── gnd_roxford5k.pkl         (or gnd_rparis6k.pkl: dict imlist, qimlist, gnd[bbx, easy, hard, junk])
└── jpg/all_souls_000000.jpg ...   (database and query images)
"""


# The only globals a revisitop ground-truth pickle needs: numpy arrays (int index lists, float boxes) inside
# plain dicts and lists. Anything else (a function, a class to call) is refused instead of run.
_ARRAY_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _GroundTruthUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`_ARRAY_GLOBALS`, so a crafted file runs no code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}; a ground-truth file holds only lists, dicts "
                                         "and numpy arrays")
        return super().find_class(module, name)


class Revisited(Reader):
    kind = "landmark"
    layout = LAYOUT
    protocol = "landmark"
    splits = ("query", "database")
    standard_db = 0
    standard_queries = 70

    @classmethod
    def benchmark(cls, root=None) -> BenchmarkInfo:
        return BenchmarkInfo(cls.name, "landmark", (), None, ("query", "database"), None)

    def load(self) -> LandmarkData:
        pkl = require_file(self.root / f"gnd_{self.name}.pkl", LAYOUT)
        jpg = require_dir(self.root / "jpg", LAYOUT)
        try:
            with open(pkl, "rb") as f:
                cfg = _GroundTruthUnpickler(f).load()
        except Exception as err:  # noqa: BLE001 - truncated pickles raise several types
            raise DatasetError(f"{pkl}: cannot read the pickle ({type(err).__name__}: {err})") from None
        missing = [k for k in ("imlist", "qimlist", "gnd") if k not in cfg] if isinstance(cfg, dict) else ["dict"]
        if missing:
            raise DatasetError(f"{pkl}: expected a dict with imlist, qimlist, gnd; missing {missing}")
        imlist, qimlist, raw_gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
        if len(raw_gnd) != len(qimlist):
            raise DatasetError(f"{pkl}: {len(qimlist)} query names but {len(raw_gnd)} gnd entries")
        gnd = []
        for q, g in enumerate(raw_gnd):
            keys = [k for k in ("bbx", "easy", "hard", "junk") if k not in g]
            if keys:
                raise DatasetError(f"{pkl}: gnd[{q}] lacks {keys}")
            entry = {k: sorted(int(i) for i in g[k]) for k in ("easy", "hard", "junk")}
            if any(i < 0 or i >= len(imlist) for k in entry for i in entry[k]):
                raise DatasetError(f"{pkl}: gnd[{q}] has an index outside imlist (0..{len(imlist) - 1})")
            entry["bbx"] = [float(v) for v in g["bbx"]]
            gnd.append(entry)
        db_paths = [str(jpg / f"{n}.jpg") for n in imlist]
        query_paths = [str(jpg / f"{n}.jpg") for n in qimlist]
        absent = [p for p in db_paths + query_paths if not Path(p).is_file()]
        if absent:
            listed = "\n".join(f"  {p}" for p in absent[:10])
            raise DatasetError(f"{len(absent)} image(s) named in {pkl} are missing from {jpg}:\n{listed}\n"
                               f"expected layout:\n{LAYOUT.rstrip()}")
        check_count(len(db_paths), self.standard_db, f"{self.name} database", self.root)
        check_count(len(query_paths), self.standard_queries, f"{self.name} query list", self.root)
        boxes = [tuple(g["bbx"]) for g in gnd]
        return LandmarkData(db_paths, query_paths, boxes, gnd, "revisited", self.name)


@DATASETS.register("roxford5k", aliases=("roxford", "roxf", "revisited_oxford"))
class ROxford5k(Revisited):
    name = "roxford5k"
    synth = SynthLayout(write_roxford5k, images_per_class=8)
    standard_db = 4993


@DATASETS.register("rparis6k", aliases=("rparis", "rpar", "revisited_paris"))
class RParis6k(Revisited):
    name = "rparis6k"
    synth = SynthLayout(write_rparis6k, images_per_class=8)
    standard_db = 6322
