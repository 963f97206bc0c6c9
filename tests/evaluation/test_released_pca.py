"""The regional-attention release's PCA (``W (g + m)``) converted into ``P (g − mean)``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metric_retrieval.evaluation.whitening import convert_released_pca, whiten_apply
from metric_retrieval.models.heads.rmac import RegionWhitening
from metric_retrieval.utils.errors import UserError


def _release(tmp_path, d=16, d_out=8, seed=0):
    rng = np.random.default_rng(seed)
    w, m = rng.standard_normal((d_out, d)).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    np.save(tmp_path / "pca_components.npy", w)
    np.save(tmp_path / "pca_mean.npy", m)
    return w.astype(np.float64), m.astype(np.float64)


def test_converted_pca_equals_the_released_arithmetic(tmp_path):
    w, m = _release(tmp_path)
    mean, p = convert_released_pca(tmp_path / "pca_components.npy", tmp_path / "pca_mean.npy")
    g = np.random.default_rng(1).standard_normal((5, 16))
    released = (w @ (g + m).T).T  # the release: W (g + m)
    np.testing.assert_allclose((g - mean) @ p.T, released, rtol=1e-12, atol=1e-12)
    out = whiten_apply(g, mean, p)
    np.testing.assert_allclose(out, released / (np.linalg.norm(released, axis=1, keepdims=True) + 1e-6), rtol=1e-5,
                               atol=1e-6)
    wrong = (g - m) @ p.T  # the easy mistake: the mean subtracted
    assert not np.allclose(wrong, released)
    square = RegionWhitening(16)  # a square release (D' = D) loads into the R-MAC heads' buffers
    w16, m16 = _release(tmp_path, d=16, d_out=16, seed=2)
    square.set(*map(torch.from_numpy, convert_released_pca(tmp_path / "pca_components.npy",
                                                           tmp_path / "pca_mean.npy")))
    torch.testing.assert_close(square(torch.from_numpy(g).float()).double(),
                               torch.from_numpy((w16 @ (g + m16).T).T), rtol=1e-5, atol=1e-5)


def test_bad_release_files_are_refused(tmp_path):
    _release(tmp_path)
    np.save(tmp_path / "short_mean.npy", np.zeros(3))
    with pytest.raises(UserError, match="do not fit"):
        convert_released_pca(tmp_path / "pca_components.npy", tmp_path / "short_mean.npy")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="cannot read"):
        convert_released_pca(tmp_path / "pickled.npy", tmp_path / "pca_mean.npy")
    with pytest.raises(UserError, match="cannot read"):
        convert_released_pca(tmp_path / "missing.npy", tmp_path / "pca_mean.npy")
