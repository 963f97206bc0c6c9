"""Bird benchmark: every seed method fine-tuned from ImageNet EfficientNet-Lite0 on real photographs (issue 27).

Data: ``cub100`` (100 CUB-200-2011 species; ``../shared/reference/data/cub100`` or ``$CUB100_ROOT``), trained on
its 50 train species and evaluated on its 50 disjoint test species: R@1, R@2, R@4, R@8 and MAP@R. The epoch is
selected on 5 held-out train species (``--val_classes 0.1``), never on the test species. One config per row
under ``configs/birds/``; ``base.yaml`` states the shared protocol (128 px, 5 epochs of 30 batches of 32).

Rows (``--rows``): ``off_the_shelf`` is the ImageNet model with GeM and no training, evaluated once. Every
config row is one training run per seed on :func:`selection_view` (the trainer's per-epoch evaluation then costs
the val species and two test species), after which the selected epoch's model is evaluated once on every test
species. ``no_flags`` (not in the default ``--rows``: ~15 minutes) is what a user runs on their own photos,
``train.py --data_name folder --data_path cub100 --backbone_type efficientnet_lite0`` and nothing else (the
defaults of :data:`metric_retrieval.training.config.TRANSFER_RECIPE`, 224 px), scored by its last epoch on every
test species: nothing is selected, so nothing is selected on test; it runs with the command's own defaults (loader
workers, mixed precision where the device has it). Runs are sequential; with ``--json`` each run is appended to
the file as it ends, and runs already in it are skipped, so an interrupted bench resumes. The config rows use
fp32 (``--amp off``), no loader workers and the decoded cache (``$METRIC_RETRIEVAL_CACHE``, shared by every
run). Without the data it says so and exits 0.

    OMP_NUM_THREADS=2 METRIC_RETRIEVAL_CACHE=birds_cache python benchmarks/bench_birds.py --json runs.json
    python benchmarks/bench_birds.py --rows off_the_shelf,multi_similarity,cgd --seeds 0 --json runs.json
    python benchmarks/bench_birds.py --rows no_flags --seeds 0 --json runs.json   # the user's command
    python benchmarks/bench_birds.py --table runs.json            # the table of the runs in the file
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from metric_retrieval.training import builders  # noqa: E402
from metric_retrieval.training.checkpoint import BEST_MODEL  # noqa: E402
from metric_retrieval.training.config import resolve_config  # noqa: E402
from metric_retrieval.training.evaluate import evaluate_split  # noqa: E402
from metric_retrieval.training.trainer import train  # noqa: E402
from metric_retrieval.utils.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "birds"
OFF_THE_SHELF = "off_the_shelf"
ROWS = (OFF_THE_SHELF, "multi_similarity", "cgd", "clf", "das_triplet", "das_multi_similarity", "xbm_multi_similarity")
NO_FLAGS = "no_flags"
USER_COMMAND = ("--data_name", "folder", "--backbone_type", "efficientnet_lite0")  # + --data_path: issue 27 item 3
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
HEADERS = ("R@1", "R@2", "R@4", "R@8", "MAP@R")


def cub100_root() -> Path:
    """``$CUB100_ROOT``, else ``../shared/reference/data/cub100`` beside the repository."""
    return Path(os.environ.get("CUB100_ROOT") or REPO.parent / "shared" / "reference" / "data" / "cub100")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join((*ROWS, NO_FLAGS))}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--data", default=None, help="cub100 root (default: $CUB100_ROOT or ../shared/...)")
    p.add_argument("--extra", action="append", default=[], metavar="ROW:--flag=value",
                   help="extra train.py flag for one row (repeatable), e.g. cgd:--lr=3e-4")
    p.add_argument("--json", default=None, help="write every run's numbers to this file (after each run)")
    p.add_argument("--table", nargs="+", default=None, metavar="JSON", help="print the table of these files only")
    return p


def _model_on_test(cfg: dict[str, Any], root: Path, state: dict[str, torch.Tensor] | None) -> dict[str, float]:
    """R@k and MAP@R on every test species of ``root`` of the model ``cfg`` builds (``state`` loaded into it)."""
    splits = builders.build_datasets(cfg, str(root))
    model = builders.build_model(cfg, splits["train"].num_classes)
    if state is not None:
        model.load_state_dict(state)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    metrics, _ = evaluate_split(model.eval(), splits["test"], splits["info"].protocol, [1, 2, 4, 8], cfg,
                                torch.device("cpu"), None)
    return {m: metrics[m] for m in METRICS}


def selection_view(root: Path, out: Path) -> Path:
    """``out`` laid out as cub100 with all its train species but only two test species (symlinks).

    Training runs on this view, so the trainer's per-epoch evaluation of its test split costs two species;
    the selected epoch is then evaluated once on every test species of ``root``.
    """
    (out / "test").mkdir(parents=True, exist_ok=True)
    if not (out / "train").exists():
        (out / "train").symlink_to((root / "train").resolve(), target_is_directory=True)
    for species in sorted(p for p in (root / "test").iterdir() if p.is_dir())[:2]:
        if not (out / "test" / species.name).exists():
            (out / "test" / species.name).symlink_to(species.resolve(), target_is_directory=True)
    return out


def config(row: str, root: Path, seed: int, out_dir: Path, extra: list[str]) -> dict[str, Any]:
    return resolve_config(["--config", str(CONFIGS / f"{row}.yaml"), "--data_path", str(root), "--seed", str(seed),
                           "--workers", "0", "--amp", "off", "--no_tensorboard", "--output_dir", str(out_dir),
                           *extra])


def off_the_shelf(root: Path, out_dir: Path) -> dict[str, Any]:
    """The row of the ImageNet model as built by ``configs/birds/off_the_shelf.yaml`` (no training)."""
    start = time.perf_counter()
    cfg = config(OFF_THE_SHELF, root, 0, out_dir, [])
    metrics = _model_on_test(cfg, root, None)
    return {"row": OFF_THE_SHELF, "seed": 0, "image_size": cfg["image_size"], "epochs": 0,
            "minutes": (time.perf_counter() - start) / 60, "trained": metrics}


def run_one(row: str, seed: int, root: Path, extra: list[str], out_dir: Path) -> dict[str, Any]:
    """One training run of ``configs/birds/<row>.yaml`` on :func:`selection_view`, then its selected epoch
    (best val ``select_metric``, MAP@R in ``base.yaml``) on every test species."""
    start = time.perf_counter()
    cfg = config(row, selection_view(root, out_dir / "view"), seed, out_dir / f"{row}_{seed}", extra)
    result = train(cfg)
    best = torch.load(out_dir / f"{row}_{seed}" / BEST_MODEL, map_location="cpu", weights_only=True)["model"]
    trained = _model_on_test(cfg, root, best)
    selected = next(r for r in result["history"] if r["epoch"] == result["best_epoch"])
    return {"row": row, "seed": seed, "extra": extra, "epochs": cfg["num_epochs"], "image_size": cfg["image_size"],
            "steps_per_epoch": cfg["max_steps_per_epoch"], "minutes": (time.perf_counter() - start) / 60,
            "selected_epoch": result["best_epoch"], "select_metric": cfg["select_metric"],
            "val_recall@1": selected["val_recall@1"], "val_map@r": selected["val_map@r"], "trained": trained}


def run_no_flags(seed: int, root: Path, out_dir: Path) -> dict[str, Any]:
    """The user's command with no recipe flags (only where to write and the seed), on all of cub100: its last
    epoch's numbers on every test species (the run evaluates all 50 after each epoch)."""
    start = time.perf_counter()
    cfg = resolve_config([*USER_COMMAND, "--data_path", str(root), "--seed", str(seed), "--output_dir",
                          str(out_dir / f"{NO_FLAGS}_{seed}")])
    result = train(cfg)
    last = result["history"][-1]
    return {"row": NO_FLAGS, "seed": seed, "epochs": cfg["num_epochs"], "image_size": cfg["image_size"],
            "steps_per_epoch": cfg["max_steps_per_epoch"], "minutes": (time.perf_counter() - start) / 60,
            "selected_epoch": None, "untrained": result["untrained"]["test"],
            "trained": {m: last[f"test_{m}"] for m in METRICS}}


