"""Run configuration: argparse flags, YAML files and their merge into one resolved config.

Precedence (lowest to highest): flag defaults < ``--config FILE`` (YAML) < flags given on the command line.
The YAML file uses the flag names as keys (``gd_config: SG``), may start from another file
(``base: base.yaml``), and may use list-valued nodes where a flag can only say less
(``loss: [{name: ls_ce, smoothing: 0.1}, {name: batch_hard_triplet, margin: 0.1}]``). Components may also
be given in the per-component form, ``head: {name: NAME, OPTION: VALUE}``, ``miner: {name: NAME, OPTION: VALUE}``
or ``PRODUCER: {OPTION: VALUE}`` (:func:`flatten_component_nodes`).
Unknown keys and incompatible combinations raise :class:`UserError` naming them; the resolved config is
saved with every run (``config.yaml``) and inside every checkpoint.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from metric_retrieval import producers
from metric_retrieval.training.components import KINDS, add_component_args, kind
from metric_retrieval.training.flags import AMP_CHOICES, train_flag_groups  # noqa: F401  (test.py imports AMP_CHOICES from here)
from metric_retrieval.training.validate import check_config, unused_keys
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import atomic_write_text
from metric_retrieval.utils.options import Option, options_of
from metric_retrieval.utils.parsing import parse_number_list  # noqa: F401  (trainer.py and index.py import it from here)

# Without --data_path the run uses the built-in synthetic dataset; these settings (unless given by a flag or
# the YAML file) make that default run a one-minute CPU job from random weights. Multi-similarity learns
# fastest from scratch here (Recall@1 0.50 untrained -> ~0.69 after 4 epochs; semihard triplet reaches ~0.57).
QUICK_RECIPE = {"image_size": 64, "num_epochs": 4, "batch_size": 32, "samples_per_class": 4, "lr": 3e-4,
                "loss": "multi_similarity", "miner": "none", "milestones": "0.75", "eval_every": 1}
# Where and how a run was started, not what it computes: left out of its config.yaml.
RUN_PLACE = ("config", "output_dir", "resume", "overwrite")

# With --data_path and pretrained weights (any --pretrained but none) and no --config file, these settings (unless
# given by a flag) are the recipe a user's own photos start from: the best row of the bird benchmark
# (benchmarks/bench_birds.py, docs/birds.md; configs/birds/xbm_multi_similarity.yaml). AdamW at 2e-4 for the
# pretrained trunk and the new head layers alike (10x for the head cost CGD and CLF), a quarter-epoch linear
# warm-up, cosine decay; the trunk's trained BatchNorm statistics kept (batches of 8 classes x 4 images are too
# small to re-estimate them); GeM on the trunk's map; multi-similarity over the batch and a cross-batch memory of
# the last 1,024 embeddings, filled from step 10. The default augmentation (cgd: resize to 8/7, random crop, flip)
# keeps the whole object at small sizes. 5 epochs, not 20: a pretrained trunk is fine-tuned, not trained (with no
# flags on cub100 at 224 px, 20 epochs lost test R@1 after every epoch; 5 end above the bench's best row).
TRANSFER_RECIPE = {"optimizer": "adamw", "lr": 2e-4, "head_lr_mult": 1.0, "weight_decay": 1e-4, "num_epochs": 5,
                   "scheduler": "cosine", "warmup_epochs": 0.25, "frozen_bn": True, "head": "gem",
                   "loss": [{"name": "multi_similarity", "memory_size": 1024, "memory_warmup": 10}],
                   "miner": "none"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``train.py`` parser: the generic flags (:mod:`metric_retrieval.training.flags`; defaults follow the
    seed repositories where they exist), then each registered component's own options from its declaration
    (:func:`metric_retrieval.training.components.add_component_args`)."""
    p = argparse.ArgumentParser(description="Train a retrieval model", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="python train.py --list prints every registered component with its options")
    p.add_argument("--config", default=None, help="YAML file with any of these options (flags override it)")
    for title, options in train_flag_groups():
        group = p.add_argument_group(title)
        for option in options:
            option.add_to(group)
    add_component_args(p)
    return p


