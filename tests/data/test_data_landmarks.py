"""Oxford/Paris readers on the real ground truth (gtolias/rmac .mat → official text files) and on synth data."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from metric_retrieval import data
from metric_retrieval.data.oxford_paris import PARIS_CORRUPT

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures"
OXFORD = ("all_souls", "ashmolean", "balliol", "bodleian", "christ_church", "cornmarket", "hertford", "keble",
          "magdalen", "pitt_rivers", "radcliffe_camera")
PARIS = ("defense", "eiffel", "invalides", "louvre", "moulinrouge", "museedorsay", "notredame", "pantheon",
         "pompidou", "sacrecoeur", "triomphe")


def _real_gt_root(tmp: Path, which: str) -> tuple[Path, list[str], list[dict]]:
    """Official-format GT text files + empty jpgs from the real gnd_<which>.mat; returns (root, imlist, gnd)."""
    mat = scipy.io.loadmat(str(REFERENCE / f"gnd_{which}.mat"))
    imlist = [str(x[0][0]) for x in mat["imlist"]]
    qidx = [int(q) - 1 for q in mat["qidx"].ravel()]
    gnd = [{k: mat["gnd"][i, 0][k] for k in ("ok", "junk", "bbx")} for i in range(len(qidx))]
    paris = which == "paris6k"
    root = tmp / which
    (root / "jpg").mkdir(parents=True)
    for name in imlist + (sorted(PARIS_CORRUPT) if paris else []):
        (root / "jpg" / f"{name}.jpg").touch()
    gt = root / ("paris_120310" if paris else "gt_files_170407")
    gt.mkdir()
    for i, g in enumerate(gnd):
        prefix = gt / f"{(PARIS if paris else OXFORD)[i // 5]}_{i % 5 + 1}"
        ok = [imlist[j - 1] for j in g["ok"].ravel()]
        junk = [imlist[j - 1] for j in g["junk"].ravel()]
        half = len(ok) // 2
        Path(f"{prefix}_good.txt").write_text("\n".join(ok[:half] + ok[:2]) + "\n")  # duplicates, as released
        Path(f"{prefix}_ok.txt").write_text("\n".join(ok[half:]) + "\n")
        extra = ["paris_louvre_000136"] if paris else []  # corrupt names do occur in the lists
        Path(f"{prefix}_junk.txt").write_text("\n".join(junk + extra) + "\n")
        box = " ".join(f"{float(v):g}" for v in g["bbx"].ravel())
        token = imlist[qidx[i]] if paris else f"oxc1_{imlist[qidx[i]]}"
        Path(f"{prefix}_query.txt").write_text(f"{token} {box}\n")
    return root, imlist, gnd


@pytest.mark.parametrize("which, first, counts, box, totals", [
    ("oxford5k", "all_souls_000013", (78, 33), [136.5, 34.1, 648.5, 955.7], (2840, 1495)),
    ("paris6k", "paris_defense_000605", (117, 116), [130, 17, 843, 732], (8955, 8245)),
])
def test_real_ground_truth(fast_tmp, which, first, counts, box, totals):
    root, imlist, gnd = _real_gt_root(fast_tmp, which)
    if which == "paris6k":
        with pytest.warns(data.DatasetWarning, match="excluded 20 known-corrupt paris6k image"):
            lm = data.load_landmark_dataset("paris", root)
    else:
        lm = data.load_landmark_dataset("oxford5k", root)
    assert lm.protocol == "old" and len(lm.query_paths) == 55 and len(lm.gnd) == 55
    assert len(lm.db_paths) == len(imlist) and lm.db_paths == sorted(lm.db_paths)
    assert lm.query_names[0] == first
    assert (len(lm.gnd[0]["ok"]), len(lm.gnd[0]["junk"])) == counts
    assert lm.gnd[0]["bbx"] == pytest.approx(box) and lm.query_boxes[0] == pytest.approx(box)
    assert (sum(len(g["ok"]) for g in lm.gnd), sum(len(g["junk"]) for g in lm.gnd)) == totals
    names = [Path(p).stem for p in lm.db_paths]
    for q, g in enumerate(lm.gnd):  # same sets as the .mat, mapped by name (its imlist is not sorted)
        assert {names[i] for i in g["ok"]} == {imlist[j - 1] for j in gnd[q]["ok"].ravel()}
        assert {names[i] for i in g["junk"]} == {imlist[j - 1] for j in gnd[q]["junk"].ravel()}
        assert g["ok"] == sorted(g["ok"]) and names.index(lm.query_names[q]) in g["ok"]  # query stays in the db


def test_synthetic_oxford_and_paris(synth_root):
    ox = data.load_landmark_dataset("oxford5k", synth_root("oxford5k"))
    assert len(ox.query_paths) == 55 and len(ox.db_paths) == 11 * 8 + 40
    assert Path(ox.query_paths[0]).stem.startswith("all_souls_")
    line = (synth_root("oxford5k") / "gt_files_170407" / "all_souls_1_query.txt").read_text()
    assert line.startswith("oxc1_all_souls_")
    for g in ox.gnd:
        assert g["ok"] and g["junk"] and not set(g["ok"]) & set(g["junk"])
    root = synth_root("paris6k")
    with pytest.warns(data.DatasetWarning, match=r"excluded 2 known-corrupt") as caught:
        pa = data.load_landmark_dataset("paris6k", root)
    assert len([w for w in caught if "corrupt" in str(w.message)]) == 1  # ONE warning
    assert not {Path(p).stem for p in pa.db_paths} & PARIS_CORRUPT
    assert len(pa.db_paths) == 11 * 8 + 40


def test_landmark_ground_truth_errors(synth_copy, synth_root):
    root = synth_copy("oxford5k")
    os.remove(root / "gt_files_170407" / "keble_3_junk.txt")
    with pytest.raises(data.DatasetError, match=r"missing ground-truth file: .*keble_3_junk.txt"):
        data.load_landmark_dataset("oxford5k", root)
    (root / "gt_files_170407" / "keble_3_junk.txt").write_text("")
    (root / "gt_files_170407" / "keble_2_query.txt").write_text("oxc1_keble_000001 1 2\n")
    with pytest.raises(data.DatasetError, match=r"keble_2_query.txt line 1: expected '<image> <x1> <y1> <x2> <y2>'"):
        data.load_landmark_dataset("oxford5k", root)
    with pytest.raises(data.DatasetError, match=r"missing folder: .*/jpg\nexpected layout:\n<root>/\n├── jpg/"):
        data.load_landmark_dataset("oxford5k", synth_root("cub"))
    for sub in ("gt_files_170407",):
        for f in (root / sub).iterdir():
            f.unlink()
    with pytest.raises(data.DatasetError, match="no ground-truth \\*_query.txt files in <root> or its lab/"):
        data.load_landmark_dataset("oxford5k", root)
    with pytest.raises(data.DatasetError, match="not a landmark dataset"):
        data.load_landmark_dataset("cub", synth_root("cub"))


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_ground_truth_pickle_is_refused_without_running_it(synth_copy, tmp_path):
    root = synth_copy("roxford5k")
    payload = _RunsCode()
    payload.marker = str(tmp_path / "ran")
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [payload]}))
    with pytest.raises(data.DatasetError, match="cannot read the pickle .*pathlib.*Path.touch.*lists, dicts"):
        data.load_landmark_dataset("roxford5k", root)
    assert not (tmp_path / "ran").exists()


def test_revisited(synth_root, synth_copy):
    root = synth_root("roxford5k")
    lm = data.load_landmark_dataset("roxford5k", root)
    with open(root / "gnd_roxford5k.pkl", "rb") as f:
        cfg = pickle.load(f)
    assert set(cfg) == {"imlist", "qimlist", "gnd"} and set(cfg["gnd"][0]) == {"bbx", "easy", "hard", "junk"}
    assert lm.protocol == "revisited" and len(lm.query_paths) == 22
    assert [Path(p).stem for p in lm.db_paths] == cfg["imlist"]  # imlist order, not sorted
    assert not {Path(p).stem for p in lm.query_paths} & set(cfg["imlist"])  # queries are not in the db
    g = lm.gnd[0]
    assert g["easy"] == sorted(int(i) for i in cfg["gnd"][0]["easy"]) and g["hard"] and g["junk"]
    assert g["bbx"] == pytest.approx(list(cfg["gnd"][0]["bbx"]))
    rp = data.load_landmark_dataset("rparis6k", synth_root("rparis6k"))
    assert Path(rp.query_paths[0]).stem.startswith("paris_defense_")
    broken = synth_copy("roxford5k")
    os.remove(Path(broken, "jpg", f"{cfg['imlist'][3]}.jpg"))
    with pytest.raises(data.DatasetError, match=r"1 image\(s\) named in .*gnd_roxford5k.pkl are missing"):
        data.load_landmark_dataset("roxford5k", broken)


def test_queries_look_like_their_positives(synth_root):
    """Mean colour of a query crop is closer to its landmark's positives than to other landmarks' (learnable)."""
    lm = data.load_landmark_dataset("oxford5k", synth_root("oxford5k"))

    def colour(path, box=None):
        return np.asarray(data.load_image(path, box), dtype=np.float64).reshape(-1, 3)

    hits = 0
    for q in range(0, 55, 5):
        crop = colour(lm.query_paths[q], lm.query_boxes[q])
        own = [i for i in lm.gnd[q]["ok"] if lm.db_paths[i] != lm.query_paths[q]]
        other = lm.gnd[(q + 5) % 55]["ok"]
        hist = lambda x: np.histogramdd(x, bins=4, range=[(0, 256)] * 3)[0].ravel() / len(x)  # noqa: E731
        hq = hist(crop)
        d_own = min(np.abs(hq - hist(colour(lm.db_paths[i]))).sum() for i in own)
        d_other = min(np.abs(hq - hist(colour(lm.db_paths[i]))).sum() for i in other)
        hits += d_own < d_other
    assert hits >= 9


def test_landmark_image_dataset_cirtorch_scaling(fast_tmp):
    path = fast_tmp / "im.jpg"
    Image.new("RGB", (800, 600), (120, 30, 200)).save(path)
    db = data.LandmarkImageDataset([str(path)], imsize=400)
    x, i = db[0]
    assert x.shape == (3, 300, 400) and x.dtype == torch.uint8 and i == 0
    q = data.LandmarkImageDataset([str(path)], boxes=[(100, 50, 500, 250)], imsize=400)
    x, _ = q[0]
    assert x.shape == (3, 100, 200)  # the crop gets the full image's factor 0.5
    small = data.LandmarkImageDataset([str(path)], imsize=1024)
    assert small[0][0].shape == (3, 600, 800)  # never upsampled


def test_build_dataset_for_landmarks(synth_root):
    root = synth_root("oxford5k")
    queries = data.build_dataset("oxford5k", root, "query", imsize=32)
    database = data.build_dataset("oxford5k", root, "database", imsize=32)
    assert (len(queries), len(database)) == (55, 128)
    assert max(database[0][0].shape[1:]) == 32 and max(queries[0][0].shape[1:]) < 32
    with pytest.raises(data.DatasetError, match="splits query and database"):
        data.build_dataset("oxford5k", root, "train")


# -- the regional-attention original's resize ------------------------------------------------------------------
def _bilinear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear with half-pixel centres, by hand: source ``max((d + 0.5) * in / out - 0.5, 0)``, neighbours
    clamped at the border (OpenCV INTER_LINEAR / torch ``align_corners=False``, no antialiasing)."""
    def taps(out: int, size: int):
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), size - 1)
        return lo, np.minimum(lo + 1, size - 1), src - lo

    y0, y1, wy = taps(height, image.shape[0])
    x0, x1, wx = taps(width, image.shape[1])
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
    bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
    return np.round(top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]).astype(np.uint8)


