"""Checks that run before any heavy work: numbers, component names, metric names, the run folder, and the data.

``check_config`` needs only the resolved config (it runs inside ``resolve_config``, before a dataset is read
or a model built); ``check_splits`` runs once the datasets are listed (file names and labels only, no pixels),
before the model is built and the first step is taken. Every problem names the flag (or YAML key, which has the
same name) and what was expected; problems are collected and reported together.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from metric_retrieval import producers
from metric_retrieval.losses.base import reads_logits, takes_miner
from metric_retrieval.training.components import (
    check_selected,
    model_option_problems,
    option_problems,
    samples_whole_classes,
    unused_options,
)
from metric_retrieval.training.flags import TEST_OPTIONS, train_flag_groups
from metric_retrieval.training.loss_terms import term_problems
from metric_retrieval.training.run_identity import RUN_FILE
from metric_retrieval.training.run_lock import LOCK_NAME
from metric_retrieval.utils.errors import UserError

# Files a run writes that are worth keeping; a folder holding any of them (or any file a run does not
# write) is refused without --resume or --overwrite.
# what a run that failed at its start leaves
RUN_RECORDS = {"train.log", "config.yaml", "env.json", "tb", LOCK_NAME, RUN_FILE}
METRIC_NAME = re.compile(r"^(recall@[1-9][0-9]*|precision@1|r_precision|map@r)$")

def number_problems(cfg: dict[str, Any], explicit: Iterable[str] = ()) -> list[str]:
    """Generic flags whose value breaks its declaration (:mod:`metric_retrieval.training.flags`: non-finite,
    out of range, not a choice; the flags and the YAML keys alike, as both end up in ``cfg``), and components'
    options that are out of range or that no selected component takes (:func:`option_problems`)."""
    problems = [p for _, options in train_flag_groups() for option in options
                if (p := option.problem(cfg[option.name]))]
    problems += option_problems(cfg, explicit)
    return problems


def _names(text: Any) -> list[str]:
    if isinstance(text, list):  # a YAML list of loss terms
        return [str(t.get("name")) for t in text if isinstance(t, dict)]
    return [n.strip() for n in str(text).split("+") if n.strip()]


def unknown_names(lookups: Iterable[tuple[Any, str, list[str]]]) -> list[str]:
    """``(registry, flag, names)`` → one problem per name that is not registered, listing the choices."""
    return [f"--{flag}: unknown {registry.kind} {name!r}; choose one of: {', '.join(registry.names())}"
            for registry, flag, names in lookups for name in names if name not in registry]


def name_problems(cfg: dict[str, Any], explicit: Iterable[str] = ()) -> list[str]:
    """Unknown component names, and components that would be silently unused."""
    from metric_retrieval import data, losses, models, samplers

    lookups = [(data.DATASETS, "data_name", [cfg["data_name"]]), (data.TRANSFORMS, "transform", [cfg["transform"]]),
               (models.BACKBONES, "backbone_type", [cfg["backbone_type"]]), (models.HEADS, "head", [cfg["head"]]),
               (samplers.SAMPLERS, "sampler", [cfg["sampler"]]), (losses.LOSSES, "loss", _names(cfg["loss"]))]
    miner = cfg["miner"]["name"] if isinstance(cfg["miner"], dict) else cfg["miner"]  # a name or a YAML node
    if miner and miner != "none":
        lookups.append((losses.MINERS, "miner", [miner]))
    problems = unknown_names(lookups)
    known = [n for n in _names(cfg["loss"]) if n in losses.LOSSES]
    if problems or not known:
        return problems
    problems += term_problems(cfg)
    mined = [n for n in known if takes_miner(losses.LOSSES.get(n))]
    if "miner" in explicit and miner not in (None, "none") and not mined:
        problems.append(f"--miner {miner}: no loss in --loss {'+'.join(known)} takes a miner "
                        "(proxy / classification losses and batch-hard triplet mine internally); use --miner none")
    producing = [n for n in producers.PRODUCERS.names() if producers.PRODUCERS.get(n).enabled(cfg)]
    if producing and all(reads_logits(losses.LOSSES.get(n)) for n in known):
        problems.append(f"--{producing[0]} generates embeddings for embedding losses, but --loss {'+'.join(known)} "
                        f"only reads classifier logits; add an embedding loss (e.g. +triplet) or drop --{producing[0]}")
    return problems


def unused_keys(cfg: dict[str, Any]) -> set[str]:
    """Config keys that the selected components never read: the options of components not selected, and
    ``miner`` when no loss takes one. Given explicitly, each would be refused as having no effect."""
    from metric_retrieval import losses

    unused = unused_options(cfg)
    miner = cfg["miner"]["name"] if isinstance(cfg.get("miner"), dict) else cfg.get("miner")
    known = [n for n in _names(cfg["loss"]) if n in losses.LOSSES]
    if miner not in (None, "none") and known and not any(takes_miner(losses.LOSSES.get(n)) for n in known):
        unused.add("miner")
    return unused


def metric_problems(cfg: dict[str, Any]) -> list[str]:
    """``--select_metric`` must be a metric name evaluation computes (the K is checked against the data later)."""
    name = cfg["select_metric"]
    if METRIC_NAME.match(name):
        return []
    hint = f" (did you mean {name.lower()!r}?)" if METRIC_NAME.match(name.lower()) else ""
    return [f"--select_metric {name!r} is not a metric name{hint}; use recall@K (K one of --recalls), "
            "precision@1, r_precision or map@r"]


def check_config(cfg: dict[str, Any], explicit: Iterable[str] = ()) -> None:
    """All data-independent checks; raises one :class:`UserError` listing every problem."""
    explicit = set(explicit)
    problems = (number_problems(cfg, explicit) + name_problems(cfg, explicit) + metric_problems(cfg)
                + check_selected(cfg))
    if problems:
        raise UserError("invalid configuration:\n  " + "\n  ".join(problems))
    cfg["output_dir"] = check_output_dir(cfg)


def default_run_dir(cfg: dict[str, Any], parent: Path = Path("runs")) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<backbone>-<head>`` (timm's naming), numbered ``-2``, ``-3``... if taken."""
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg['backbone_type']}-{cfg['head']}"
    path, n = parent / stem, 1
    while path.exists():
        n += 1
        path = parent / f"{stem}-{n}"
    return path