def _explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the options the user typed (so they beat the YAML file)."""
    shadow = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
                kwargs["action"] = "store_const"
                kwargs["const"] = True
                shadow.add_argument(*action.option_strings, **kwargs)
            else:
                shadow.add_argument(*action.option_strings, nargs=action.nargs, **kwargs)
    known, _ = shadow.parse_known_args(argv)
    return set(vars(known))


PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # configs/ of the checkout links here


def find_config(name: str | Path) -> Path:
    """The file a ``--config`` names: the path itself, else the recipe of that name shipped in the package
    (``configs/cgd/cars.yaml`` or ``cgd/cars.yaml``), so an installed package runs the paper recipes from any
    folder."""
    path = Path(name)
    if path.is_file() or path.is_absolute():
        return path
    packaged = PACKAGED_CONFIGS / (Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path)
    if packaged.is_file():
        return packaged
    shipped = sorted(str(p.relative_to(PACKAGED_CONFIGS)) for p in PACKAGED_CONFIGS.glob("*/*.yaml"))
    raise UserError(f"--config: file not found: {name} (nor a recipe shipped with the package; they are "
                    f"{', '.join(shipped[:6])}, ... {len(shipped)} in all, under {PACKAGED_CONFIGS})")


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file; a ``base: other.yaml`` key (relative to the file) is loaded first and overridden."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config: file not found: {path}")
    if path.resolve() in _seen:
        raise UserError(f"--config: {path} includes itself through 'base:'")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config: {path} is not valid YAML: {err}") from None
    if not isinstance(content, dict):
        raise UserError(f"--config: {path} must hold a mapping of option: value, got {type(content).__name__}")
    base = content.pop("base", None)
    if base is None:
        return content
    return {**load_yaml(path.parent / base, (*_seen, path.resolve())), **content}


# flags whose YAML value may be a component node {name: ..., option: value, ...} (a loss is a list of them)
COMPONENT_KEYS = tuple(k.key for k in KINDS if k.key not in (None, "loss"))
MODEL_KEYS = ("backbone_type", "head")  # the model parts: their options that are no flags are model options
NODE_KEYS = ("miner",)  # kept as a node: the loss terms take it whole (metric_retrieval.training.loss_terms)


def _node_options(key: str, node: dict[str, Any], path: str) -> dict[str, Option] | None:
    """The options component ``node`` of kind ``key`` declares (None: an unknown name, which the name checks
    report); an option it does not declare, or a model option's bad value, is a :class:`UserError`."""
    registry = kind(key).registry
    if node["name"] not in registry:
        return None
    options = {o.name: o for o in options_of(registry.get(node["name"]))}
    where = f"--config {path}: {key} {node['name']}"
    for option, value in node.items():
        if option != "name" and option not in options:
            raise UserError(f"{where} has no option {option!r}; its options: {', '.join(options) or 'none'}")
        if option in options and not options[option].flag and (p := options[option].problem(
                value, f"{where} option {option}")):
            raise UserError(p)
    return options


def flatten_component_nodes(file_cfg: dict[str, Any], keys: set[str], path: str) -> dict[str, Any]:
    """The per-component YAML form in flat keys.

    ``head: {name: H, pooling: max}`` → ``head: H, pooling: max``; a model part's option that is no flag of its
    own (``head: {name: gem, gem_p: 4}``) becomes a ``model_option`` (``gem_p=4``); a ``miner`` node stays a node
    (the loss terms' miner); an embedding producer P's node ``P: {size: 3, other: true}`` →
    ``P: true, P_size: 3, other: true`` (``P_<option>`` if that flag exists, else ``<option>``). Every option
    must be one the named component declares.
    """
    out: dict[str, Any] = {}
    for key, value in file_cfg.items():
        if not isinstance(value, dict):
            out[key] = value
        elif key in COMPONENT_KEYS:
            if "name" not in value:
                raise UserError(f"--config {path}: {key} node {value} needs a 'name'")
            options = _node_options(key, value, path)
            out[key] = dict(value) if key in NODE_KEYS else value["name"]
            for option, v in value.items():
                if option == "name" or options is None or key in NODE_KEYS:
                    continue
                if options[option].flag and option in keys:
                    out[option] = v
                elif key in MODEL_KEYS and options[option].to_builder:
                    out.setdefault("model_option", list(file_cfg.get("model_option") or []))
                    out["model_option"].append(f"{options[option].kwarg}={json.dumps(v)}")  # JSON is YAML
                else:
                    raise UserError(f"--config {path}: {key} {value['name']} has no option {option!r} that a "
                                    "flag sets")
        elif key == "loss":  # one term: the list form with one entry
            out[key] = [value]
        elif key in producers.PRODUCERS:
            out[key] = True
            for option, v in value.items():
                flag = f"{key}_{option}" if f"{key}_{option}" in keys else option
                if flag not in keys:
                    raise UserError(f"--config {path}: {key} has no option {option!r}")
                out[flag] = v
        else:
            out[key] = value
    return out


