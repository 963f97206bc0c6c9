"""Landmark retrieval mAP: Oxford5k/Paris6k (old protocol) and ROxford5k/RParis6k (revisited protocol).

- :func:`compute_ap` — the trapezoidal AP of VGG's official ``compute_ap.cpp``, in the
  revisitop/cirtorch form (``evaluate.py compute_ap``): for the j-th (0-based) positive at junk-free
  0-based rank r, ``p0 = 1 if r == 0 else j / r``, ``p1 = (j + 1) / (r + 1)``, ``ap += (p0 + p1) / (2 nres)``.
  It is NOT sklearn's average precision.
- :func:`compute_map` — revisitop ``compute_map``: junk images are removed from the ranking before the AP,
  queries with no positives give NaN and are left out of the mean, and mP@k has revisitop's quirk:
  ``kq = min(max(pos), k)``, ``P@k = |{p ≤ kq}| / kq`` with 1-based junk-free positions, so the denominator
  shrinks when the last positive comes before rank k.
- :func:`landmark_map` — from a (Q, N) similarity matrix and the ground truth to a dict of floats:
  old protocol ``{"mAP"}`` (positives ``ok`` = good ∪ ok, ``junk`` ignored);
  revisited ``{"mAP_easy", "mAP_medium", "mAP_hard", "mP@k_easy", ...}`` with
  Easy: ok = easy, junk ∪= hard; Medium: ok = easy ∪ hard; Hard: ok = hard, junk ∪= easy
  (revisitop ``example_evaluate.py``).
  Values are fractions in [0, 1] (papers print ×100).

Rankings sort the similarity descending with a stable sort, so ties go to the lower database index.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metric_retrieval.utils.errors import UnknownOptionError

__all__ = ["PROTOCOLS", "compute_ap", "compute_map", "landmark_map", "rank_database", "revisited_gnd"]

PROTOCOLS = ("old", "revisited")


def compute_ap(ranks: Sequence[int] | np.ndarray, nres: int) -> float:
    """Trapezoidal average precision (``compute_ap.cpp`` semantics).

    Args:
        ranks: sorted 0-based positions of the retrieved positives in the junk-free ranking.
        nres: number of positives (those never retrieved still count).

    >>> round(compute_ap([0, 2], 2), 6)   # pos {a, b}, ranking [a, x, b, y]
    0.791667
    >>> compute_ap([0, 1], 2)             # same with x junk (removed from the ranking)
    1.0
    >>> round(compute_ap([1, 3], 3), 6)   # pos {a, b, c}, ranking [x, a, y, b]
    0.222222
    """
    ap = 0.0
    recall_step = 1.0 / nres
    for j, r in enumerate(np.asarray(ranks, dtype=np.int64).ravel().tolist()):
        precision_0 = 1.0 if r == 0 else j / r
        precision_1 = (j + 1) / (r + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(ranks: np.ndarray, gnd: Sequence[Mapping[str, Any]], kappas: Sequence[int] = ()
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop ``compute_map``.

    Args:
        ranks: (N, Q) database indices, best first, one column per query (the revisitop layout).
        gnd: per query a mapping with ``ok`` (0-based positive db indices) and optionally ``junk``.
        kappas: the k of mP@k.

    Returns:
        (mAP, per-query AP (Q,) with NaN for empty queries, mP@k (len(kappas),), per-query P@k (Q, K)).
    """
    ranks = np.asarray(ranks)
    nq = len(gnd)
    if ranks.ndim != 2 or ranks.shape[1] != nq:
        raise ValueError(f"ranks must be (N, Q) with Q = len(gnd) = {nq}, got shape {ranks.shape}")
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for i in range(nq):
        qgnd = np.asarray(gnd[i].get("ok", []), dtype=np.int64).ravel()
        if qgnd.size == 0:
            continue
        qgndj = np.asarray(gnd[i].get("junk", []), dtype=np.int64).ravel()
        col = ranks[:, i]
        pos = np.flatnonzero(np.isin(col, qgnd))
        junk = np.flatnonzero(np.isin(col, qgndj))
        if junk.size:  # shift each positive by the number of junk images ranked before it
            pos = pos - np.searchsorted(junk, pos, side="left")
        aps[i] = compute_ap(pos, qgnd.size)
        pos1 = pos + 1
        for j, kappa in enumerate(kappas):
            if pos1.size == 0:
                prs[i, j] = 0.0
                continue
            kq = min(int(pos1.max()), int(kappa))
            prs[i, j] = float((pos1 <= kq).sum()) / kq
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(aps[valid].mean()), aps, prs[valid].mean(axis=0), prs


def rank_database(similarity: Any) -> np.ndarray:
    """(Q, N) similarity → (N, Q) ranks (db indices, most similar first, ties by lower index)."""
    sim = similarity.detach().cpu().numpy() if hasattr(similarity, "detach") else np.asarray(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (Q, N), got shape {sim.shape}")
    return np.argsort(-sim, axis=1, kind="stable").T


def revisited_gnd(gnd: Sequence[Mapping[str, Any]], setting: str) -> list[dict[str, np.ndarray]]:
    """Per-query ``{ok, junk}`` for the revisited Easy / Medium / Hard setting."""
    out = []
    for g in gnd:
        easy = np.asarray(g.get("easy", []), dtype=np.int64).ravel()
        hard = np.asarray(g.get("hard", []), dtype=np.int64).ravel()
        junk = np.asarray(g.get("junk", []), dtype=np.int64).ravel()
        if setting == "easy":
            out.append({"ok": easy, "junk": np.concatenate([junk, hard])})
        elif setting == "medium":
            out.append({"ok": np.concatenate([easy, hard]), "junk": junk})
        elif setting == "hard":
            out.append({"ok": hard, "junk": np.concatenate([junk, easy])})
        else:
            raise UnknownOptionError(f"unknown revisited setting {setting!r}; choose easy, medium or hard")
    return out


def landmark_map(similarity: Any, gnd: Sequence[Mapping[str, Any]], protocol: str = "old",
                 kappas: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """mAP (and mP@k for the revisited protocol) of a query × database similarity matrix.

    Args:
        similarity: (Q, N) torch tensor or numpy array, larger = more similar.
        gnd: one mapping per query; old protocol: ``ok``, ``junk``; revisited: ``easy``, ``hard``, ``junk``
            (0-based database indices).
        protocol: ``"old"`` (Oxford5k/Paris6k) or ``"revisited"`` (ROxford5k/RParis6k).
        kappas: the k of mP@k (revisited only).

    >>> import numpy as np
    >>> sim = np.array([[0.9, 0.1, 0.8, 0.2]])
    >>> landmark_map(sim, [{"ok": [0, 2], "junk": []}])
    {'mAP': 1.0}
    >>> round(landmark_map(sim, [{"ok": [0, 1], "junk": []}])["mAP"], 6)
    0.708333
    """
    if protocol not in PROTOCOLS:
        raise UnknownOptionError(f"unknown landmark protocol {protocol!r}; choose one of: old, revisited")
    ranks = rank_database(similarity)
    if ranks.shape[1] != len(gnd):
        raise ValueError(f"similarity has {ranks.shape[1]} query rows but gnd has {len(gnd)} entries")
    if protocol == "old":
        return {"mAP": compute_map(ranks, gnd)[0]}
    out: dict[str, float] = {}
    for setting in ("easy", "medium", "hard"):
        m, _, pr, _ = compute_map(ranks, revisited_gnd(gnd, setting), kappas)
        out[f"mAP_{setting}"] = m
        for kappa, p in zip(kappas, pr):
            out[f"mP@{kappa}_{setting}"] = float(p)
    return out