def check_output_dir(cfg: dict[str, Any]) -> str:
    """The run folder to write: a fresh default one, or ``--output_dir`` if it is safe to write into.

    A folder that already holds a run (or anything a run does not write) is refused unless ``--resume``
    continues that run or ``--overwrite`` says to replace it, so no result is lost by re-running a command.
    """
    if not cfg["output_dir"]:
        if cfg["resume"] == "latest":
            raise UserError("--resume latest needs --output_dir (the run folder to continue)")
        return str(default_run_dir(cfg))
    out = Path(cfg["output_dir"])
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file, not a folder")
    existing = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--output_dir {out}: cannot write in {existing} (permission denied or not a folder)")
    held = sorted(p.name for p in out.iterdir() if p.name not in RUN_RECORDS) if out.is_dir() else []
    if held and not cfg["resume"] and not cfg.get("overwrite"):
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise UserError(f"--output_dir {out} already holds a run ({shown}); continue it with --resume latest, "
                        "replace it with --overwrite, or choose another --output_dir (without one, each run "
                        "gets its own folder under runs/)")
    return str(out)


def check_splits(cfg: dict[str, Any], splits: dict[str, Any], ks: list[int]) -> list[str]:
    """Degenerate data that would train to meaningless numbers; returns warnings, raises on errors."""
    train = splits["train"]
    problems, warnings = [], []
    if train.num_classes < 2:
        problems.append(f"the training split has {train.num_classes} class; metric learning needs at least 2")
    val = splits["val"]
    if val is not None and val.num_classes < 2:
        problems.append(f"--val_classes {cfg['val_classes']:g} holds out {val.num_classes} class of "
                        f"{train.num_classes + val.num_classes}; a validation split needs at least 2 "
                        "(raise --val_classes)")
    for name, dataset in [*splits["test"].items(), *([("val", val)] if val is not None else [])]:
        if len(dataset) == 0:
            problems.append(f"the {name} split has no images (check its list file / folder)")
    problems += _positive_problems(splits)
    select = cfg["select_metric"]
    if select.startswith("recall@") and int(select.split("@")[1]) not in ks:
        problems.append(f"--select_metric {select} is not computed: --recalls gives K = {ks}")
    if problems:
        raise UserError("unusable data:\n  " + "\n  ".join(problems))
    counts = torch.bincount(train.labels, minlength=train.num_classes)
    small = int((counts < cfg["samples_per_class"]).sum())
    if samples_whole_classes(cfg) and small:
        warnings.append(f"--samples_per_class {cfg['samples_per_class']}: {small} of {train.num_classes} training "
                        f"classes have fewer images (smallest {int(counts.min())}); their batches hold fewer "
                        "positives than asked")
    return warnings


