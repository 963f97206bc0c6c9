"""Descriptor whitening for landmark retrieval (cirtorch ``utils/whiten.py``).

- :func:`pca_whitening_fit` — unsupervised PCA-whitening (``pcawhitenlearn``): ``m = mean(X)``,
  ``C = Xcᵀ Xc / N`` (symmetrised), eigen-decomposition sorted descending, ``P = Λ^(-1/2) Vᵀ``.
- :func:`learned_whitening_fit` — supervised "Lw" (``whitenlearn``; Radenović et al., "Fine-tuning CNN
  Image Retrieval with No Human Annotation", TPAMI 2018, after Mikolajczyk & Matas 2007): ``m`` = mean of
  the query-side vectors, ``S`` = covariance of matching-pair differences, ``P1 = chol(S)⁻¹`` (adding αI,
  α = 1e-10 ×10 until positive definite), rotation by the eigenvectors of the projected data:
  ``P = Vᵀ P1``.
- :func:`whiten_apply` — ``x' = P[:dim] (x − m)``, then ``x' / (‖x'‖ + 1e-6)``.
- :func:`convert_released_pca` — the regional-attention release's ``pca_components.npy`` (W, (D', D)) and
  ``pca_mean.npy`` (m, (D,)), which its test script applies as ``W (g + m)`` (issue 27), into this module's
  ``(mean, P)`` form ``P (g − mean)``: ``mean = −m``, ``P = W``. Taking ``mean = m`` flips the sign of the
  offset and gives other descriptors.

Layout: descriptors are ROWS here, ``X`` is (N, D) (cirtorch uses columns, D × N); ``P`` is (D, D) and acts as
``P @ (x − m)``. Fitting is done in float64 with ``numpy.linalg.eigh`` (the source's ``eig`` can return
complex values on symmetric input). Eigenvalues are floored at ``eps`` (default 1e-12) so rank-deficient data
(N < D) gives large but finite scales rather than ``inf``; the source has no floor. Whitening is learned on
training data, never on the test set.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import CorruptFileError, atomic_save, load_verified

__all__ = ["cholesky_with_jitter", "convert_released_pca", "learned_whitening_fit", "load_whitening", "matching_pairs",
           "pca_whitening_fit",
           "save_whitening", "whiten_apply"]


def _np64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"descriptors must be a 2-D (N, D) array, got shape {x.shape}")
    return x


def _eigh_desc(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh((c + c.T) / 2.0)
    order = np.argsort(w)[::-1]
    return w[order], v[:, order]


def pca_whitening_fit(X: Any, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening of (N, D) descriptors → (mean (D,), P (D, D)), rows of P sorted by variance.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3)) @ np.diag([3.0, 1.0, 0.2])
    >>> m, P = pca_whitening_fit(X)
    >>> Y = (X - m) @ P.T
    >>> bool(np.allclose(Y.T @ Y / len(X), np.eye(3), atol=1e-8))
    True
    """
    X = _np64(X)
    m = X.mean(axis=0)
    xc = X - m
    c = xc.T @ xc
    c = (c + c.T) / (2.0 * X.shape[0])
    w, v = _eigh_desc(c)
    P = np.diag(np.maximum(w, eps) ** -0.5) @ v.T
    return m, P