@pytest.mark.parametrize("size", [(9, 12), (3, 4), (5, 7)])
def test_bilinear_resize_is_half_pixel_bilinear_without_antialiasing(size):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = data.landmark.bilinear_resize(image, *size)
    assert np.abs(out.astype(int) - _bilinear_reference(image, *size)).max() <= 1  # float32 vs float64 rounding


def test_bilinear_loader_resizes_to_exactly_imsize_and_cuts_queries_from_the_resized_image(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    Image.fromarray(pixels).save(path)
    db = data.LandmarkImageDataset([str(path)], imsize=32, resize="bilinear")
    full = np.asarray(db.load(0))
    assert full.shape == (16, 32, 3)  # upsampled: the long side is exactly imsize
    np.testing.assert_array_equal(full, data.landmark.bilinear_resize(pixels, 16, 32))
    query = data.LandmarkImageDataset([str(path)], boxes=[(2.0, 1.0, 9.0, 7.0)], imsize=32, resize="bilinear")
    # box x ratio 1.6, rounded half to even: (3, 2, 14, 11); rows y0:y1, columns x0:x1 of the resized image
    np.testing.assert_array_equal(np.asarray(query.load(0)), full[2:11, 3:14])
    assert np.asarray(data.LandmarkImageDataset([str(path)], imsize=32).load(0)).shape == (10, 20, 3)  # thumbnail
    with pytest.raises(ValueError, match="resize"):
        data.LandmarkImageDataset([str(path)], imsize=None, resize="bilinear")


def test_landmark_resize_follows_the_head():
    from metric_retrieval import evaluation, models

    assert evaluation.landmark_resize(models.build_model("resnet18", "regional_attention")) == "bilinear"
    cirtorch = models.build_model("resnet18", "regional_attention", grid="cirtorch")
    assert evaluation.landmark_resize(cirtorch) == "thumbnail"
    assert evaluation.landmark_resize(models.build_model("resnet18", "gem")) == "thumbnail"
