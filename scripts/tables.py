"""Runs the rows of a paper-table script (``scripts/*.sh``): for real, as a dry run, or as a smoke test.

The shell scripts list one row per line on stdin, ``NAME<TAB>ENTRY ARGS``, where ENTRY is ``train`` or
``eval`` (``test.py --eval``) and ARGS may contain ``{root}`` (the data root given to the script).

- ``--mode run``: each row as its own ``python train.py ...`` process, run folder ``runs/<table>/<NAME>``;
- ``--mode dry``: prints each command and the hyper-parameters it resolves to, runs nothing;
- ``--mode smoke``: every row in this process for a few steps on synthetic data in the dataset's real
  layout (small images, random weights), then ``N passed, M failed``.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metric_retrieval.training.config import resolve_config  # noqa: E402

SMOKE = {"num_epochs": 1, "max_steps_per_epoch": 2, "image_size": 32, "workers": 0, "eval_batch_size": 64,
         "pretrained": "none", "no_tensorboard": True, "eval_every": 1}
# The smoke datasets: 2 images a class, 16 classes (items) a side of the split, so that every sampler still draws
# two full smoke batches and evaluation embeds 32 images instead of the layouts' 200-300; landmarks: 8 distractors.
SMOKE_DATA = {"cub": {"num_classes": 32}, "cars": {"num_classes": 32}, "sop": {"num_classes": 32},
              "inshop": {"num_items": 32}, "oxford5k": {"num_distractors": 8}, "paris6k": {"num_distractors": 8}}
SUMMARY_KEYS = ("data_name", "crop_type", "backbone_type", "head", "gd_config", "pooling", "feature_dim",
                "loss", "miner", "sampler", "samples_per_class", "batch_size", "optimizer", "lr", "weight_decay",
                "num_epochs", "milestones", "gamma", "transform", "das", "das_num_produce", "das_dfs_num_scale",
                "das_dfs_scale_left", "das_dfs_scale_right", "das_mts_scale", "detach", "aux_loss")


def read_rows(stream) -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in stream:
        if line.strip():
            name, _, command = line.rstrip("\n").partition("\t")
            entry, *args = shlex.split(command)
            rows.append((name, entry, args))
    return rows


def summary(cfg: dict[str, Any]) -> str:
    return " ".join(f"{k}={cfg[k]}" for k in SUMMARY_KEYS if k in cfg and cfg[k] not in (None, False))


def dry_run(table: str, rows, root: str, extra: list[str]) -> int:
    for name, entry, args in rows:
        args = [a.replace("{root}", root or "DATA_ROOT") for a in args] + extra
        script = "train.py" if entry == "train" else "test.py --eval"
        print(f"# {table}/{name}\npython {script} {shlex.join(args)}")
        if entry == "train":
            print(f"#   {summary(resolve_config(args))}")
    return 0


def real_run(table: str, rows, root: str, extra: list[str]) -> int:
    for name, entry, args in rows:
        args = [a.replace("{root}", root) for a in args] + extra
        if entry == "train":
            command = [sys.executable, "train.py", *args, "--output_dir", f"runs/{table}/{name}"]
        else:
            command = [sys.executable, "test.py", "--eval", *args, "--json", f"runs/{table}/{name}.json"]
        print(f"== {table}/{name}: {shlex.join(command)}", flush=True)
        if subprocess.run(command, cwd=REPO).returncode:
            print(f"{table}/{name} failed; stopping", file=sys.stderr)
            return 1
    return 0


def smoke_run(table: str, rows, extra: list[str]) -> int:
    """Every row for two steps on synthetic data in a fresh temporary folder; returns 1 if any row fails."""
    with tempfile.TemporaryDirectory(prefix="metric_retrieval_smoke-") as scratch:  # own folder per run, removed
        return _smoke_rows(table, rows, extra, Path(scratch))


def _smoke_rows(table: str, rows, extra: list[str], cache: Path) -> int:
    from metric_retrieval import data
    from metric_retrieval.retrieval.eval_commands import evaluate_checkpoint
    from metric_retrieval.training.trainer import train

    test_cli = _load_test_cli()
    passed, failed = 0, []
    for name, entry, args in rows:
        try:
            if entry == "train":
                cfg = resolve_config([a.replace("{root}", "UNUSED") for a in args] + extra)
                layout = data.get_benchmark(cfg["data_name"]).name
                cfg.update(SMOKE, data_path=str(smoke_dataset(layout, cache)),
                           output_dir=str(cache / "runs" / table / name),
                           batch_size=_smoke_batch(cfg), checkpoint_every=0, resume=None)
                train(cfg)
                for weights in Path(cfg["output_dir"]).glob("*.pth"):  # checkpoints are 50-200 MB a row
                    weights.unlink()
            else:
                eval_args = test_cli.get_args_parser().parse_args(["--eval", *args, *extra])
                eval_args.data_path = str(smoke_dataset(data.get_benchmark(eval_args.data_name).name, cache))
                eval_args.imsize, eval_args.pretrained, eval_args.workers = 64, None, 0
                evaluate_checkpoint(eval_args)
            passed += 1
            print(f"ok   {table}/{name}", flush=True)
        except Exception:  # a smoke test reports every failing row, then fails as a whole
            failed.append(name)
            print(f"FAIL {table}/{name}\n{traceback.format_exc()}", flush=True)
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


def smoke_dataset(layout: str, cache: Path) -> Path:
    """A miniature synthetic copy of a benchmark in its real layout (made once, then reused)."""
    from metric_retrieval import data

    return Path(data.ensure_synthetic(layout, cache / layout, image_size=(32, 32), images_per_class=2, seed=0,
                                      **SMOKE_DATA.get(layout, {})))


def _load_test_cli():
    """``test.py`` as a module (the name ``test`` would otherwise resolve to Python's own test package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_cli", REPO / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smoke_batch(cfg: dict[str, Any]) -> int:
    """A small batch that keeps the sampler's classes-per-batch structure."""
    if cfg["sampler"] == "shuffle":
        return 16
    return 4 * cfg["samples_per_class"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--mode", choices=("run", "dry", "smoke"), required=True)
    parser.add_argument("--data_root", default="")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="extra flags for every row, after --")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    rows = read_rows(sys.stdin)
    if args.mode == "dry":
        return dry_run(args.table, rows, args.data_root, extra)
    if args.mode == "smoke":
        return smoke_run(args.table, rows, extra)
    return real_run(args.table, rows, args.data_root, extra)


if __name__ == "__main__":
    sys.exit(main())
