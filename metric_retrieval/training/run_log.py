"""Run records: console/file logging, the per-epoch CSV, TensorBoard scalars and montages, environment.

Only rank 0 writes anything; other ranks get a disabled :class:`RunLog`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from metric_retrieval.training.distributed import DistInfo, RankFilter

log = logging.getLogger("metric_retrieval")


@contextlib.contextmanager
def run_logging(info: DistInfo, log_file: Path | None) -> Iterator[None]:
    """INFO to stderr (rank 0 only) and, on rank 0, to ``train.log`` in the run folder, for the run's duration.

    On exit the logger's previous handlers, level and ``warnings.showwarning`` come back and ``train.log`` is
    closed, so a library caller's later messages do not land in a finished run's log.
    """
    saved = (list(log.handlers), log.level, log.propagate, warnings.showwarning)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(lambda record: getattr(record, "console", True))  # the CLI prints its own "error: ..."
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RankFilter(info))
        log.addHandler(handler)
    # Python warnings (dataset checks, libraries) become log lines: in train.log, without the source line.
    warnings.showwarning = lambda message, category, *args, **kwargs: log.warning("%s", message)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.handlers[:], level, log.propagate, warnings.showwarning = saved
        log.setLevel(level)


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit, recorded with every run for reproducibility."""
    import numpy
    import torchvision

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "torch": torch.__version__, "torchvision": torchvision.__version__,
                           "numpy": numpy.__version__, "command": sys.argv,
                           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        env["faiss"] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def append_environment(path: Path) -> None:
    """Add this process's :func:`environment` to ``env.json``, a list with one entry per start (a resume,
    failed or not, keeps the original command)."""
    from metric_retrieval.utils.io import atomic_write_text

    try:
        runs = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        runs = []  # unreadable: start again rather than fail the run over its record
    runs = runs if isinstance(runs, list) else [runs]  # older runs wrote a single object
    atomic_write_text(path, json.dumps([*runs, environment()], indent=2, default=str))


class RunLog:
    """Writes ``statistics.csv``, ``env.json`` (appended) and TensorBoard events (``tb/``) in the run folder."""

    def __init__(self, out_dir: Path, cfg: dict[str, Any], enabled: bool, tensorboard: bool = True) -> None:
        self.out_dir, self.enabled, self.writer = out_dir, enabled, None
        if not enabled:
            return
        append_environment(out_dir / "env.json")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"))

    def step(self, global_step: int, loss: float, parts: dict[str, Any], optimizer, stats: dict[str, float]) -> None:
        """TensorBoard scalars of one step: the loss and its terms, every group's lr and the criterion's
        ``stats()`` (an embedding producer's, under ``producer/``)."""
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, global_step)
        for name, value in parts.items():
            self.writer.add_scalar(f"train/loss_{name}", float(value), global_step)
        for group in optimizer.param_groups:
            self.writer.add_scalar(f"lr/{group.get('name', 'group')}", group["lr"], global_step)
        for name, value in stats.items():
            self.writer.add_scalar(f"producer/{name}", float(value), global_step)

    def epoch_end(self, row: dict[str, Any], history: list[dict[str, Any]], global_step: int) -> None:
        """Rewrites the CSV from the full history (kept in checkpoints, so a resumed run continues it)."""
        if not self.enabled:
            return
        columns = list(dict.fromkeys(k for r in history for k in r))
        with open(self.out_dir / "statistics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"epoch/{key}", value, global_step)

    def evaluation(self, epoch: int, metrics: dict[str, dict[str, float]], database: dict[str, Any],
                   out_dir: Path) -> None:
        """A retrieval montage of the first query, as a PNG in the run folder and in TensorBoard."""
        if not self.enabled:
            return
        import numpy as np
        from PIL import Image

        from metric_retrieval.retrieval.query import montage_for_query

        png = out_dir / "montages" / f"epoch_{epoch:03d}.png"
        montage_for_query(database, query_index=0, k=min(8, len(database["query"]["paths"]) - 1), out_png=png)
        if self.writer is not None:
            image = np.asarray(Image.open(png).convert("RGB"))
            self.writer.add_image("retrieval/montage", image, epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
