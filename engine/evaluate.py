"""Embedding extraction and per-split retrieval evaluation during training.

Evaluation runs on rank 0 with the unwrapped model (other ranks wait at a barrier), on the real
embeddings only: DAS-generated rows exist inside the criterion and never reach this code.
"""
from __future__ import annotations

from typing import Any

import torch

import data
import evaluation
from data.batch import DeviceInput
from engine.loading import eval_loader
from utils.errors import UserError


def device_input(model: torch.nn.Module, cfg: dict[str, Any], device: torch.device) -> DeviceInput:
    """How the run's uint8 evaluation batches become model input: the model's normalisation, the run's memory
    format."""
    return DeviceInput(device, data.build_normalize(model.input_spec), bool(cfg.get("channels_last")))


def embed_dataset(model: torch.nn.Module, dataset: Any, cfg: dict[str, Any], device: torch.device,
          autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """``{"embeddings" (N, D) float32 cpu, "labels" (N,), "paths"}`` for a dataset of uint8 images in eval mode."""
    loader = eval_loader(dataset, cfg["eval_batch_size"], cfg["workers"], device.type == "cuda")
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        embeddings, labels, _ = evaluation.embed(model, loader, device, preprocess=device_input(model, cfg, device))
    return {"embeddings": embeddings.float(), "labels": labels.long(), "paths": list(dataset.paths)}


def evaluate_split(model: torch.nn.Module, splits: dict[str, Any], protocol: str, ks: list[int],
                   cfg: dict[str, Any], device: torch.device, autocast_dtype: torch.dtype | None
                   ) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and the feature database for one evaluation set.

    ``splits`` holds ``test`` (leave-one-out) or ``query`` + ``gallery`` (query→gallery protocol).
    """
    if protocol == "query_gallery":
        query, gallery = (embed_dataset(model, splits[s], cfg, device, autocast_dtype) for s in ("query", "gallery"))
    else:
        query, gallery = embed_dataset(model, next(iter(splits.values())), cfg, device, autocast_dtype), None
    metrics = evaluation.retrieval_metrics(
        query["embeddings"], query["labels"],
        None if gallery is None else gallery["embeddings"], None if gallery is None else gallery["labels"],
        ks=tuple(ks), backend=cfg["knn_backend"], chunk_size=cfg["eval_chunk_size"])
    return metrics, {"query": query, "gallery": gallery}


def _qe_spec(text: str | None, dba: int) -> dict[str, Any] | None:
    """``aqe:K`` or ``alpha:K:ALPHA`` (and/or DBA with K neighbours) → ``evaluate_landmarks``'s ``qe`` dict."""
    if not text and not dba:
        return None
    method, *rest = (text or "none").split(":")
    try:
        spec = {"method": method, "k": int(rest[0]) if rest else 0, "dba_k": dba}
        if len(rest) > 1:
            spec["alpha"] = float(rest[1])
    except ValueError:
        raise UserError(f"--qe expects aqe:K or alpha:K:ALPHA, got {text!r}") from None
    if method not in ("aqe", "alpha", "none"):
        raise UserError(f"--qe method must be aqe, alpha or none, got {method!r}")
    if method != "none" and spec["k"] < 1 or dba < 0:
        raise UserError(f"--qe {text}: K must be a positive number of neighbours (e.g. aqe:5); --dba must be >= 0")
    return spec


def build_eval_model(args: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of ``--checkpoint``, or one built from ``--backbone_type/--head/...`` (landmark off-the-shelf)."""
    import models
    from engine.checkpoint import load_model
    from engine.config import parse_key_values

    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint, device)
        return model, ckpt.get("config", {})
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
    return model.to(device).eval(), {}


def load_head_parts(model: torch.nn.Module, args: Any) -> None:
    """Regional attention's separately shipped parts: attention weights and per-region whitening."""
    import models
    from engine.checkpoint import load_file

    parts = {"--attention_weights": args.attention_weights, "--region_whitening": args.region_whitening}
    given = [flag for flag, value in parts.items() if value]
    if given and not hasattr(model.head, "attention"):
        raise UserError(f"{', '.join(given)} only apply to --head regional_attention, not --head {args.head}")
    if args.attention_weights:
        models.load_model_state(model.head.attention, load_file(args.attention_weights), what=args.attention_weights)
    if args.region_whitening:
        mean, projection = evaluation.load_whitening(args.region_whitening)
        model.head.set_whitening(torch.as_tensor(mean).float(), torch.as_tensor(projection).float())


def evaluate_checkpoint(args: Any) -> dict[str, Any]:
    """``test.py --eval``: the dataset's test protocol on a saved or off-the-shelf model; returns metrics."""
    from engine.config import parse_number_list
    from engine.trainer import resolve_device

    device = resolve_device(args.device)
    model, run_cfg = build_eval_model(args, device)
    info = data.get_benchmark(args.data_name, args.data_path)
    if info.protocol == "landmark":
        landmarks = data.load_landmark_dataset(info.name, args.data_path)
        transform = data.build_transform("landmark", train=False, normalize=model.input_spec)
        scales = parse_number_list(args.scales, "--scales", float) or [1.0]
        return evaluation.evaluate_landmarks(model, landmarks, device, transform, imsize=args.imsize, scales=scales,
                                             whitening=args.whitening, qe=_qe_spec(args.qe, args.dba),
                                             num_workers=args.workers)
    cfg = _eval_config(args, run_cfg)
    transform = data.build_transform(cfg["transform"], train=False, image_size=cfg["image_size"])
    splits = {s: data.build_dataset(info.name, args.data_path, s, transform=transform, decode=args.decode,
                                    crop=args.crop_type == "cropped") for s in info.eval_splits}
    ks = parse_number_list(args.recalls, "--recalls") or list(info.recall_ks)
    metrics, _ = evaluate_split(model, splits, info.protocol, ks, cfg, device, None)
    return metrics


def _eval_config(args: Any, run_cfg: dict[str, Any]) -> dict[str, Any]:
    """``embed_dataset``'s settings for ``test.py``: loader flags, and the preset and size of the checkpoint's run."""
    return {"eval_batch_size": args.eval_batch_size, "workers": args.workers, "knn_backend": args.knn_backend,
            "eval_chunk_size": None, "transform": run_cfg.get("transform", args.transform),
            "image_size": run_cfg.get("image_size", args.image_size)}


def matching_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image paired with the next image of its class (cyclically): the positives of learned whitening."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    nxt = torch.roll(order, -1)
    # within a class block the next index is the class's next image; the block's last wraps to its first
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    first_of_block = order[torch.cummax(torch.where(starts, torch.arange(len(order)), 0), 0).values]
    ends = torch.roll(starts, -1)
    partner = torch.where(ends, first_of_block, nxt)
    keep = partner != order
    return order[keep], partner[keep]


def learn_whitening(args: Any) -> dict[str, Any]:
    """``test.py --learn_whitening FILE``: fit a whitening on a training set's descriptors and save it.

    ``pca`` (unsupervised PCA-whitening) works on any dataset, landmark databases included (learn on
    Paris6k to test on Oxford5k, as Tolias et al.); ``learned`` (cirtorch Lw from matching pairs) needs
    class labels: the training split of a labelled benchmark. Never fit on the test set you report.
    """
    from engine.config import parse_number_list
    from engine.trainer import resolve_device

    device = resolve_device(args.device)
    model, run_cfg = build_eval_model(args, device)
    info = data.get_benchmark(args.data_name, args.data_path)
    if info.protocol == "landmark":
        if args.whitening_type == "learned":
            raise UserError("--whitening_type learned needs class labels; landmark databases have none (use pca, "
                            "or a labelled training set)")
        landmarks = data.load_landmark_dataset(info.name, args.data_path)
        images = data.LandmarkImageDataset(list(landmarks.db_paths), imsize=args.imsize,
                                           transform=data.build_transform("landmark", train=False,
                                                                          normalize=model.input_spec))
        scales = parse_number_list(args.scales, "--scales", float) or [1.0]
        X, labels = evaluation.extract_landmark_descriptors(model, images, device, scales), None
    else:
        cfg = _eval_config(args, run_cfg)
        transform = data.build_transform(cfg["transform"], train=False, image_size=cfg["image_size"])
        train = data.build_dataset(info.name, args.data_path, info.train_split, transform=transform,
                                   decode=args.decode)
        features = embed_dataset(model, train, cfg, device, None)
        X, labels = features["embeddings"], features["labels"]
    if args.whitening_type == "learned":
        mean, projection = evaluation.learned_whitening_fit(X, *matching_pairs(labels))
    else:
        mean, projection = evaluation.pca_whitening_fit(X)
    evaluation.save_whitening(args.learn_whitening, mean, projection,
                              meta={"type": args.whitening_type, "data_name": info.name, "num_images": len(X)})
    return {"num_images": len(X), "dim": int(X.shape[1])}
