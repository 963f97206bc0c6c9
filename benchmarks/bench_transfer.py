"""Does training transfer to unseen classes? Untrained vs trained held-out Recall@1 and MAP@R on real images.

The data (``--set``) is the font-glyph set (``data_utils.py glyphs``: one character drawn by many Debian font
families is a class) or the icon-theme set (``data_utils.py icons``: one freedesktop icon name drawn by several
Debian icon themes is a class); both have class-disjoint train/test halves. Every run evaluates its untrained
model before the first step (the trainer does that for every run), so each row compares a recipe with its own
starting point under the same seed. Recipes (``--recipes``):

* ``defaults``: train.py's flags as they are, random init (``--pretrained none``): triplet + semihard, Adam
  lr 1e-4, multistep; evaluated only after the last epoch (``--eval_every 0``), so nothing is selected on test.
* ``scratch``: ``configs/transfer/scratch.yaml`` (epoch selected on held-out ``--val_classes``).
* ``pretrained``: the defaults with ImageNet weights; only when they are in the local torch cache.

Prints one line per run and a table of mean +- std over the seeds; ``--json`` writes every run's numbers.
Runs use fp32 (``--amp off``: the same numerics on every CPU) and no loader workers (the images are tiny); on a
shared CPU, ``OMP_NUM_THREADS=1`` avoids oversubscribing it.
Needs the fonts (``data/font_glyphs.py``) or the icon themes (``data/icon_themes.py``); without them it says
so and exits 0 (skipped).

    OMP_NUM_THREADS=1 python benchmarks/bench_transfer.py             # glyphs, 2 recipes x 2 seeds, 64 px
    python benchmarks/bench_transfer.py --set icons --num_epochs 3 --recipes scratch --seeds 0
    python benchmarks/bench_transfer.py --set icons --extra scratch:--weight_decay=0
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

from metric_retrieval.data import font_glyphs, icon_themes  # noqa: E402
from metric_retrieval.models.backbones import imagenet_weight_file  # noqa: E402
from metric_retrieval.training.config import resolve_config  # noqa: E402
from metric_retrieval.training.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"defaults": ["--pretrained", "none", "--eval_every", "0"],
           "scratch": ["--config", str(REPO / "configs/transfer/scratch.yaml")],
           "pretrained": ["--pretrained", "imagenet", "--eval_every", "0"]}
METRICS = ("recall@1", "map@r")


def _glyphs_missing() -> str | None:
    found = len(font_glyphs.font_families())
    return (f"only {found} font families are installed (the glyph set needs {font_glyphs.MIN_FAMILIES}); "
            f"install them with `{font_glyphs.APT_COMMAND}`" if found < font_glyphs.MIN_FAMILIES else None)


def _icons_missing() -> str | None:
    missing = icon_themes.missing_themes()
    return f"icon themes {missing} are not installed; install them with `{icon_themes.APT_COMMAND}`" if missing \
        else None


# set name -> (what is missing to build it, or None; its builder; its description in the table's title)
SETS = {"glyphs": (_glyphs_missing, font_glyphs.build_glyph_dataset, "font-glyph set"),
        "icons": (_icons_missing, icon_themes.build_icon_dataset, "icon-theme set")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="glyphs", choices=sorted(SETS), help="the real-image set to build")
    p.add_argument("--recipes", default="defaults,scratch", help=f"comma-separated: {', '.join(RECIPES)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--num_epochs", type=int, default=None, help="default: the recipe's (train.py's for defaults)")
    p.add_argument("--data", default=None, help="an existing root of --set (default: built in a temp folder)")
    p.add_argument("--extra", action="append", default=[], metavar="RECIPE:--flag=value",
                   help="extra train.py flag for one recipe (repeatable), e.g. scratch:--weight_decay=0")
    p.add_argument("--json", default=None, help="write all runs' numbers to this file")
    return p


def run_one(recipe: str, seed: int, root: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One training run; its untrained and selected-epoch test metrics."""
    extra = [flag for item in args.extra for r, _, flag in [item.partition(":")] if r == recipe]
    epochs = [] if args.num_epochs is None else ["--num_epochs", str(args.num_epochs)]
    argv = ["--data_path", root, *RECIPES[recipe], "--backbone_type", "resnet18", "--image_size",
            str(args.image_size), *epochs, "--seed", str(seed), "--workers", "0",
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


def _mean_std(values: list[float], sign: str = "") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.3f} ± {std:.3f}"


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| recipe | epochs | seeds | untrained R@1 | trained R@1 | gain R@1 | untrained MAP@R | trained MAP@R |",
             "|---|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        rs = [r for r in runs if r["recipe"] == recipe]
        col = {(p, m): [r[p][m] for r in rs] for p in ("untrained", "trained") for m in METRICS}
        gain = [r["trained"]["recall@1"] - r["untrained"]["recall@1"] for r in rs]
        lines.append(f"| {recipe} | {rs[0]['epochs']} | {len(rs)} | {_mean_std(col['untrained', 'recall@1'])} | "
                     f"{_mean_std(col['trained', 'recall@1'])} | {_mean_std(gain, '+')} (min {min(gain):+.3f}) | "
                     f"{_mean_std(col['untrained', 'map@r'])} | {_mean_std(col['trained', 'map@r'])} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    missing, build, title = SETS[args.set]
    problem = missing() if args.data is None else None
    if problem:
        print(f"skipped: {problem}")
        return 0
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if "pretrained" in recipes and imagenet_weight_file("resnet18") is None:
        print("skipped recipe pretrained: no ResNet-18 ImageNet weights in the local torch cache")
        recipes.remove("pretrained")
    with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
        root = args.data or str(build(Path(tmp) / args.set, image_size=64)["root"])
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
    print(f"\n{title}, ResNet-18, {args.image_size} px, held-out test classes:")
    print(table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
