"""The training run: set-up from a resolved config, the epoch loop, evaluation, checkpoints, logging.

One step: batch → model → (embedding, logits) → gathered across ranks → criterion (miners, losses and
embedding producers see the global batch) → backward → optimiser and per-step scheduler. ``train`` reads top to bottom
like torchvision's reference ``main``; the stages are the functions below it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metric_retrieval import data, models
from metric_retrieval.data.batch import DeviceInput
from metric_retrieval.data.device_decode import DeviceDecoder, EncodedFiles
from metric_retrieval.losses.base import reads_logits
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.training import builders
from metric_retrieval.training.checkpoint import (
    BEST_DATABASE,
    BEST_MODEL,
    LATEST,
    PREVIOUS,
    atomic_save,
    load_resume,
    model_config,
    rng_state,
    set_rng_state,
    weights_digest,
)
from metric_retrieval.training.config import parse_number_list, save_config
from metric_retrieval.training.distributed import (
    DistInfo,
    all_gather_no_grad,
    barrier,
    broadcast_object,
    cleanup_distributed,
    collective_timed_out,
    gather_objects,
    gather_with_grad,
    init_distributed,
)
from metric_retrieval.training.evaluate import evaluate_split
from metric_retrieval.training.loading import SeededBatches, train_loader
from metric_retrieval.training.run_identity import claim_run
from metric_retrieval.training.run_lock import RunLock, remove_stale_temporaries
from metric_retrieval.training.run_log import RunLog, run_logging
from metric_retrieval.training.runtime import AMP_DTYPES, resolve_amp, resolve_device
from metric_retrieval.training.signals import Stopped, StopSignals
from metric_retrieval.training.validate import check_splits, split_sizes
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import DiskFullError, atomic_write_text
from metric_retrieval.utils.progress import bar_interval

log = logging.getLogger("metric_retrieval")
# Settings a resumed run may change without changing what it computes (or that only extend it).
RESUME_MAY_CHANGE = {"resume", "output_dir", "workers", "device", "num_epochs", "eval_every", "checkpoint_every",
                     "no_tensorboard", "eval_batch_size", "knn_backend", "eval_chunk_size", "config",
                     "compile", "recalls", "select_metric", "select_on", "pretrained", "dist_timeout", "overwrite"}
# The remedies a divergence error suggests: a resume may change them, and from then on computes differently.
RESUME_REMEDIES = {"lr", "grad_clip", "amp"}
SAME_PIXELS = {"fast", "cache", "auto"}  # --decode values that give bit-identical images


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept untouched."""


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # epoch to run (0-based)
    step: int = 0  # steps of that epoch already done
    global_step: int = 0
    loss_sum: float = 0.0  # sum of the losses of the epoch's steps done so far (its mean survives a resume)
    best: float = float("-inf")
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    untrained: dict[str, dict[str, float]] | None = None  # metrics of the model before its first step