def _mean_std(values: list[float], sign: str = "") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.3f} ± {std:.3f}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown table: the off-the-shelf row, then every trained row (mean ± std over its seeds) with its R@1
    gain over the off-the-shelf model (mean ± std, and the smallest gain of any seed); ``no_flags``'s gain is over
    its own untrained model, at its own image size."""
    lines = ["| row | px | seeds | " + " | ".join(HEADERS) + " | R@1 gain (min) |",
             "|---" * (len(HEADERS) + 4) + "|"]
    base = next((r["trained"] for r in runs if r["row"] == OFF_THE_SHELF), None)
    for row in dict.fromkeys(r["row"] for r in runs):
        rs = [r for r in runs if r["row"] == row]
        cols = [_mean_std([r["trained"][m] for r in rs]) for m in METRICS]
        gain = ""
        if row != OFF_THE_SHELF and base is not None:
            gains = [r["trained"]["recall@1"] - r.get("untrained", base)["recall@1"] for r in rs]  # no_flags:
            # over its own model before training (224 px), not the 128 px off-the-shelf row
            gain = f"{_mean_std(gains, '+')} ({min(gains):+.3f})"
        seeds = "—" if row == OFF_THE_SHELF else ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {row} | {rs[0]['image_size']} | {seeds} | " + " | ".join(cols) + f" | {gain} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.table:
        runs = [run for path in args.table for run in json.loads(Path(path).read_text())]
        print(table(runs))
        return 0
    root = Path(args.data) if args.data else cub100_root()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        print(f"skipped: no cub100 at {root} (set CUB100_ROOT or pass --data)")
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in (*ROWS, NO_FLAGS)]
    if unknown:
        print(f"error: unknown rows {unknown}; choose among {', '.join((*ROWS, NO_FLAGS))}", file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else None
    runs: list[dict[str, Any]] = json.loads(out.read_text()) if out is not None and out.exists() else []
    done = {(r["row"], r["seed"]) for r in runs}
    todo = [(OFF_THE_SHELF, 0)] if OFF_THE_SHELF in rows else []
    todo += [(row, int(seed)) for seed in args.seeds.split(",") for row in rows if row != OFF_THE_SHELF]
    with tempfile.TemporaryDirectory(prefix="bench_birds_") as tmp:
        for row, seed in (job for job in todo if job not in done):
            if row == OFF_THE_SHELF:
                run = off_the_shelf(root, Path(tmp) / row)
            elif row == NO_FLAGS:
                run = run_no_flags(seed, root, Path(tmp))
            else:
                extra = [flag for item in args.extra for r, _, flag in [item.partition(":")] if r == row]
                run = run_one(row, seed, root, extra, Path(tmp))
            runs.append(run)
            t = run["trained"]
            print(f"{row} seed {seed}: R@1 {t['recall@1']:.3f}, MAP@R {t['map@r']:.3f} (epoch "
                  f"{run.get('selected_epoch') or run['epochs']} of {run['epochs']}, {run['minutes']:.1f} min)",
                  flush=True)
            if out is not None:
                atomic_write_text(out, json.dumps(runs, indent=1))
    print("\ncub100 test species (50, disjoint from train), EfficientNet-Lite0 ImageNet weights:")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
