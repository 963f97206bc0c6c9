"""Does training transfer to unseen classes? Untrained vs trained held-out Recall@1 and MAP@R on real images.

The data is the icon-theme set (``data_utils.py icons``: one freedesktop icon name drawn by several Debian
icon themes is a class; class-disjoint train/test halves). Every run evaluates its untrained model before
the first step (the trainer does that for every run), so each row compares a recipe with its own starting
point under the same seed. Recipes (``--recipes``):

* ``defaults``: train.py's flags as they are, random init (``--pretrained none``): triplet + semihard, Adam
  lr 1e-4, multistep; evaluated only after the last epoch (``--eval_every 0``), so nothing is selected on test.
* ``scratch``: ``configs/transfer/scratch.yaml`` (epoch selected on held-out ``--val_classes``).
* ``pretrained``: the defaults with ImageNet weights; only when they are in the local torch cache.

Prints one line per run and a table of mean +- std over the seeds; ``--json`` writes every run's numbers.
Runs use fp32 (``--amp off``: the same numerics on every CPU) and no loader workers (the images are tiny); on a
shared CPU, ``OMP_NUM_THREADS=1`` avoids oversubscribing it.
Needs the icon themes (see ``data/icon_themes.py``); without them it says so and exits 0 (skipped).

    OMP_NUM_THREADS=1 python benchmarks/bench_transfer.py             # 2 recipes x 2 seeds, 64 px, 3 epochs
    python benchmarks/bench_transfer.py --recipes scratch --num_epochs 20 --extra scratch:--eval_every=5
    python benchmarks/bench_transfer.py --image_size 32 --num_epochs 4 --extra scratch:--transform=abir
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

from data.icon_themes import APT_COMMAND, build_icon_dataset, missing_themes  # noqa: E402
from engine.config import resolve_config  # noqa: E402
from engine.trainer import train  # noqa: E402
from models.backbones import imagenet_weight_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"defaults": ["--pretrained", "none", "--eval_every", "0"],
           "scratch": ["--config", str(REPO / "configs/transfer/scratch.yaml")],
           "pretrained": ["--pretrained", "imagenet", "--eval_every", "0"]}
METRICS = ("recall@1", "map@r")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="defaults,scratch", help=f"comma-separated: {', '.join(RECIPES)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--num_epochs", type=int, default=3)
    p.add_argument("--data", default=None, help="an existing icon-set root (default: built in a temp folder)")
    p.add_argument("--extra", action="append", default=[], metavar="RECIPE:--flag=value",
                   help="extra train.py flag for one recipe (repeatable), e.g. scratch:--weight_decay=0")
    p.add_argument("--json", default=None, help="write all runs' numbers to this file")
    return p


def run_one(recipe: str, seed: int, root: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One training run; its untrained and selected-epoch test metrics."""
    extra = [flag for item in args.extra for r, _, flag in [item.partition(":")] if r == recipe]
    argv = ["--data_path", root, *RECIPES[recipe], "--backbone_type", "resnet18", "--image_size",
            str(args.image_size), "--num_epochs", str(args.num_epochs), "--seed", str(seed), "--workers", "0",
            "--amp", "off", "--no_tensorboard", "--output_dir", str(out_dir / f"{recipe}_{seed}"), *extra]
    cfg = resolve_config(argv)
    start = time.perf_counter()
    result = train(cfg)
    selected = next(r for r in result["history"] if r["epoch"] == result["best_epoch"])
    return {"recipe": recipe, "seed": seed, "argv": argv, "epochs": cfg["num_epochs"],
            "minutes": (time.perf_counter() - start) / 60,
            "selected_epoch": result["best_epoch"],
            "untrained": {m: result["untrained"]["test"][m] for m in METRICS},
            "trained": {m: selected[f"test_{m}"] for m in METRICS}}


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| recipe | epochs | seeds | untrained R@1 | trained R@1 | gain R@1 | untrained MAP@R | trained MAP@R |",
             "|---|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        rs = [r for r in runs if r["recipe"] == recipe]
        col = {(p, m): [r[p][m] for r in rs] for p in ("untrained", "trained") for m in METRICS}
        gain = [r["trained"]["recall@1"] - r["untrained"]["recall@1"] for r in rs]
        lines.append(f"| {recipe} | {rs[0]['epochs']} | {len(rs)} | {_mean_std(col['untrained', 'recall@1'])} | "
                     f"{_mean_std(col['trained', 'recall@1'])} | {_mean_std(gain)} (min {min(gain):+.3f}) | "
                     f"{_mean_std(col['untrained', 'map@r'])} | {_mean_std(col['trained', 'map@r'])} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    missing = missing_themes()
    if missing and args.data is None:
        print(f"skipped: icon themes {missing} are not installed; install them with `{APT_COMMAND}`")
        return 0
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if "pretrained" in recipes and imagenet_weight_file("resnet18") is None:
        print("skipped recipe pretrained: no ResNet-18 ImageNet weights in the local torch cache")
        recipes.remove("pretrained")
    with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
        root = args.data or str(build_icon_dataset(Path(tmp) / "icons", image_size=64)["root"])
        runs = []
        for recipe in recipes:
            for seed in (int(s) for s in args.seeds.split(",")):
                run = run_one(recipe, seed, root, args, Path(tmp) / "runs")
                runs.append(run)
                print(f"{recipe} seed {seed}: R@1 {run['untrained']['recall@1']:.3f} -> "
                      f"{run['trained']['recall@1']:.3f}, MAP@R {run['untrained']['map@r']:.3f} -> "
                      f"{run['trained']['map@r']:.3f} (epoch {run['selected_epoch']} of {run['epochs']}, "
                      f"{run['minutes']:.1f} min)",
                      flush=True)
    print(f"\nicon-theme set, ResNet-18, {args.image_size} px, held-out test classes:")
    print(table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