@dataclass
class TrainContext:
    """Everything one epoch of training touches (built once by ``train``; saved/restored by checkpoints)."""

    cfg: dict[str, Any]
    model: torch.nn.Module  # the bare model (evaluation, checkpoints)
    train_model: torch.nn.Module  # what the step calls: the model, or its DDP / compiled wrapper
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: Any
    device: torch.device
    dist: DistInfo
    num_classes: int
    steps_per_epoch: int
    run_log: RunLog
    device_input: DeviceInput  # loader batch → normalised network input on the device
    progress: Progress = field(default_factory=Progress)
    stop: StopSignals | None = None  # SIGTERM/SIGINT seen between steps (None: not watched)
    run_id: str = ""  # written into every checkpoint (metric_retrieval.training.run_identity)

    @property
    def latest(self) -> Path:
        return Path(self.cfg["output_dir"]) / LATEST


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def default_data(cfg: dict[str, Any]) -> str:
    """The built-in synthetic dataset (``data.ensure_default_dataset``) when no ``--data_path`` is given."""
    if cfg["data_path"]:
        return cfg["data_path"]
    cfg["data_name"] = "folder"
    root = data.ensure_default_dataset()
    log.info("no --data_path: using the built-in synthetic dataset at %s", root)
    return str(root)


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run a whole training; returns the final and best metrics. ``cfg`` comes from ``resolve_config``."""
    device = resolve_device(cfg["device"])
    dist_info = init_distributed(device, cfg["dist_timeout"])
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    cfg["amp"] = resolve_amp(cfg["amp"], device)
    out_dir = Path(cfg["output_dir"])
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup_distributed, dist_info)
        open_run_dir(out_dir, dist_info, stack)
        stack.enter_context(run_logging(dist_info, out_dir / "train.log" if dist_info.is_main else None))
        log.info("run folder: %s", out_dir.resolve())
        if dist_info.is_main:
            remove_stale_temporaries(out_dir)
        seed_everything(cfg["seed"], cfg["deterministic"])
        root = default_data(cfg)
        stop = stack.enter_context(StopSignals())
        try:
            return {**_train(cfg, root, device, dist_info, out_dir, stop), "rank": dist_info.rank}
        except DiskFullError as err:  # the write freed its partial file, so the log line fits
            log.error("%s", err)
            raise
        except UserError as err:  # the log keeps why the run stopped (the CLI prints it too)
            log.error("stopped: %s", err, extra={"console": False})
            raise
        except RuntimeError as err:
            if not (dist_info.enabled and collective_timed_out(err)):
                raise
            message = (f"rank {dist_info.rank} waited more than --dist_timeout {cfg['dist_timeout']} s for the other "
                       "ranks (one of them died, froze or is far slower); the run stopped, resume it with "
                       f"--resume latest ({err.__class__.__name__}: {str(err).splitlines()[0]})")
            log.error(message)
            raise UserError(message) from None


def open_run_dir(out_dir: Path, dist_info: DistInfo, stack: contextlib.ExitStack) -> None:
    """Rank 0 creates the run folder and holds its lock (:class:`metric_retrieval.training.run_lock.RunLock`) until
    ``stack`` closes. When it cannot, every rank stops with rank 0's error, rather than the others failing later on a
    collective that rank 0 never joins."""
    error = None
    if dist_info.is_main:
        try:
            make_run_dir(out_dir)
            stack.enter_context(RunLock(out_dir))
        except UserError as err:
            error = err
    message = broadcast_object(None if error is None else str(error), dist_info)
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message)


def make_run_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output_dir {out_dir}: cannot create the run folder ({err.strerror})") from None


def _train(cfg: dict[str, Any], root: str, device: torch.device, dist_info: DistInfo, out_dir: Path,
           stop: StopSignals | None = None) -> dict[str, Any]:
    splits = builders.build_datasets(cfg, root)
    train_set, info = splits["train"], splits["info"]
    ks = parse_number_list(cfg["recalls"], "--recalls") or list(info.recall_ks)
    num_classes = train_set.num_classes
    class_counts = torch.bincount(train_set.labels, minlength=num_classes)
    log.info("data %s at %s: %s", info.name, root, split_sizes(splits))
    for message in check_splits(cfg, splits, ks):
        log.warning(message)

    cfg["pretrained"] = builders.default_pretrained(cfg)
    model = builders.build_model(cfg, num_classes)
    if dist_info.is_main:
        params, macs = models.profile(model, image_size=cfg["image_size"])
        log.info("model %s + %s: %.2fM params | %.2fG MACs at %d px", cfg["backbone_type"], cfg["head"],
                 params / 1e6, macs / 1e9, cfg["image_size"])
    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    criterion = builders.build_criterion(cfg, num_classes, class_counts).to(device)
    logit_losses = [n for n, loss in zip(criterion.names, criterion.losses) if reads_logits(loss)]
    if logit_losses and not getattr(model.head, "num_classes", 0):
        raise UserError(f"--loss {'+'.join(logit_losses)} reads classifier logits, but --head {cfg['head']} has no "
                        "classifier; use a head with one or an embedding loss")
    sampler = builders.build_sampler(cfg, train_set.labels, dist_info.rank, dist_info.world_size)
    steps_per_epoch = len(sampler) if not cfg["max_steps_per_epoch"] else min(len(sampler),
                                                                                cfg["max_steps_per_epoch"])
    if steps_per_epoch == 0:
        raise UserError(f"--batch_size {cfg['batch_size']} leaves no full batch in {len(train_set)} training images")
    optimizer = builders.build_optimizer(cfg, model, criterion)
    decoder = DeviceDecoder(splits["train_transform"], device) if cfg["decode"] == "gpu" else None
    ctx = TrainContext(
        cfg=cfg, model=model, train_model=model, criterion=criterion, optimizer=optimizer,
        scheduler=builders.build_scheduler(cfg, optimizer, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg["amp"] == "fp16"), sampler=sampler, device=device,
        dist=dist_info, num_classes=num_classes, steps_per_epoch=steps_per_epoch,
        run_log=RunLog(out_dir, cfg, enabled=dist_info.is_main, tensorboard=not cfg["no_tensorboard"]),
        device_input=DeviceInput(device, data.build_normalize(model.input_spec), cfg["channels_last"], decoder),
        stop=stop)
    resume = load_resume(cfg["resume"], out_dir)
    ctx.run_id = claim_run(out_dir, resume, dist_info.is_main)
    if resume is not None:
        ctx.progress = _load_checkpoint(*resume, ctx)
        log.info("resumed from %s at epoch %d step %d", resume[0], ctx.progress.epoch + 1, ctx.progress.step)
        if ctx.progress.epoch >= cfg["num_epochs"]:
            log.info("the run is already complete (%d of --num_epochs %d done); raise --num_epochs to train on",
                     ctx.progress.epoch, cfg["num_epochs"])
    ctx.train_model = _wrap_for_training(model, cfg, dist_info, device)
    if dist_info.is_main:
        save_config(cfg, out_dir / "config.yaml")
        if _select_split(cfg, splits) == "test":
            log.warning("model selection on the TEST split (the papers' protocol, optimistic); "
                        "use --val_classes for an honest validation split")
    batches = SeededBatches(sampler, cfg["seed"], dist_info.rank, cfg["batch_size"])
    # pinning would copy every file's bytes once more; nvJPEG reads them from host memory anyway
    loader = train_loader(train_set if decoder is None else EncodedFiles(train_set), batches, cfg["workers"],
                          device.type == "cuda" and decoder is None)

    progress, last_metrics = ctx.progress, {}
    if dist_info.is_main and progress.global_step == 0 and progress.untrained is None:
        progress.untrained = _evaluate_untrained(ctx, splits, info.protocol, ks)
    barrier(dist_info)
    for epoch in range(progress.epoch, cfg["num_epochs"]):
        batches.set_epoch(epoch)
        sampler.load_state_dict({"epoch": epoch, "start": progress.step})
        row = {"epoch": epoch + 1, **train_one_epoch(ctx, loader)}
        progress.epoch, progress.step = epoch + 1, 0
        if _should_evaluate(cfg, epoch):
            if dist_info.is_main:
                last_metrics = _evaluate_and_select(ctx, splits, info.protocol, ks, row, epoch)
            barrier(dist_info)
        progress.history.append(row)
        if dist_info.is_main:
            ctx.run_log.epoch_end(row, progress.history, progress.global_step)
        _save_checkpoint(ctx)
        barrier(dist_info)
        if stop is not None and epoch + 1 < cfg["num_epochs"] and (signum := stop.requested(dist_info, device)):
            _stop_on_signal(ctx, signum, save=False)
    ctx.run_log.close()
    if dist_info.is_main:
        _log_summary(progress, cfg["select_metric"], _select_split(cfg, splits), cfg["pretrained"])
    return {"last": last_metrics, "best": progress.best, "best_epoch": progress.best_epoch,
            "history": progress.history, "untrained": progress.untrained}


def _wrap_for_training(model: torch.nn.Module, cfg: dict[str, Any], dist_info: DistInfo, device: torch.device
                       ) -> torch.nn.Module:
    """SyncBatchNorm (in place), DDP and ``torch.compile`` as asked; parameters stay the model's own."""
    wrapped = model
    if cfg["sync_bn"] and dist_info.enabled:
        wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
    if dist_info.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["compile"]:
        wrapped = torch.compile(wrapped)
    return wrapped


