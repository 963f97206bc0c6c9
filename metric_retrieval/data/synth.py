"""Miniature benchmarks in the exact on-disk layouts of the real ones (tests, smoke runs, default data).

``write_synthetic(layout, out)`` writes list files, ``cars_annos.mat``, ``gnd_*.pkl``, ground-truth text
files and real JPEGs drawn by :mod:`metric_retrieval.data.synth_render`, so every reader runs on it unchanged.
A ``.synthetic.json`` marker records the parameters; readers skip the standard-count warnings for it.

The layouts are the readers': a reader brings its own (``Reader.synth``, a
:class:`~metric_retrieval.data.registry.SynthLayout` naming one of the ``write_*`` functions here, or a
plug-in's own), and ``layout`` is the registered dataset name.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from metric_retrieval.data.common import SYNTH_MARKER
from metric_retrieval.data.registry import DATASETS, SynthLayout
from metric_retrieval.data.synth_render import NUM_ATTRIBUTE_CLASSES, render
from metric_retrieval.utils.errors import UnknownOptionError, UserError
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.progress import bar_interval

scipy_io = lazy_module("scipy.io")  # imported when a .mat file is read or written

VERSION = 1

_CUB_MODIFIERS = ("Black_footed", "Laysan", "Sooty", "Crested", "Least", "Rhinoceros", "Brewer", "Red_winged",
                  "Yellow_headed", "Painted", "Indigo", "Lazuli", "Gray_crowned", "Spotted", "American",
                  "Bronzed", "Shiny", "Fish", "Chuck_will", "Brandt")
_CUB_BIRDS = ("Albatross", "Auklet", "Blackbird", "Bunting", "Catbird", "Cowbird", "Crow", "Cuckoo", "Finch",
              "Flycatcher")
_CAR_MAKES = ("AM_General", "Acura", "Aston_Martin", "Audi", "BMW", "Bentley", "Bugatti", "Buick", "Cadillac",
              "Chevrolet", "Chrysler", "Dodge", "Ferrari", "Fisker")
_CAR_BODIES = ("Hummer SUV", "RL Sedan", "TL Type-S", "V8 Vantage Convertible", "R8 Coupe", "M3 Coupe",
               "Continental GT")
SOP_SUPER = ("bicycle_final", "cabinet_final", "chair_final", "coffee_maker_final", "fan_final", "kettle_final",
             "lamp_final", "mug_final", "sofa_final", "stapler_final", "table_final", "toaster_final")
INSHOP_CATEGORIES = ("MEN/Denim", "MEN/Jackets_Vests", "MEN/Pants", "MEN/Shirts_Polos", "MEN/Tees_Tanks",
                     "WOMEN/Blouses_Shirts", "WOMEN/Cardigans", "WOMEN/Dresses", "WOMEN/Graphic_Tees",
                     "WOMEN/Jackets_Coats", "WOMEN/Skirts", "WOMEN/Sweaters")
INSHOP_VIEWS = ("1_front", "2_side", "3_back", "4_full", "7_additional")
OXFORD_LANDMARKS = ("all_souls", "ashmolean", "balliol", "bodleian", "christ_church", "cornmarket", "hertford",
                    "keble", "magdalen", "pitt_rivers", "radcliffe_camera")
PARIS_LANDMARKS = ("defense", "eiffel", "invalides", "louvre", "moulinrouge", "museedorsay", "notredame",
                   "pantheon", "pompidou", "sacrecoeur", "triomphe")


class SynthWriter:
    """Renders and saves images with one RNG stream per image (deterministic for a seed); a layout's writer
    draws every image through :meth:`image` and writes its list files under ``out``."""

    def __init__(self, out: Path, size: tuple[int, int], seed: int) -> None:
        self.out, self.size, self.seed, self.count = out, size, seed, 0
        self.bar = tqdm(desc=f"synth {out.name}", unit="img", leave=False, dynamic_ncols=True,
                        mininterval=bar_interval())

    def rng(self) -> np.random.Generator:
        self.count += 1
        return np.random.default_rng([self.seed, self.count])

    def image(self, rel: str, class_index: int, **kw: Any) -> tuple[float, float, float, float]:
        """Draw an image of class ``class_index`` to ``out/rel`` (JPEG, or PNG by suffix); returns its object's
        box ``(x1, y1, x2, y2)`` in pixels."""
        img, box = render(class_index, self.rng(), self.size, **kw)
        self.bar.update(1)
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        img.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return box


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _zero_shot_classes(total: int, num_classes: int | None) -> set[int]:
    """The 1-based class ids written: all ``total``, or the first ``num_classes / 2`` of each zero-shot half
    (the readers split at the real class id, so a smaller copy must keep ids on both sides of it)."""
    if num_classes is None:
        return set(range(1, total + 1))
    if num_classes % 2 or not 2 <= num_classes <= total:
        raise UserError(f"num_classes must be even and between 2 and {total}, got {num_classes}")
    half = num_classes // 2
    return set(range(1, half + 1)) | set(range(total // 2 + 1, total // 2 + half + 1))


def write_cub(w: SynthWriter, ipc: int, folders: bool = False, subdir: bool = True,
              num_classes: int | None = None) -> None:
    names = [f"{m}_{b}" for b in _CUB_BIRDS for m in _CUB_MODIFIERS]
    written = _zero_shot_classes(len(names), num_classes)
    if folders:
        for c, name in enumerate(names, start=1):
            for k in range(ipc if c in written else 0):
                w.image(f"images/{c:03d}.{name}/{name.title()}_{k + 1:04d}_{c * 100 + k}.jpg", c - 1)
        return
    prefix = "CUB_200_2011/" if subdir else ""
    images, labels, split, boxes, classes = [], [], [], [], []
    image_id = 0
    for c, name in enumerate(names, start=1):
        classes.append(f"{c} {c:03d}.{name}")
        for k in range(ipc if c in written else 0):
            image_id += 1
            rel = f"{c:03d}.{name}/{name.title()}_{k + 1:04d}_{image_id}.jpg"
            x1, y1, x2, y2 = w.image(f"{prefix}images/{rel}", c - 1)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(k % 2 == 0)}")
            boxes.append(f"{image_id} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("bounding_boxes.txt", boxes), ("classes.txt", classes)):
        _write_lines(w.out / prefix / name, lines)


def cars_class_names() -> list[str]:
    return [f"{make.replace('_', ' ')} {body} {year}" for make in _CAR_MAKES for body in _CAR_BODIES
            for year in (2009, 2012)]


def write_cars(w: SynthWriter, ipc: int, folders: bool = False, num_classes: int | None = None) -> None:
    names = cars_class_names()
    written = _zero_shot_classes(len(names), num_classes)
    rows = []
    for c, name in enumerate(names, start=1):
        for k in range(ipc if c in written else 0):
            if folders:
                w.image(f"images/{name.replace(' ', '_')}/{c * 100 + k:06d}.jpg", c - 1)
                continue
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            box = w.image(rel, c - 1)
            rows.append((rel, *box, c, k % 2))
    if not folders:
        write_cars_annos(w.out / "cars_annos.mat", rows, names)


def write_cars_annos(path: Path, rows: list[tuple], class_names: list[str]) -> None:
    """``cars_annos.mat`` as in the release: a 1xN struct ``annotations`` and a 1x196 cell ``class_names``."""
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (rel, x1, y1, x2, y2, cls, test) in enumerate(rows):
        ann[0, i] = (np.array([rel]), *(np.array([[int(round(v))]], dtype=np.uint16) for v in (x1, y1, x2, y2)),
                     np.array([[cls]], dtype=np.uint8), np.array([[test]], dtype=np.uint8))
    names = np.empty((1, len(class_names)), dtype=object)
    for i, n in enumerate(class_names):
        names[0, i] = np.array([n])
    scipy_io.savemat(str(path), {"annotations": ann, "class_names": names})


def write_sop(w: SynthWriter, ipc: int, num_classes: int = 300, info_files: bool = False) -> None:
    image_base = "images/" if info_files else ""
    list_dir = w.out / "Info_Files" if info_files else w.out
    image_id = 0
    for split, classes in (("train", range(1, num_classes // 2 + 1)),
                           ("test", range(num_classes // 2 + 1, num_classes + 1))):
        lines = ["image_id class_id super_class_id path"]
        for c in classes:
            sup = (c * 7) % len(SOP_SUPER)
            item = 111085122871 + 7919 * c
            for k in range(ipc):
                image_id += 1
                rel = f"{SOP_SUPER[sup]}/{item}_{k}.JPG"
                w.image(image_base + rel, c - 1)
                lines.append(f"{image_id} {c} {sup + 1} {rel}")
        _write_lines(list_dir / f"Ebay_{split}.txt", lines)


def write_inshop(w: SynthWriter, ipc: int, num_items: int = 60, gallery_only_items: int = 0) -> None:
    rows = []
    ipc = max(ipc, 2)
    for item in range(num_items + gallery_only_items):
        # gallery-only distractor items get ids between the others, as a per-split numbering would trip on
        item_id = f"id_{3 * item + 1:08d}" if item < num_items else f"id_{3 * (item - num_items) + 2:08d}"
        category = INSHOP_CATEGORIES[item % len(INSHOP_CATEGORIES)]
        test = item % 2 == 1 or item >= num_items
        for k in range(ipc):
            rel = f"img/{category}/{item_id}/{k // len(INSHOP_VIEWS) + 1:02d}_{INSHOP_VIEWS[k % len(INSHOP_VIEWS)]}.jpg"
            w.image(rel, item)
            if not test:
                status = "train"
            elif item >= num_items:
                status = "gallery"
            else:
                status = "query" if k < ipc // 2 else "gallery"
            rows.append(f"{rel} {item_id} {status}")
    _write_lines(w.out / "Eval" / "list_eval_partition.txt",
                 [str(len(rows)), "image_name item_id evaluation_status"] + rows)


def write_folder(w: SynthWriter, ipc: int, num_classes: int = 20, query_gallery: bool = False) -> None:
    for c in range(num_classes):
        train = c < num_classes // 2
        for k in range(ipc):
            ext = "png" if k % 3 == 2 else "jpg"
            if train:
                split = "train"
            elif query_gallery:
                split = "query" if k < max(1, ipc // 2) else "gallery"
            else:
                split = "test"
            w.image(f"{split}/class_{c:03d}/img_{k:04d}.{ext}", c)


def _landmark_views(w: SynthWriter, ipc: int, names: tuple[str, ...], prefix: str, distractor: str,
                    num_distractors: int, skip: frozenset[str] = frozenset()):
    """Render each landmark's images (``(name, role, box)``) and the distractors; returns both lists."""
    counters: dict[str, int] = {}

    def new_name(stem: str) -> str:
        while True:
            n = counters.get(stem, 0)
            counters[stem] = n + 1
            name = f"{prefix}{stem}_{n:06d}"
            if name not in skip:
                return name

    # per landmark: good/ok views (ok = smaller and partly hidden: revisitop's "hard"), the last one junk
    style = {"good": {"scale": (0.3, 0.42)}, "ok": {"scale": (0.2, 0.3), "occlusion": 0.3},
             "junk": {"scale": (0.3, 0.42), "occlusion": 0.7}}
    per_landmark = []
    for j, stem in enumerate(names):
        views = []
        for k in range(ipc):
            role = "junk" if k == ipc - 1 else ("ok" if k % 3 == 2 else "good")
            name = new_name(stem)
            box = w.image(f"jpg/{name}.jpg", 11 + 29 * j, **style[role])
            views.append((name, role, box))
        per_landmark.append(views)
    landmark_classes = {11 + 29 * j for j in range(len(names))}
    others = [c for c in range(NUM_ATTRIBUTE_CLASSES) if c not in landmark_classes]  # never look like a landmark
    distractors = []
    for d in range(num_distractors):
        name = new_name(distractor)
        w.image(f"jpg/{name}.jpg", others[(7 * d) % len(others)])
        distractors.append(name)
    return per_landmark, distractors


