"""``test.py``'s commands: evaluate a saved (or off-the-shelf) model on a benchmark, fit a whitening.

They build the model of ``--checkpoint`` (or of ``--backbone_type/--head``) with its inference recipe (the
checkpoint's; for an off-the-shelf model the one ``--transform``/``--image_size`` give it), and reuse the
training-time evaluation (:mod:`metric_retrieval.training.evaluate`) on it: the recipe's evaluation transform and
metric, so a checkpoint scores and ranks exactly as its run did.
"""
from __future__ import annotations

from typing import Any

import torch

from metric_retrieval import data, evaluation, models
from metric_retrieval.evaluation.query_expansion import check_qe
from metric_retrieval.evaluation.whitening import matching_pairs
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.training import flags
from metric_retrieval.training.checkpoint import load_model
from metric_retrieval.training.evaluate import embed_dataset, evaluate_split
from metric_retrieval.training.runtime import AMP_DTYPES, resolve_amp, resolve_device
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.options import builder_kwargs
from metric_retrieval.utils.parsing import parse_key_values, parse_number_list

__all__ = ["build_eval_model", "eval_amp", "evaluate_checkpoint", "learn_whitening", "load_head_parts", "parse_qe"]


def parse_qe(text: str | None, dba: int) -> dict[str, Any] | None:
    """``--qe aqe:K | alpha:K:ALPHA`` and ``--dba K`` → ``evaluate_landmarks``'s ``qe`` dict, checked (once,
    by :func:`metric_retrieval.evaluation.query_expansion.check_qe`) before any descriptor is extracted."""
    if not text and not dba:
        return None
    method, *rest = (text or "none").split(":")
    try:
        spec = {"method": method, "k": int(rest[0]) if rest else 0, "dba_k": dba}
        if len(rest) > 1:
            spec["alpha"] = float(rest[1])
    except ValueError:
        raise UserError(f"--qe expects aqe:K or alpha:K:ALPHA, got {text!r}") from None
    try:
        return check_qe(spec)
    except ValueError as err:
        raise UserError(f"--qe {text} --dba {dba}: {err}") from None