def _select_split(cfg: dict[str, Any], splits: dict[str, Any]) -> str:
    return cfg["select_on"] or ("val" if splits["val"] is not None else "test")


def train_one_epoch(ctx: TrainContext, loader: Any) -> dict[str, float]:
    """Train from ``ctx.progress.step`` to the end of the epoch; returns its mean loss, last lr and images/s."""
    cfg, progress, optimizer = ctx.cfg, ctx.progress, ctx.optimizer
    ctx.train_model.train()
    ctx.criterion.train()
    count, start_time = 0, time.perf_counter()
    bar = tqdm(total=ctx.steps_per_epoch, initial=progress.step, disable=not ctx.dist.is_main, dynamic_ncols=True,
               mininterval=bar_interval(),
               desc=f"epoch {progress.epoch + 1}/{cfg['num_epochs']}")
    replaced = 0
    for images, labels, indices, seeds in loader:
        if progress.step >= ctx.steps_per_epoch:
            break
        replaced += int((indices < 0).sum())  # unreadable images replaced by the dataset (--skip_bad_images)
        loss, parts = train_step(ctx, images, labels, seeds)
        progress.step += 1
        progress.global_step += 1
        progress.loss_sum, count = progress.loss_sum + loss, count + 1
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        bar.update(1)
        ctx.run_log.step(progress.global_step, loss, parts, optimizer, ctx.criterion.stats())
        if progress.step < ctx.steps_per_epoch:
            if ctx.stop is not None and (signum := ctx.stop.requested(ctx.dist, ctx.device)):
                bar.close()
                _stop_on_signal(ctx, signum)
            if cfg["checkpoint_every"] and progress.step % cfg["checkpoint_every"] == 0:
                _save_checkpoint(ctx)
    bar.close()
    if replaced:
        log.warning("epoch %d: %d sample(s) were unreadable images, each replaced by another image of its class "
                    "(--skip_bad_images; the warnings name the files)", progress.epoch + 1, replaced)
    elapsed = time.perf_counter() - start_time
    mean_loss = progress.loss_sum / max(progress.step, 1)
    progress.loss_sum = 0.0
    return {"loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": count * cfg["batch_size"] * ctx.dist.world_size / max(elapsed, 1e-9)}