def _old_landmarks(w: SynthWriter, ipc: int, paris: bool, num_distractors: int = 40,
                   corrupt: Collection[str] = ()) -> None:
    names = PARIS_LANDMARKS if paris else OXFORD_LANDMARKS
    prefix = "paris_" if paris else ""
    gt_dir = w.out / ("paris_120310" if paris else "gt_files_170407")
    corrupt = sorted(corrupt)[:2]  # Paris: paris_louvre_000136, paris_louvre_000146
    per_landmark, _ = _landmark_views(w, max(ipc, 6), names, prefix, "general" if paris else "oxford",
                                      num_distractors, frozenset(corrupt))
    for name in corrupt:  # the release ships these truncated: readers must leave them out
        (w.out / "jpg").mkdir(parents=True, exist_ok=True)
        data = (w.out / "jpg" / f"{per_landmark[0][0][0]}.jpg").read_bytes()
        (w.out / "jpg" / f"{name}.jpg").write_bytes(data[: len(data) // 3])
    for j, stem in enumerate(names):
        views = per_landmark[j]
        good = [n for n, r, _ in views if r == "good"]
        ok = [n for n, r, _ in views if r == "ok"]
        junk = [n for n, r, _ in views if r == "junk"] + (corrupt if stem == "louvre" else [])
        queries = [v for v in views if v[1] != "junk"][:5]
        for q, (qname, _, (x1, y1, x2, y2)) in enumerate(queries, start=1):
            base = gt_dir / f"{stem}_{q}"
            _write_lines(Path(f"{base}_good.txt"), good + good[:1])  # the real lists repeat names
            _write_lines(Path(f"{base}_ok.txt"), ok)
            _write_lines(Path(f"{base}_junk.txt"), junk)
            token = qname if paris else f"oxc1_{qname}"
            coords = f"{x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}" if paris else f"{x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}"
            _write_lines(Path(f"{base}_query.txt"), [f"{token} {coords}"])


def write_oxford5k(w: SynthWriter, ipc: int, num_distractors: int = 40) -> None:
    _old_landmarks(w, ipc, paris=False, num_distractors=num_distractors)


def write_paris6k(w: SynthWriter, ipc: int, num_distractors: int = 40, corrupt: Collection[str] = ()) -> None:
    """``corrupt``: the release's known-truncated images (the reader's list); two of them are written truncated."""
    _old_landmarks(w, ipc, paris=True, num_distractors=num_distractors, corrupt=corrupt)


def _revisited(w: SynthWriter, ipc: int, paris: bool, queries_per_landmark: int = 2, num_distractors: int = 40,
               ) -> None:
    names = PARIS_LANDMARKS if paris else OXFORD_LANDMARKS
    prefix = "paris_" if paris else ""
    per_landmark, distractors = _landmark_views(w, max(ipc, 4) + queries_per_landmark, names, prefix,
                                                "general" if paris else "oxford", num_distractors)
    imlist: list[str] = []
    entries = []
    for views in per_landmark:
        queries = [v for v in views if v[1] != "junk"][:queries_per_landmark]
        db = [v for v in views if v not in queries]
        start = len(imlist)
        imlist += [n for n, _, _ in db]
        roles = {}
        for i, (_, role, _) in enumerate(db):
            roles.setdefault({"good": "easy", "ok": "hard", "junk": "junk"}[role], []).append(start + i)
        entries.append((queries, roles))
    imlist += distractors
    order = np.random.default_rng(w.seed).permutation(len(imlist))  # revisitop's imlist is not sorted
    new_index = {int(old): new for new, old in enumerate(order)}
    imlist = [imlist[int(o)] for o in order]
    qimlist, gnd = [], []
    for queries, roles in entries:
        for qname, _, box in queries:
            qimlist.append(qname)
            gnd.append({"bbx": np.array(box, dtype=np.float64),
                        **{k: np.array(sorted(new_index[i] for i in roles.get(k, [])), dtype=np.int64)
                           for k in ("easy", "hard", "junk")}})
    name = "rparis6k" if paris else "roxford5k"
    with open(w.out / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)


def write_roxford5k(w: SynthWriter, ipc: int, **kw: Any) -> None:
    _revisited(w, ipc, paris=False, **kw)


def write_rparis6k(w: SynthWriter, ipc: int, **kw: Any) -> None:
    _revisited(w, ipc, paris=True, **kw)


def synth_layouts() -> dict[str, SynthLayout]:
    """``{dataset name: its reader's synthetic layout}`` over the registered readers that bring one."""
    return {name: reader.synth for name, reader in DATASETS.items() if reader.synth is not None}


def synth_layout(layout: str) -> tuple[str, SynthLayout]:
    """The canonical dataset name and synthetic layout of ``layout`` (a registered dataset name or alias)."""
    layouts = synth_layouts()
    name = DATASETS.canonical(layout) if layout in DATASETS else layout
    if name not in layouts:
        raise UnknownOptionError(f"unknown synthetic layout {layout!r}; choose one of: {', '.join(sorted(layouts))}")
    return name, layouts[name]


def _params(layout: str, image_size, images_per_class, seed, kw) -> dict[str, Any]:
    name, spec = synth_layout(layout)
    return {"version": VERSION, "layout": name, "image_size": [int(v) for v in image_size],
            "images_per_class": int(images_per_class or spec.images_per_class), "seed": int(seed),
            "options": {k: kw[k] for k in sorted(kw)}}


def write_synthetic(layout: str, out: str | Path, image_size: tuple[int, int] = (64, 64),
                    images_per_class: int | None = None, seed: int = 0, **kw: Any) -> Path:
    """Write a miniature ``layout`` dataset under ``out``; returns the dataset root to pass to the reader.
    ``layout`` names a registered dataset whose reader brings a synthetic layout (:func:`synth_layouts`: ``cub``,
    ``cars``, ``sop``, ``inshop``, ``folder``, ``oxford5k``, ``paris6k``, ``roxford5k``, ``rparis6k``, and any
    plug-in's).

    Args:
        image_size: (W, H) of every image (e.g. (500, 375) for CUB-like benchmarks).
        images_per_class: images per class / item / landmark (defaults per layout: cub/cars/sop 3, inshop/folder 4,
            landmarks 8).
        seed: images are a pure function of (seed, image order).
        **kw: layout options: cub ``folders``, ``subdir``, ``num_classes``; cars ``folders``, ``num_classes``
            (cub/cars: half from each side of the zero-shot split); sop ``num_classes``, ``info_files``;
            inshop ``num_items``, ``gallery_only_items``; folder ``num_classes``, ``query_gallery``;
            landmarks ``num_distractors``; revisited ``queries_per_landmark``.
    """
    name, spec = synth_layout(layout)
    if images_per_class is not None and images_per_class < 1:
        raise UserError(f"--images_per_class must be a positive integer, got {images_per_class}")
    if min(image_size) < 1:
        raise UserError(f"--image_size must be two positive sizes W H, got {' '.join(map(str, image_size))}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    params = _params(layout, image_size, images_per_class, seed, kw)
    writer = SynthWriter(out, (int(image_size[0]), int(image_size[1])), int(seed))
    try:
        spec.write(writer, params["images_per_class"], **kw)
    except TypeError as err:
        raise TypeError(f"synthetic layout {name!r}: {err}") from None
    finally:
        writer.bar.close()
    (out / SYNTH_MARKER).write_text(json.dumps(params, indent=1, sort_keys=True), encoding="utf-8")
    return out


def ensure_synthetic(layout: str, root: str | Path, image_size: tuple[int, int] = (64, 64),
                     images_per_class: int | None = None, seed: int = 0, **kw: Any) -> Path:
    """Make ``root`` hold the synthetic ``layout`` with these parameters; a no-op when it already does.

    A root written by an earlier call with other parameters is regenerated; a non-empty folder without
    the marker is never touched (:class:`~metric_retrieval.utils.errors.UserError`). Safe when several processes race.
    """
    root = Path(root)
    params = _params(layout, image_size, images_per_class, seed, kw)
    marker = root / SYNTH_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(params)):
                return root
        except ValueError:
            pass
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty and holds no synthetic dataset ({SYNTH_MARKER}); "
                        "refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    write_synthetic(layout, tmp, image_size, images_per_class, seed, **kw)
    try:
        if root.exists():
            root.rmdir()
        os.rename(tmp, root)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return root


DEFAULT_DATASET: dict[str, Any] = {"layout": "folder", "image_size": (64, 64), "images_per_class": 16, "seed": 0,
                                   "num_classes": 24}


def default_dataset_root() -> Path:
    """``.synth/default_folder`` below the working directory, beside the ``runs/`` a training run writes (in a
    checkout, the git-ignored ``<repository>/.synth``; never inside an installed package)."""
    return Path.cwd() / ".synth" / "default_folder"


def ensure_default_dataset(root: str | Path | None = None) -> Path:
    """The built-in training data used when no ``--data_path`` is given: :data:`DEFAULT_DATASET`, the generic
    ``folder`` layout (12 train + 12 test classes x 16 images of 64x64), generated once into ``.synth/``."""
    params = dict(DEFAULT_DATASET)
    layout = params.pop("layout")
    return ensure_synthetic(layout, root or default_dataset_root(), **params)


__all__ = ["DEFAULT_DATASET", "SynthWriter", "ensure_default_dataset", "ensure_synthetic", "synth_layout",
           "synth_layouts", "write_synthetic"]
