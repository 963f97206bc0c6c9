"""The last two plug-in kinds: a kNN back-end and a command, each its module's code plus one registration line.

The back-end (a numpy brute force with its own tie rule) must give the evaluator the metrics of the exact torch
search; the command (``metric-retrieval stats``: a dataset's images and classes per split) must run through the
``metric-retrieval`` dispatcher and the shared error handling. Both are registered for the test only.
"""
from __future__ import annotations

import argparse
import sys
import types

import numpy as np
import pytest
import torch

from metric_retrieval import cli
from metric_retrieval.cli.common import new_parser, reports_errors
from metric_retrieval.evaluation import retrieval_metrics
from metric_retrieval.evaluation.knn_registry import KNN_BACKENDS


class NumpyKNN:
    """Exact search with numpy: full score rows, a stable argsort (ties to the lower gallery index)."""

    priority = -1  # never chosen by "auto"
    max_k = None
    metrics = ("ip", "l2")
    options = ()

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def prepare(cls, gallery: torch.Tensor, metric: str) -> dict:
        return {"g": gallery.double().numpy(), "metric": metric}

    @classmethod
    def search(cls, state: dict, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = q.double().numpy()
        key = x @ state["g"].T
        if state["metric"] == "l2":
            key = -((x[:, None, :] - state["g"][None]) ** 2).sum(-1)
        idx = np.argsort(-key, axis=1, kind="stable")[:, :k]
        return torch.from_numpy(np.take_along_axis(key, idx, 1).astype(np.float32)), torch.from_numpy(idx)

    @classmethod
    def chunk_device(cls) -> torch.device:
        return torch.device("cpu")


@pytest.fixture
def numpy_backend():
    KNN_BACKENDS.register("plugin_numpy")(NumpyKNN)  # the one registration line
    yield "plugin_numpy"
    del KNN_BACKENDS._entries["plugin_numpy"]  # the registry is process-wide: leave it as it was


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_a_plugged_in_knn_backend_gives_the_exact_metrics(numpy_backend, metric):
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(60, 8, generator=gen), dim=1)
    y = torch.arange(60) % 6
    ours = retrieval_metrics(x, y, ks=(1, 2, 4), metric=metric, backend=numpy_backend)
    exact = retrieval_metrics(x, y, ks=(1, 2, 4), metric=metric, backend="torch")
    assert ours == pytest.approx(exact, abs=1e-6)
    sim = x @ x.T if metric == "ip" else -torch.cdist(x, x) ** 2
    sim.fill_diagonal_(-float("inf"))
    assert ours["recall@1"] == pytest.approx((y[sim.argmax(1)] == y).float().mean().item())


def stats_module() -> types.ModuleType:
    """A command module as a user would write it: ``get_args_parser(prog)`` and ``main(argv, prog)``."""
    module = types.ModuleType("plugin_stats")

    def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
        p = new_parser(prog, "Images and classes of each split of a dataset")
        p.add_argument("--data_name", default="folder")
        p.add_argument("--data_path", required=True)
        return p

    @reports_errors
    def main(argv: list[str] | None = None, prog: str | None = None) -> int:
        from metric_retrieval import data

        args = get_args_parser(prog).parse_args(argv)
        report = data.describe_dataset(args.data_name, args.data_path)
        for split, counts in report["splits"].items():
            print(f"{split} {counts['images']} {counts['classes']}")
        return 0

    module.get_args_parser, module.main = get_args_parser, main
    return module


def test_a_plugged_in_command_runs_through_the_dispatcher(monkeypatch, tmp_path, capsys):
    from metric_retrieval import data

    monkeypatch.setitem(sys.modules, "plugin_stats", stats_module())
    monkeypatch.setitem(cli.COMMANDS, "stats", ("plugin_stats", "images and classes per split"))  # the one line
    root = data.write_synthetic("folder", tmp_path / "set", num_classes=6, images_per_class=3)
    assert cli.main(["stats", "--data_path", str(root)]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["train 9 3", "test 9 3"]
    assert cli.main(["stats", "--data_path", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert cli.main(["--help"]) == 0 and "  stats " in capsys.readouterr().out