def train_step(ctx: TrainContext, images: torch.Tensor | list, labels: torch.Tensor, seeds: torch.Tensor | None = None
               ) -> tuple[float, dict[str, Any]]:
    """One optimisation step on this rank's batch; miners, losses and the embedding producer see the gathered
    global batch.

    ``images`` is the loader's uint8 batch (or encoded files with ``--decode gpu``, augmented under ``seeds``).
    """
    cfg, device = ctx.cfg, ctx.device
    amp_dtype = AMP_DTYPES[cfg["amp"]]
    images = ctx.device_input(images, seeds)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        embeddings, logits = ctx.train_model(images)
    embeddings = gather_with_grad(embeddings.float(), ctx.dist)
    logits = gather_with_grad(None if logits is None else logits.float(), ctx.dist)
    loss, parts = ctx.criterion(embeddings, logits, all_gather_no_grad(labels.to(device), ctx.dist))
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss.item()} at epoch {ctx.progress.epoch + 1}, step "
                               f"{ctx.progress.step + 1}; stopped without saving. The last good checkpoint is "
                               f"{ctx.latest} (if one was written): lower --lr, use --grad_clip, or --amp off")
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if cfg["grad_clip"] > 0:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in ctx.optimizer.param_groups for p in g["params"]], cfg["grad_clip"])
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.scheduler.step()
    return loss.item(), parts