def _positive_problems(splits: dict[str, Any]) -> list[str]:
    """Evaluation sets in which no query has a relevant item (every metric would be NaN)."""
    test = splits["test"]
    if "query" in test:
        query, gallery = test["query"].labels, test["gallery"].labels
        if len(query) and len(gallery) and not torch.isin(query, gallery).any():
            return ["no query class appears in the gallery split: every metric would be undefined"]
        return []
    out = []
    for name, dataset in [*test.items(), ("val", splits["val"])]:
        if dataset is None or not len(dataset):
            continue
        if int(torch.bincount(torch.as_tensor(dataset.labels)).max()) < 2:
            out.append(f"every class of the {name} split has a single image: leave-one-out retrieval has no "
                       "positives, so every metric would be undefined")
    return out


def split_sizes(splits: dict[str, Any]) -> str:
    """``train 120 images / 20 classes, val ..., test ...`` for the log."""
    parts = {"train": splits["train"], **({"val": splits["val"]} if splits["val"] is not None else {}),
             **splits["test"]}
    return ", ".join(f"{name} {len(ds)} images / {len(torch.unique(torch.as_tensor(ds.labels)))} classes"
                     for name, ds in parts.items())


def output_file_problem(flag: str, path: str | None) -> str | None:
    """A file to be written that is a folder, or whose folder cannot be created, is refused before any work."""
    if not path:
        return None
    target = Path(path)
    if target.is_dir():
        return f"{flag} {path} is a folder; give a file name (e.g. {target / 'out'})"
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{flag} {path}: cannot write in {parent}"
    return None


def check_test_args(args: Any) -> None:
    """The ``eval`` / ``query`` commands' numbers (as declared: :data:`metric_retrieval.training.flags.TEST_OPTIONS`),
    output files, input files and off-the-shelf model, checked before a model is built or an image read. A flag
    the command does not have is not checked."""
    given = vars(args)
    problems = [p for option in TEST_OPTIONS if option.name in given and (p := option.problem(given[option.name]))]
    problems += [p for p in (output_file_problem("--json", given.get("json")),
                             output_file_problem("--learn_whitening", given.get("learn_whitening"))) if p]
    if "backbone_type" in given:
        problems += off_the_shelf_problems(args)
    for flag in ("whitening", "checkpoint", "data_base", "attention_weights", "region_whitening"):
        value = given.get(flag)
        if value and not Path(value).is_file():
            problems.append(f"--{flag} {value}: no such file")
    if problems:
        raise UserError("invalid arguments:\n  " + "\n  ".join(problems))


OFF_THE_SHELF = ("backbone_type", "head", "feature_dim", "pretrained", "model_option")


def off_the_shelf_problems(args: Any) -> list[str]:
    """``test.py``'s off-the-shelf model flags: refused beside ``--checkpoint`` (which carries its own model);
    without one, unknown names and ``--model_option`` keys or values the backbone and head do not declare."""
    from metric_retrieval import models

    given = [f"--{flag}" for flag in OFF_THE_SHELF if getattr(args, flag)]
    if args.checkpoint:
        return [f"{', '.join(given)}: describe an off-the-shelf model, but --checkpoint {args.checkpoint} carries "
                "its own; drop them"] if given else []
    if not args.backbone_type or not args.head:
        return []
    return (unknown_names([(models.BACKBONES, "backbone_type", [args.backbone_type]),
                           (models.HEADS, "head", [args.head])])
            or model_option_problems(vars(args)))
