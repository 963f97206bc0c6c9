"""Landmark AP/mAP: the compute_ap.cpp worked examples, a hand-computed revisited case, real Oxford gnd."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metric_retrieval.evaluation.landmark_metrics import compute_ap, compute_map, landmark_map
from metric_retrieval.utils.errors import UnknownOptionError

GND_OXFORD = Path(__file__).resolve().parents[1] / "fixtures" / "gnd_oxford5k.mat"


def test_ap_worked_examples():
    # VGG compute_ap.cpp worked example: pos={a,b}, ranking [a,x,b,y]
    assert compute_ap([0, 2], 2) == pytest.approx(0.791667, abs=1e-6)
    # same with x junk: junk is removed before ranking → [a,b,y]
    assert compute_ap([0, 1], 2) == pytest.approx(1.0, abs=1e-6)
    # pos={a,b,c}, ranking [x,a,y,b]
    assert compute_ap([1, 3], 3) == pytest.approx(0.222222, abs=1e-6)


def test_worked_examples_through_the_ranking():
    # db: a=0, x=1, b=2, y=3; similarity descending in index order
    sim = np.array([[4.0, 3.0, 2.0, 1.0]])
    assert landmark_map(sim, [{"ok": [0, 2], "junk": []}])["mAP"] == pytest.approx(0.791667, abs=1e-6)
    assert landmark_map(sim, [{"ok": [0, 2], "junk": [1]}])["mAP"] == pytest.approx(1.0)
    # pos={a,b,c}, ranking [x,a,y,b] (x=0, a=1, y=2, b=3); c=99 is never ranked but counts in nres
    m, _, _, _ = compute_map(np.argsort(-sim, axis=1).T, [{"ok": [1, 3, 99], "junk": []}])
    assert m == pytest.approx(0.222222, abs=1e-6)


def _revisited_case():
    sim = np.tile(np.arange(10, 0, -1, dtype=np.float64), (2, 1))  # ranking 0, 1, ..., 9 for both queries
    gnd = [{"easy": [0, 3], "hard": [5, 8], "junk": [1], "bbx": [0, 0, 1, 1]},
           {"easy": [9], "hard": [], "junk": []}]
    return sim, gnd


def test_revisited_hand_computed():
    sim, gnd = _revisited_case()
    out = landmark_map(torch.from_numpy(sim), gnd, protocol="revisited", kappas=(1, 5, 10))
    ap_e1 = (1 + (1 / 2 + 2 / 3) / 2) / 2                      # positives at junk-free ranks 0, 2
    ap_m1 = (1 + (1 / 2 + 2 / 3) / 2 + (2 / 4 + 3 / 5) / 2 + (3 / 7 + 4 / 8) / 2) / 4  # ranks 0, 2, 4, 7
    ap_h1 = ((0 + 1 / 3) / 2 + (1 / 5 + 2 / 6) / 2) / 2        # ranks 2, 5 (easy + junk removed)
    ap_2 = (0 + 1 / 10) / 2                                    # query 2: one positive at rank 9
    expected = {
        "mAP_easy": (ap_e1 + ap_2) / 2, "mAP_medium": (ap_m1 + ap_2) / 2, "mAP_hard": ap_h1,  # q2 hard: NaN
        # revisitop P@k: kq = min(max(pos1), k)
        "mP@1_easy": (1 + 0) / 2, "mP@5_easy": (2 / 3 + 0) / 2, "mP@10_easy": (2 / 3 + 1 / 10) / 2,
        "mP@1_medium": (1 + 0) / 2, "mP@5_medium": (3 / 5 + 0) / 2, "mP@10_medium": (4 / 8 + 1 / 10) / 2,
        "mP@1_hard": 0.0, "mP@5_hard": 1 / 5, "mP@10_hard": 2 / 6,
    }
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


def test_empty_queries_are_excluded_and_all_empty_is_nan():
    sim = np.array([[2.0, 1.0], [1.0, 2.0]])
    out = landmark_map(sim, [{"ok": [0], "junk": []}, {"ok": [], "junk": []}])
    assert out["mAP"] == 1.0
    assert math.isnan(landmark_map(sim, [{"ok": []}, {"ok": []}])["mAP"])


def test_bad_arguments():
    with pytest.raises(UnknownOptionError, match="revisited"):
        landmark_map(np.zeros((1, 2)), [{"ok": [0]}], protocol="new")
    with pytest.raises(ValueError, match="gnd"):
        landmark_map(np.zeros((2, 2)), [{"ok": [0]}])


def _oxford_gnd():
    import scipy.io

    mat = scipy.io.loadmat(GND_OXFORD)
    n = mat["imlist"].shape[0]
    gnd = [{"ok": np.asarray(g["ok"]).ravel().astype(np.int64) - 1,
            "junk": np.asarray(g["junk"]).ravel().astype(np.int64) - 1} for g in mat["gnd"].ravel()]
    return n, gnd


def test_real_oxford_gnd_ok_first_gives_map_one():
    n, gnd = _oxford_gnd()
    assert n == 5063 and len(gnd) == 55
    assert sum(len(g["ok"]) for g in gnd) == 2840 and sum(len(g["junk"]) for g in gnd) == 1495
    sim = np.zeros((55, n))
    for i, g in enumerate(gnd):
        sim[i, g["ok"]] = 2.0
        sim[i, g["junk"]] = 1.0
    assert landmark_map(sim, gnd)["mAP"] == pytest.approx(1.0, abs=1e-12)


def test_real_oxford_gnd_reversed_ranking():
    n, gnd = _oxford_gnd()
    sim = np.zeros((55, n))
    for i, g in enumerate(gnd):
        sim[i, g["ok"]] = -1.0  # all positives ranked last; junk is ignored wherever it is
    aps = []
    for g in gnd:  # closed form of compute_ap.cpp: positive j (0-based) at junk-free 0-based rank n_neg + j
        n_neg = n - len(g["ok"]) - len(g["junk"])
        aps.append(sum((j / (n_neg + j) + (j + 1) / (n_neg + j + 1)) / 2 for j in range(len(g["ok"])))
                   / len(g["ok"]))
    # first query by hand: 78 positives after 5063 - 78 - 33 = 4952 negatives
    assert aps[0] == pytest.approx(sum((j / (4952 + j) + (j + 1) / (4953 + j)) / 2 for j in range(78)) / 78)
    out = landmark_map(sim, gnd)
    assert out["mAP"] == pytest.approx(float(np.mean(aps)), abs=1e-12)
    assert 0 < out["mAP"] < 0.05
