"""Turn a resolved config into objects: datasets, model, criterion, sampler, optimiser, scheduler.

Everything is looked up by name in the packages' registries; nothing here names a paper.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from metric_retrieval import data, losses, models, optim, producers, samplers
from metric_retrieval.data.decoded_cache import plan_cache, split_fixed_resize
from metric_retrieval.training.components import component_kwargs
from metric_retrieval.training.loading import split_classes
from metric_retrieval.training.loss_terms import loss_terms
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.parsing import parse_key_values

log = logging.getLogger("metric_retrieval")


def model_options(cfg: dict[str, Any], for_inference: bool = False) -> dict[str, Any]:
    """Model builder keyword options from the config: ``--pretrained``, the backbone and head flags
    (:func:`models.options_from_config`) and ``--model_option`` (``pretrained`` dropped when rebuilding for
    inference)."""
    opts = {"pretrained": cfg["pretrained"]} if cfg.get("pretrained") is not None else {}
    opts.update(models.options_from_config(cfg))
    opts.update(parse_key_values(cfg.get("model_option") or [], "--model_option"))
    if for_inference:
        opts.pop("pretrained", None)
    return opts


def default_pretrained(cfg: dict[str, Any]) -> Any:
    """``--pretrained`` when the user gave none: random init for the built-in synthetic data (no
    ``--data_path``); for a user's own data the backbone's ImageNet weights if they are in the local torch
    cache (all five seed papers fine-tune them; from random init training may even hurt unseen classes), or
    timm's weights in the Hugging Face cache for a ``timm:<model>`` backbone.

    Raises:
        UserError: ``--data_path`` without ``--pretrained`` and no cached weights to be had: says how to get
            them, or to pass ``--pretrained none`` (e.g. with configs/transfer/scratch.yaml) deliberately.
    """
    if cfg.get("pretrained") is not None or not cfg.get("data_path"):
        return cfg.get("pretrained")
    cached = models.backbones.cached_pretrained(cfg["backbone_type"])
    if cached is not None:
        log.info("--pretrained not given: using the cached pretrained weights of %s (%s)", cfg["backbone_type"],
                 cached[1])
        return cached[0]
    raise UserError(f"--data_path given without --pretrained: "
                    f"{models.backbones.pretrained_download_hint(cfg['backbone_type'])}. To train from random "
                    "weights on purpose, pass --pretrained none (configs/transfer/scratch.yaml is a from-scratch "
                    "recipe)")


def build_model(cfg: dict[str, Any], num_classes: int) -> torch.nn.Module:
    try:
        return models.build_model(cfg["backbone_type"], cfg["head"], cfg["feature_dim"], num_classes,
                                  **model_options(cfg))
    except TypeError as err:
        raise UserError(f"model options: {err}") from None


def build_criterion(cfg: dict[str, Any], num_classes: int, class_counts: torch.Tensor) -> torch.nn.Module:
    try:
        return losses.build_criterion(loss_terms(cfg), num_classes=num_classes, embedding_dim=cfg["feature_dim"],
                                      class_counts=class_counts,
                                      producer=producers.build_producer(cfg, num_classes, cfg["feature_dim"]),
                                      aux_loss_weight=cfg["aux_loss_weight"] if cfg["aux_loss"] else None)
    except (TypeError, ValueError) as err:  # unknown or out-of-range loss / miner / producer settings
        raise UserError(f"loss options: {err}") from None


def build_sampler(cfg: dict[str, Any], labels: torch.Tensor, rank: int, world_size: int):
    try:
        return samplers.build_batch_sampler(cfg["sampler"], labels, cfg["batch_size"], seed=cfg["seed"], rank=rank,
                                            world_size=world_size, **component_kwargs("sampler", cfg))
    except ValueError as err:  # a batch the data cannot fill
        raise UserError(f"--sampler {cfg['sampler']} with --batch_size {cfg['batch_size']} and --samples_per_class "
                        f"{cfg['samples_per_class']}: {err}; lower --batch_size or --samples_per_class") from None


def build_optimizer(cfg: dict[str, Any], model: torch.nn.Module, criterion: torch.nn.Module
                    ) -> torch.optim.Optimizer:
    """Parameter groups: backbone (the backbone's own ``param_groups(lr, weight_decay)`` where it defines
    one, e.g. layer-wise lr decay), head (each with its lr multiplier), head parameters with their own
    multiplier (``Head.lr_multipliers``, no weight decay) and loss-owned parameters (proxies, β)."""
    lr, wd = cfg["lr"], cfg["weight_decay"]
    special = getattr(model.head, "lr_multipliers", {})
    head_params = [(n, p) for n, p in model.head.named_parameters() if p.requires_grad]
    backbone_groups = getattr(model.backbone, "param_groups", None)
    groups = backbone_groups(lr * cfg["backbone_lr_mult"], wd) if backbone_groups is not None else \
        [{"name": "backbone", "params": [p for p in model.backbone.parameters() if p.requires_grad],
          "lr": lr * cfg["backbone_lr_mult"], "weight_decay": wd}]
    groups += [{"name": "head", "params": [p for n, p in head_params if not n.endswith(tuple(special))],
                "lr": lr * cfg["head_lr_mult"], "weight_decay": wd}]
    groups += [{"name": f"head.{suffix}", "params": [p for n, p in head_params if n.endswith(suffix)],
                "lr": lr * cfg["head_lr_mult"] * mult, "weight_decay": 0.0} for suffix, mult in special.items()]
    groups += criterion.param_groups(lr)
    groups = [g for g in groups if g["params"]]
    return optim.OPTIMIZERS.get(cfg["optimizer"])(groups, lr=lr, **component_kwargs("optimizer", cfg))


def build_scheduler(cfg: dict[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule ``--scheduler`` (:mod:`metric_retrieval.optim.schedulers`) behind the optional linear
    warm-up."""
    epochs = cfg["num_epochs"]
    warmup = int(round(cfg["warmup_epochs"] * steps_per_epoch))
    schedule = optim.SCHEDULERS.get(cfg["scheduler"])(total_steps=epochs * steps_per_epoch,
                                                      steps_per_epoch=steps_per_epoch, num_epochs=epochs,
                                                      warmup_steps=warmup, **component_kwargs("scheduler", cfg))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, optim.lr_lambda(schedule, warmup))