def convert_released_pca(components_path: str | os.PathLike, mean_path: str | os.PathLike
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), P (D', D))`` such that ``P (g − mean)`` equals the release's ``W (g + m)``.

    Both files are read with ``allow_pickle=False`` (nothing in them runs); a missing file, a pickle, or shapes
    that do not fit (``W`` not 2-D, ``m`` not of length ``W.shape[1]``) are a :class:`UserError`.
    """
    arrays = []
    for what, path in (("pca_components", components_path), ("pca_mean", mean_path)):
        try:
            arrays.append(np.load(path, allow_pickle=False).astype(np.float64))
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the released {what} file {path}: {err}") from None
    components, mean = arrays[0], arrays[1].reshape(-1)
    if components.ndim != 2 or mean.shape[0] != components.shape[1]:
        raise UserError(f"released PCA: pca_components {components.shape} and pca_mean {arrays[1].shape} do "
                        "not fit: expected (D', D) and (D,)")
    return -mean, components


def cholesky_with_jitter(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of S, adding αI (α = 1e-10, then ×10) until S + αI is positive definite."""
    alpha = 0.0
    eye = np.eye(S.shape[0])
    while True:
        try:
            return np.linalg.cholesky(S + alpha * eye)
        except np.linalg.LinAlgError:
            alpha = 1e-10 if alpha == 0.0 else alpha * 10.0
            if alpha > 1e10:  # pragma: no cover - only for NaN/inf input
                raise ValueError("matching-pair covariance is not positive definite even with 1e10·I added; "
                                 "check the descriptors for NaN/inf") from None


def matching_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qidxs, pidxs)`` for :func:`learned_whitening_fit` from class labels: each image paired with the next
    image of its class (cyclically); classes with one image give no pair.

    >>> [t.tolist() for t in matching_pairs(torch.tensor([2, 0, 2, 1, 0, 2]))]
    [[1, 4, 0, 2, 5], [4, 1, 2, 5, 0]]
    """
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    nxt = torch.roll(order, -1)
    # within a class block the next index is the class's next image; the block's last wraps to its first
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    first_of_block = order[torch.cummax(torch.where(starts, torch.arange(len(order)), 0), 0).values]
    ends = torch.roll(starts, -1)
    partner = torch.where(ends, first_of_block, nxt)
    keep = partner != order
    return order[keep], partner[keep]


def learned_whitening_fit(X: Any, qidxs: Any, pidxs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Supervised whitening from matching pairs ``(X[qidxs[i]], X[pidxs[i]])`` → (mean (D,), P (D, D)).

    Args:
        X: (N, D) descriptors (L2-normalised, as extracted).
        qidxs: index list of the queries of the matching (query, positive) pairs.
        pidxs: index list of their positives, as long as ``qidxs``.
    """
    X = _np64(X)
    qidxs = np.asarray(qidxs, dtype=np.int64).ravel()
    pidxs = np.asarray(pidxs, dtype=np.int64).ravel()
    if qidxs.shape != pidxs.shape or qidxs.size == 0:
        raise ValueError(f"qidxs and pidxs must be non-empty and of equal length, got {qidxs.size} and "
                         f"{pidxs.size}")
    m = X[qidxs].mean(axis=0)
    df = X[qidxs] - X[pidxs]
    S = df.T @ df / df.shape[0]
    P1 = np.linalg.inv(cholesky_with_jitter(S))
    Y = (X - m) @ P1.T
    _, v = _eigh_desc(Y.T @ Y)
    return m, v.T @ P1


def whiten_apply(X: Any, mean: Any, P: Any, dim: int | None = None) -> Any:
    """Whiten (N, D) descriptors, keep the first ``dim`` components and L2-normalise (``+1e-6``).

    Returns the same kind as ``X`` (a float32 torch tensor on X's device, or a float32 numpy array).
    """
    is_torch = isinstance(X, torch.Tensor)
    device = X.device if is_torch else None
    x = X.detach().cpu().double().numpy() if is_torch else np.asarray(X, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    mean = np.asarray(mean.detach().cpu() if isinstance(mean, torch.Tensor) else mean, dtype=np.float64)
    P = np.asarray(P.detach().cpu() if isinstance(P, torch.Tensor) else P, dtype=np.float64)
    if x.shape[1] != mean.shape[-1] or P.shape[1] != x.shape[1]:
        raise ValueError(f"whitening of dim {P.shape[1]} (mean {mean.shape}) cannot apply to descriptors of "
                         f"shape {x.shape}")
    Pd = P if dim is None else P[: int(dim)]
    y = (x - mean.ravel()) @ Pd.T
    y = y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-6)
    y = y.astype(np.float32)
    if squeeze:
        y = y[0]
    return torch.from_numpy(y).to(device) if is_torch else y


def save_whitening(path: str | os.PathLike, mean: Any, P: Any, dim: int | None = None,
                   meta: dict | None = None) -> None:
    """Save a whitening (atomic, checksummed write): ``{"version": 1, "mean", "P", "dim", "meta", "sha256"}``, the
    arrays as float64 tensors."""
    atomic_save({
        "version": 1,
        "mean": torch.as_tensor(np.asarray(mean, dtype=np.float64)),
        "P": torch.as_tensor(np.asarray(P, dtype=np.float64)),
        "dim": dim,
        "meta": dict(meta or {}),
    }, path)


def load_whitening(path: str | os.PathLike, with_meta: bool = False) -> Any:
    """Load a whitening saved by :func:`save_whitening` → ``(mean, P)`` numpy float64 arrays, or
    ``(mean, P, {"dim": ..., "meta": ...})`` with ``with_meta=True``. A missing or corrupt file → UserError."""
    if not os.path.isfile(path):
        raise UserError(f"whitening file {os.fspath(path)!r} does not exist")
    try:
        obj = load_verified(path, "whitening file")
    except CorruptFileError as exc:
        raise UserError(f"whitening file {os.fspath(path)!r} is not readable or corrupt ({exc})") from None
    if not isinstance(obj, dict) or not {"mean", "P"} <= set(obj):
        raise UserError(f"whitening file {os.fspath(path)!r} lacks the keys 'mean' and 'P'")
    mean, P = obj["mean"].numpy(), obj["P"].numpy()
    if with_meta:
        return mean, P, {"dim": obj.get("dim"), "meta": obj.get("meta", {})}
    return mean, P