def resolve_config(argv: list[str] | None = None,
                   parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """Parse ``argv`` and merge it with the YAML file it names; returns the validated config dict."""
    parser = parser or get_args_parser()
    args = parser.parse_args(argv)
    cfg = vars(args)
    explicit = _explicit_flags(parser, argv)
    file_cfg = flatten_component_nodes(load_yaml(find_config(args.config)), set(cfg), args.config) if args.config \
        else {}
    unknown = sorted(set(file_cfg) - set(cfg))
    if unknown:
        raise UserError(f"--config {args.config}: unknown keys {unknown}; valid keys are the train.py "
                        "flag names (see train.py --help)")
    cfg.update({k: _check_file_value(parser, k, v, args.config) for k, v in file_cfg.items() if k not in explicit})
    if not cfg["data_path"]:
        cfg.update({k: v for k, v in QUICK_RECIPE.items() if k not in explicit and k not in file_cfg})
    elif not args.config and cfg["pretrained"] != "none":  # a --config file is a whole recipe of its own
        cfg.update({k: v for k, v in TRANSFER_RECIPE.items() if k not in explicit})
    validate_config(cfg)
    check_config(cfg, explicit | set(file_cfg))
    return cfg


def _check_file_value(parser: argparse.ArgumentParser, key: str, value: Any, path: str) -> Any:
    """A YAML value checked (and converted) like the flag of the same name would check it."""
    action = next(a for a in parser._actions if a.dest == key)
    where = f"--config {path}: {key}"
    if value is None or key == "loss" or (key in NODE_KEYS and isinstance(value, dict)):
        return value  # loss: a name or a list of term dicts; a miner node (both checked with the loss terms)
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of KEY=VALUE strings, got {value!r}")
        return value
    if isinstance(value, (bool, list, dict)):
        raise UserError(f"{where} must be a single value, got {value!r}")
    converted = _convert(action.type, value) if action.type is not None else value
    if converted is None:
        raise UserError(f"{where} must be {'an integer' if action.type is int else 'a number'}, got {value!r}")
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted


def _convert(kind: type, value: Any) -> Any:
    """``kind(value)``, or None when it does not fit (an int flag given 8.5 is rejected, not truncated)."""
    try:
        number = float(value)
        if kind is int:
            return int(number) if number == int(number) else None
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return None


def gpu_decode_unavailable(device: str) -> bool:
    """Whether ``--device`` leaves ``--decode gpu`` without a CUDA device to decode on."""
    import torch

    return device.startswith("cpu") or (device == "auto" and not torch.cuda.is_available())


def validate_config(cfg: dict[str, Any]) -> None:
    """Reject combinations that cannot work, naming the flags involved (each value's own range is its
    declaration's: :func:`metric_retrieval.training.validate.number_problems`)."""
    problems = []
    if not cfg["data_path"] and cfg["data_name"] != "folder":
        problems.append(f"--data_name {cfg['data_name']} needs --data_path (without it the built-in synthetic "
                        "dataset is used)")
    if cfg["select_on"] == "val" and cfg["val_classes"] == 0:
        problems.append("--select_on val needs --val_classes > 0")
    problems += producers.producer_conflicts(cfg)
    if cfg["aux_loss"] and not any(producers.PRODUCERS.get(n).enabled(cfg) for n in producers.PRODUCERS.names()):
        problems.append("--aux_loss only applies with an embedding producer (" +
                        ", ".join(f"--{n}" for n in producers.PRODUCERS.names()) + ")")
    if cfg["compile"] and cfg["deterministic"]:
        problems.append("--compile and --deterministic cannot be combined")
    if cfg["decode"] == "gpu" and gpu_decode_unavailable(cfg["device"]):
        problems.append(f"--decode gpu decodes training images on a CUDA GPU, but --device {cfg['device']} has none; "
                        "use --decode auto (the default) or fast")
    if problems:
        raise UserError("invalid configuration:\n  " + "\n  ".join(problems))


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a run's ``config.yaml`` holds: the resolved config without the keys that only place the run
    (:data:`RUN_PLACE`) and those no selected component reads (:func:`unused_keys`), so that the file given
    back as ``--config`` is a valid input that computes the same run, in a new run folder."""
    unused = unused_keys(cfg)
    return {k: v for k, v in cfg.items() if k not in RUN_PLACE and k not in unused}


def save_config(cfg: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(run_config(cfg), sort_keys=False))