def _should_evaluate(cfg: dict[str, Any], epoch: int) -> bool:
    last = epoch + 1 == cfg["num_epochs"]
    return last or (cfg["eval_every"] > 0 and (epoch + 1) % cfg["eval_every"] == 0)


def _evaluate_and_select(ctx: TrainContext, splits: dict[str, Any], protocol: str, ks: list[int],
                         row: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Evaluate test (and val) splits, log them, and keep the best model + feature database."""
    from metric_retrieval.retrieval import save_database

    cfg, model, device, progress = ctx.cfg, ctx.model, ctx.device, ctx.progress
    amp_dtype = AMP_DTYPES[cfg["amp"]]
    test_metrics, database = evaluate_split(model, splits["test"], protocol, ks, cfg, device, amp_dtype)
    row.update({f"test_{k}": v for k, v in test_metrics.items()})
    metrics = {"test": test_metrics}
    if splits["val"] is not None:
        val_metrics, _ = evaluate_split(model, {"val": splits["val"]}, "leave_one_out", ks, cfg, device, amp_dtype)
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        metrics["val"] = val_metrics
    select_on = _select_split(cfg, splits)
    key = cfg["select_metric"]
    if key not in metrics[select_on]:
        raise UserError(f"--select_metric {key} is not computed; available: {sorted(metrics[select_on])}")
    score = metrics[select_on][key]
    log.info("epoch %d: %s", epoch + 1, _format_metrics(metrics))
    out_dir = Path(cfg["output_dir"])
    if score > progress.best:
        progress.best, progress.best_epoch = score, epoch + 1
        model_cfg, state = model_config(cfg, splits["train"].num_classes), model.state_dict()
        atomic_save({"model": state, "model_config": model_cfg, "config": cfg, "epoch": epoch + 1,
                     "metrics": metrics, "recipe": database["recipe"].to_dict(), "run_id": ctx.run_id},
                    out_dir / BEST_MODEL)
        save_database(out_dir / BEST_DATABASE, query=database["query"], gallery=database["gallery"],
                      recipe=database["recipe"], checkpoint=str(out_dir / BEST_MODEL), config=cfg,
                      model={"config": model_cfg, "sha256": weights_digest(state)})
        log.info("new best %s/%s %.4f at epoch %d: saved %s and %s", select_on, key, score, epoch + 1, BEST_MODEL,
                 BEST_DATABASE)
    ctx.run_log.evaluation(epoch + 1, metrics, database, out_dir)
    return metrics


def _evaluate_untrained(ctx: TrainContext, splits: dict[str, Any], protocol: str, ks: list[int]
                        ) -> dict[str, dict[str, float]]:
    """Held-out metrics of the model as built (random or pretrained weights): the bar training must clear.

    Runs under a forked CPU RNG (each loader iterator draws a seed from it) so that measuring changes nothing
    the training draws afterwards, on rank 0 or, under DDP, relative to the other ranks.
    """
    amp_dtype = AMP_DTYPES[ctx.cfg["amp"]]
    with torch.random.fork_rng(devices=[]):
        metrics = {"test": evaluate_split(ctx.model, splits["test"], protocol, ks, ctx.cfg, ctx.device, amp_dtype)[0]}
        if splits["val"] is not None:
            metrics["val"] = evaluate_split(ctx.model, {"val": splits["val"]}, "leave_one_out", ks, ctx.cfg,
                                            ctx.device, amp_dtype)[0]
    log.info("untrained (before epoch 1): %s", _format_metrics(metrics))
    return metrics


def _format_metrics(metrics: dict[str, dict[str, Any]]) -> str:
    return "  ".join(f"{s}/{k} {v:.4f}" for s, m in metrics.items() for k, v in m.items() if isinstance(v, float))


def _log_summary(progress: Progress, select_metric: str, select_on: str, pretrained: str | None = None) -> None:
    """Untrained vs selected (best) epoch on every evaluated split; a warning when training made it worse.

    The warning's advice depends on where the weights came from: a run from random weights is told to start
    from pretrained ones, a run that already did is told which of its own settings to change.
    """
    if progress.untrained is None or progress.best_epoch < 1:
        return
    row = next(r for r in progress.history if r["epoch"] == progress.best_epoch)
    lines, worse = [], []
    for split, before in progress.untrained.items():
        for key, value in before.items():
            after = row.get(f"{split}_{key}")
            if isinstance(value, float) and isinstance(after, float):
                lines.append(f"{split}/{key}: untrained {value:.4f} -> {after:.4f} ({after - value:+.4f})")
                if key == select_metric and after < value:
                    worse.append(f"{split}/{key} {value:.4f} -> {after:.4f}")
    log.info("summary: model selected on %s/%s at epoch %d vs the untrained model\n  %s", select_on, select_metric,
             progress.best_epoch, "\n  ".join(lines))
    if not worse:
        return
    if pretrained in (None, "none"):
        advice = ("start from pretrained weights (--pretrained imagenet) or use a from-scratch recipe "
                  "(configs/transfer/scratch.yaml)")
    else:
        advice = (f"it started from pretrained weights ({pretrained}): try a lower --lr, fewer --num_epochs, or "
                  "--val_classes to select the epoch on held-out training classes (docs/birds.md)")
    log.warning("TRAINING MADE RETRIEVAL WORSE than the untrained model (%s): the recipe does not transfer to "
                "these held-out classes; %s", ", ".join(worse), advice)


def _save_checkpoint(ctx: TrainContext) -> None:
    """Write ``checkpoint_latest.pth`` (the one it replaces becomes ``checkpoint_prev.pth``); every rank calls it.

    All ranks contribute their RNG states; rank 0 writes. Non-finite weights or optimiser state are never
    written: the run stops with :class:`TrainingDiverged` and the last good checkpoint stays as it is.
    """
    progress = ctx.progress
    state = {"model": ctx.model.state_dict(), "criterion": ctx.criterion.state_dict(),
             "optimizer": ctx.optimizer.state_dict()}
    bad = _nonfinite(state)  # identical on every rank (DDP keeps them equal), so all ranks stop together
    if bad:
        raise TrainingDiverged(
            f"the weights became non-finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at epoch "
            f"{progress.epoch + 1}, step {progress.step} although the loss was finite; not saved, so the last good "
            f"checkpoint {ctx.latest} (if one was written) is untouched: resume from it with a lower --lr, "
            "--grad_clip or --amp off")
    rng = gather_objects(rng_state(), ctx.dist)  # one state per rank: ranks draw differently (miners, DAS)
    if not ctx.dist.is_main:
        return
    atomic_save({**state, "scheduler": ctx.scheduler.state_dict(), "scaler": ctx.scaler.state_dict(),
                 "progress": progress.__dict__, "rng": rng, "config": ctx.cfg, "run_id": ctx.run_id,
                 "model_config": model_config(ctx.cfg, ctx.num_classes),
                 "recipe": InferenceRecipe.of_model(ctx.model, ctx.cfg).to_dict()},
                ctx.latest, previous=ctx.latest.with_name(PREVIOUS))
    # A small summary next to it, so tools (and people) can see where the run stands without loading it.
    summary = {"epoch": progress.epoch, "step": progress.step, "global_step": progress.global_step}
    atomic_write_text(ctx.latest.with_suffix(".json"), json.dumps(summary))


def _nonfinite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in a nested state dict that hold a NaN or an infinity."""
    bad: list[str] = []

    def visit(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{name}.{key}" if name else str(key))

    visit(state, "")
    return bad


def _stop_on_signal(ctx: TrainContext, signum: int, save: bool = True) -> None:
    """Checkpoint (unless just done), log how to resume, and raise
    :class:`metric_retrieval.training.signals.Stopped`."""
    if save:
        _save_checkpoint(ctx)
    progress, name = ctx.progress, signal.Signals(signum).name
    message = (f"stopped by {name} at epoch {progress.epoch + 1}, step {progress.step}: saved {ctx.latest}; "
               f"to continue, run the same command with --resume latest")
    log.warning(message)
    raise Stopped(signum, message)


def _apply_remedies(old_cfg: dict[str, Any], ctx: TrainContext) -> None:
    """A resume that changes ``--lr``, ``--grad_clip`` or ``--amp``: rescale the loaded schedule to the new lr."""
    changed = sorted(k for k in RESUME_REMEDIES if k in old_cfg and old_cfg[k] != ctx.cfg[k])
    if not changed:
        return
    log.warning("resume changes %s: from here on the run computes differently from the original one",
                ", ".join(f"--{k} {old_cfg[k]!r} -> {ctx.cfg[k]!r}" for k in changed))
    if "lr" in changed:
        if old_cfg["lr"] == 0:
            raise UserError("--lr: the checkpoint was trained with --lr 0, so its schedule cannot be rescaled to "
                            f"--lr {ctx.cfg['lr']}; start a new --output_dir")
        ratio = ctx.cfg["lr"] / old_cfg["lr"]
        for group in ctx.optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        ctx.scheduler.base_lrs = [lr * ratio for lr in ctx.scheduler.base_lrs]
        ctx.scheduler._last_lr = [group["lr"] for group in ctx.optimizer.param_groups]


def _load_checkpoint(path: Path, ckpt: dict[str, Any], ctx: TrainContext) -> Progress:
    missing = [k for k in ("model", "criterion", "optimizer", "scheduler", "progress", "rng") if k not in ckpt]
    if missing:
        raise UserError(f"{path} cannot be resumed from: it lacks {missing} (a full checkpoint_latest.pth "
                        "is needed; model_best.pth / database_best.pth hold only weights / features)")
    changed = [k for k in sorted(ckpt["config"]) if k not in RESUME_MAY_CHANGE | RESUME_REMEDIES
               and ckpt["config"][k] != ctx.cfg.get(k)
               and not (k == "decode" and {ckpt["config"][k], ctx.cfg.get(k)} <= SAME_PIXELS)]
    if changed:
        raise UserError(f"--resume {path}: the run was made with other settings for "
                        + ", ".join(f"--{k} ({ckpt['config'][k]!r} there, {ctx.cfg.get(k)!r} now)" for k in changed)
                        + "; resume with the same settings, or start a new --output_dir")
    models.load_model_state(ctx.model, ckpt["model"], what=str(path))
    ctx.criterion.load_state_dict(ckpt["criterion"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    ctx.scheduler.load_state_dict(ckpt["scheduler"])
    if ctx.scaler.is_enabled() and ckpt["scaler"]:  # empty when saved without fp16 (a resume may switch --amp)
        ctx.scaler.load_state_dict(ckpt["scaler"])
    _apply_remedies(ckpt["config"], ctx)
    states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]  # older files: rank 0's only
    if len(states) != ctx.dist.world_size:
        log.warning("%s holds the random states of %d rank(s), this run has %d: it continues, but not exactly as "
                    "the original would have", path, len(states), ctx.dist.world_size)
    set_rng_state(states[ctx.dist.rank % len(states)])
    return Progress(**ckpt["progress"])
