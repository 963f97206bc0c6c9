"""Whitening (PCA, learned Lw, apply, save/load) and query expansion / database augmentation."""
import numpy as np
import pytest
import torch

from metric_retrieval.evaluation.query_expansion import alpha_qe, average_qe, database_augmentation
from metric_retrieval.evaluation.whitening import (
    learned_whitening_fit,
    load_whitening,
    pca_whitening_fit,
    save_whitening,
    whiten_apply,
)
from metric_retrieval.utils.errors import UserError


def _l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pca_whitening_gives_identity_covariance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 3.0
    m, P = pca_whitening_fit(X)
    Y = (X - m) @ P.T
    np.testing.assert_allclose(Y.T @ Y / len(X), np.eye(6), atol=1e-8)
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=1e-10)
    var = ((X - m) @ np.linalg.pinv(P)).var(axis=0)
    assert var.shape == (6,)  # P is invertible


def test_learned_whitening_reduces_matching_pair_distances():
    rng = np.random.default_rng(1)
    n_cls, per, d = 40, 4, 16
    centers = rng.normal(size=(n_cls, d))
    nuisance = np.zeros(d)
    nuisance[:4] = 6.0  # large intra-class variation along 4 directions
    X = _l2(np.repeat(centers, per, axis=0) + rng.normal(size=(n_cls * per, d)) * (0.2 + nuisance))
    labels = np.repeat(np.arange(n_cls), per)
    qidx, pidx = [], []
    for c in range(n_cls):
        members = np.flatnonzero(labels == c)
        for a in members:
            for b in members:
                if a != b:
                    qidx.append(a)
                    pidx.append(b)
    m, P = learned_whitening_fit(X, qidx, pidx)
    Y = whiten_apply(X, m, P)

    def ratio(Z):
        match = np.linalg.norm(Z[qidx] - Z[pidx], axis=1).mean()
        rand = np.linalg.norm(Z[rng.permutation(len(Z))] - Z, axis=1).mean()
        return match / rand

    assert ratio(Y) < 0.7 * ratio(X)


def test_learned_whitening_singular_covariance_uses_jitter():
    X = _l2(np.random.default_rng(2).normal(size=(10, 5)))
    m, P = learned_whitening_fit(X, [0, 1], [1, 0])  # rank-1 pair covariance
    assert np.all(np.isfinite(P)) and P.shape == (5, 5)


def test_whiten_apply_types_dims_and_norm():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 8))
    m, P = pca_whitening_fit(X)
    y = whiten_apply(X, m, P, dim=3)
    assert isinstance(y, np.ndarray) and y.shape == (50, 3) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    t = whiten_apply(torch.from_numpy(X).float(), torch.from_numpy(m), torch.from_numpy(P))
    assert isinstance(t, torch.Tensor) and t.shape == (50, 8)
    assert whiten_apply(torch.from_numpy(X[0]).float(), m, P).shape == (8,)
    with pytest.raises(ValueError, match="cannot apply"):
        whiten_apply(X[:, :4], m, P)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    m, P = pca_whitening_fit(rng.normal(size=(30, 4)))
    path = tmp_path / "sub" / "whiten.pth"
    save_whitening(path, m, P, dim=2, meta={"dataset": "synthetic"})
    m2, P2 = load_whitening(path)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(P, P2)
    _, _, info = load_whitening(path, with_meta=True)
    assert info == {"dim": 2, "meta": {"dataset": "synthetic"}}
    assert [p.name for p in path.parent.iterdir()] == ["whiten.pth"]  # no temp file left behind
    with pytest.raises(UserError, match="does not exist"):
        load_whitening(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not readable"):
        load_whitening(tmp_path / "bad.pth")


def test_average_qe_hand_case_and_shapes():
    X = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    q = torch.tensor([[0.6, 0.8]])
    # neighbours of q by dot product: x1 (0.96), x2 (0.8) → mean(q, x1, x2) = (1.4, 2.4)/3, then L2
    expected = torch.nn.functional.normalize(torch.tensor([[1.4, 2.4]]), dim=1)
    torch.testing.assert_close(average_qe(q, X, 2), expected)
    assert average_qe(torch.randn(5, 2), X, 1).shape == (5, 2)
    assert average_qe(q[0], X, 1).shape == (2,)
    torch.testing.assert_close(average_qe(q, X, 0), q)


def test_alpha_qe_hand_case():
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[0.8, 0.6]])
    # q + 0.8^2·x0 + 0.6^2·x1 = (1.44, 0.96)
    expected = torch.nn.functional.normalize(torch.tensor([[1.44, 0.96]]), dim=1)
    torch.testing.assert_close(alpha_qe(q, X, 2, alpha=2.0), expected)


def test_database_augmentation_dir_weights():
    X = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    out = database_augmentation(X, k=2)  # weights [1, 2/2, 1/2] over (self, nn1, nn2), sum 2.5
    torch.testing.assert_close(out[0], (X[0] + X[1] + 0.5 * X[2]) / 2.5)
    torch.testing.assert_close(out[2], (X[2] + X[1] + 0.5 * X[0]) / 2.5)
    assert database_augmentation(X, 1, normalize=True).norm(dim=1).allclose(torch.ones(3))
    with pytest.raises(ValueError):
        database_augmentation(X, 3)