def build_eval_model(args: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of ``--checkpoint``, or one built from ``--backbone_type/--head/...`` (landmark off-the-shelf),
    and ``{"config": the run config ({} off the shelf), "recipe": its InferenceRecipe}``."""
    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint, device)
        return model, {"config": ckpt.get("config", {}), "recipe": ckpt["recipe"]}
    if not args.backbone_type or not args.head:
        raise UserError("--eval needs --checkpoint, or --backbone_type and --head for an off-the-shelf model")
    options = parse_key_values(args.model_option, "--model_option")
    if args.pretrained:
        options["pretrained"] = args.pretrained
    try:
        model = models.build_model(args.backbone_type, args.head, args.feature_dim, 0, **options)
    except TypeError as err:
        raise UserError(f"model options: {err}") from None
    load_head_parts(model, args)
    recipe = InferenceRecipe.of_model(model, {"image_size": args.image_size, "transform": args.transform})
    return model.to(device).eval(), {"config": {}, "recipe": recipe}


def load_head_parts(model: torch.nn.Module, args: Any) -> None:
    """The separately shipped files the head declares (``Head.extra_files``), loaded by the head itself."""
    for dest, heads in models.heads.extra_file_heads().items():
        path = getattr(args, dest, None)
        if not path:
            continue
        if dest not in model.head.extra_files:
            raise UserError(f"--{dest} only applies to --head {', '.join(heads)}, not --head {args.head}")
        model.head.load_extra(dest, path)


def evaluate_checkpoint(args: Any) -> dict[str, Any]:
    """``test.py --eval``: the dataset's test protocol on a saved or off-the-shelf model; returns metrics.

    A checkpoint is evaluated as its run evaluated it: the run's transform, image size, memory format and
    precision (``--amp run``, the default; another ``--amp`` value overrides the precision); landmark
    benchmarks keep their own (cirtorch) transform, with the run's memory format and precision. Options that
    cannot apply, a bad ``--qe`` and a whitening of the wrong width are refused before any image is read.
    """
    device = resolve_device(args.device)
    info = data.get_benchmark(args.data_name, args.data_path)
    landmark_flags = [f for f, given in (("--qe", args.qe), ("--dba", args.dba), ("--whitening", args.whitening),
                                         ("--scales", args.scales != flags.SCALES.default),
                                         ("--imsize", args.imsize != flags.IMSIZE.default)) if given]
    if info.protocol != "landmark" and landmark_flags:
        raise UserError(f"{', '.join(landmark_flags)} only apply to landmark datasets (oxford5k, paris6k, roxford5k, "
                        f"rparis6k), not --data_name {args.data_name}")
    qe = parse_qe(args.qe, args.dba)
    whitening = evaluation.load_whitening(args.whitening) if args.whitening else None
    model, run = build_eval_model(args, device)
    recipe = run["recipe"]
    cfg, amp = _eval_config(args, run["config"]), eval_amp(args, run["config"], device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if info.protocol == "landmark":
        dim = getattr(model, "feature_dim", None)
        if whitening is not None and dim is not None and whitening[0].shape[-1] != dim:
            raise UserError(f"--whitening {args.whitening} whitens {whitening[0].shape[-1]}-d descriptors, but the "
                            f"model gives {dim}-d ones; fit it for this model (test.py --learn_whitening)")
        landmarks = data.load_landmark_dataset(info.name, args.data_path)
        transform = data.build_transform("landmark", train=False, normalize=recipe.input_spec)
        scales = parse_number_list(args.scales, "--scales", float) or [1.0]
        return evaluation.evaluate_landmarks(model, landmarks, device, transform, imsize=args.imsize, scales=scales,
                                             whitening=args.whitening, qe=qe, num_workers=args.workers,
                                             autocast_dtype=amp)
    transform = recipe.eval_transform()
    reader_options = builder_kwargs(data.DATASETS.get(info.name), run["config"])  # the run's, where it read it
    splits = {s: data.build_dataset(info.name, args.data_path, s, transform=transform, decode=args.decode,
                                    crop=args.crop_type == "cropped", reader_options=reader_options)
              for s in info.eval_splits}
    ks = parse_number_list(args.recalls, "--recalls") or list(info.recall_ks)
    metrics, _ = evaluate_split(model, splits, info.protocol, ks, cfg, device, amp, recipe)
    return metrics


def eval_amp(args: Any, run_cfg: dict[str, Any], device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp``: ``run`` = the precision the checkpoint's run evaluated with (off for an
    off-the-shelf model), else as in train.py."""
    amp = run_cfg.get("amp", "off") if args.amp == "run" else args.amp
    return AMP_DTYPES[resolve_amp(amp, device)]


def _eval_config(args: Any, run_cfg: dict[str, Any]) -> dict[str, Any]:
    """``embed_dataset``'s settings for ``eval``: loader flags and the memory format of the checkpoint's run (the
    preprocessing is the recipe's)."""
    return {"eval_batch_size": args.eval_batch_size, "workers": args.workers, "knn_backend": args.knn_backend,
            "eval_chunk_size": None, "channels_last": bool(run_cfg.get("channels_last", False))}


def learn_whitening(args: Any) -> dict[str, Any]:
    """``test.py --learn_whitening FILE``: fit a whitening on a training set's descriptors and save it.

    ``pca`` (unsupervised PCA-whitening) works on any dataset, landmark databases included (learn on
    Paris6k to test on Oxford5k, as Tolias et al.); ``learned`` (cirtorch Lw from matching pairs) needs
    class labels: the training split of a labelled benchmark. Never fit on the test set you report.
    Descriptors are extracted in the checkpoint's precision and memory format, as ``--eval`` does.
    """
    device = resolve_device(args.device)
    model, run = build_eval_model(args, device)
    cfg, amp = _eval_config(args, run["config"]), eval_amp(args, run["config"], device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    info = data.get_benchmark(args.data_name, args.data_path)
    if info.protocol == "landmark":
        if args.whitening_type == "learned":
            raise UserError("--whitening_type learned needs class labels; landmark databases have none (use pca, "
                            "or a labelled training set)")
        landmarks = data.load_landmark_dataset(info.name, args.data_path)
        images = data.LandmarkImageDataset(list(landmarks.db_paths), imsize=args.imsize,
                                           resize=evaluation.landmark_resize(model),
                                           transform=data.build_transform("landmark", train=False,
                                                                          normalize=run["recipe"].input_spec))
        scales = parse_number_list(args.scales, "--scales", float) or [1.0]
        X, labels = evaluation.extract_landmark_descriptors(model, images, device, scales, autocast_dtype=amp), None
    else:
        train = data.build_dataset(info.name, args.data_path, info.train_split,
                                   transform=run["recipe"].eval_transform(), decode=args.decode)
        features = embed_dataset(model, train, cfg, device, amp)
        X, labels = features["embeddings"], features["labels"]
    if args.whitening_type == "learned":
        mean, projection = evaluation.learned_whitening_fit(X, *matching_pairs(labels))
    else:
        mean, projection = evaluation.pca_whitening_fit(X)
    evaluation.save_whitening(args.learn_whitening, mean, projection,
                              meta={"type": args.whitening_type, "data_name": info.name, "num_images": len(X)})
    return {"num_images": len(X), "dim": int(X.shape[1])}