def build_datasets(cfg: dict[str, Any], root: str) -> dict[str, Any]:
    """Train split (optionally minus held-out validation classes) and the evaluation splits.

    The datasets yield uint8 images (the preset without normalisation; see :mod:`metric_retrieval.data.batch`);
    ``train_transform`` is kept for ``--decode gpu``, which applies it on the device. ``--decode auto`` turns
    the decoded cache on for every split when it fits (:func:`metric_retrieval.data.decoded_cache.plan_cache`);
    ``decode`` says how each split is decoded, and the choice is logged.
    """
    info = data.get_benchmark(cfg["data_name"], root)
    crop = cfg["crop_type"] == "cropped"
    train_tf = data.build_transform(cfg["transform"], train=True, image_size=cfg["image_size"],
                                    **component_kwargs("transform", cfg))
    eval_tf = data.build_transform(cfg["transform"], train=False, image_size=cfg["image_size"])
    decode = cfg["decode"] if cfg["decode"] in data.DECODERS else "fast"  # auto and gpu start from fast
    kw = {"crop": crop, "skip_bad_images": cfg["skip_bad_images"], "decode": decode,
          "reader_options": component_kwargs("data_name", cfg)}
    train = data.build_dataset(info.name, root, info.train_split, transform=train_tf, **kw)
    evals = {split: data.build_dataset(info.name, root, split, transform=eval_tf, **kw)
             for split in info.eval_splits}
    out = {"info": info, "train": train, "test": evals, "val": None, "train_transform": train_tf}
    if cfg["val_classes"] > 0:
        out["train"], out["val"] = split_classes(train, cfg["val_classes"], eval_transform=eval_tf)
        log.info("--val_classes %g: held out %d of %d training classes (%d images) for validation; the epoch "
                 "is selected by val/%s", cfg["val_classes"], out["val"].num_classes, train.num_classes,
                 len(out["val"]), cfg["select_metric"])
    parts = {"train": (out["train"], train_tf), **{s: (ds, eval_tf) for s, ds in evals.items()}}
    if out["val"] is not None:
        parts["val"] = (out["val"], eval_tf)
    note = ""
    if cfg["decode"] == "auto":
        use_cache, note = plan_cache(list(parts.values()))
        if use_cache:
            for ds in (train, *evals.values()):
                ds.enable_cache()
    out["decode"] = {split: _decoded_as(cfg["decode"], split, train if split in ("train", "val") else ds, tf)
                     for split, (ds, tf) in parts.items()}
    log.info("decode %s: %s%s", cfg["decode"], ", ".join(f"{k} {v}" for k, v in out["decode"].items()),
             f" ({note})" if note else "")
    return out


def _decoded_as(decode: str, split: str, dataset: Any, transform: Any) -> str:
    """How a split is decoded: gpu (training only), cache where its pipeline has a cacheable start, else as built."""
    if decode == "gpu" and split == "train":
        return "gpu"
    if dataset.decode == "cache":
        return "cache" if split_fixed_resize(transform)[0] is not None else "fast"
    return dataset.decode
