"""Heads (``HEADS`` registry): feature map(s) → ``(embedding (B, D), logits (B, M) or None)``.

One file per paper: ``baseline`` (Revisiting-DML), ``cgd``, ``clf``, ``abir``, ``rmac``,
``regional_attention``, ``gem`` (cirtorch), ``token`` (ViT DML).
"""
from __future__ import annotations

import argparse

from metric_retrieval.models.heads.abir import ABIRHead
from metric_retrieval.models.heads.base import Head, ModelConfigError, l2n
from metric_retrieval.models.heads.baseline import BaselineHead
from metric_retrieval.models.heads.cgd import GD_CONFIGS, CGDHead
from metric_retrieval.models.heads.clf import CLFHead
from metric_retrieval.models.heads.gem import GeMHead
from metric_retrieval.models.heads.regional_attention import RegionalAttentionHead
from metric_retrieval.models.heads.rmac import RMACHead, rmac_regions
from metric_retrieval.models.heads.token import TokenHead
from metric_retrieval.utils.registry import Registry

__all__ = ["GD_CONFIGS", "HEADS", "ABIRHead", "BaselineHead", "CGDHead", "CLFHead", "GeMHead", "Head",
           "ModelConfigError", "RMACHead", "RegionalAttentionHead", "TokenHead", "add_head_file_args",
           "extra_file_heads", "l2n", "rmac_regions"]

HEADS = Registry("head")
HEADS.register("baseline", aliases=("rdml",))(BaselineHead)
HEADS.register("cgd")(CGDHead)
HEADS.register("clf")(CLFHead)
HEADS.register("abir")(ABIRHead)
HEADS.register("rmac")(RMACHead)
HEADS.register("regional_attention", aliases=("ra",))(RegionalAttentionHead)
HEADS.register("gem")(GeMHead)
HEADS.register("token")(TokenHead)


def add_head_file_args(group: argparse._ArgumentGroup) -> None:
    """One ``--NAME FILE`` flag per extra file a registered head can load (:attr:`Head.extra_files`)."""
    for name in HEADS.names():
        for dest, help_text in HEADS.get(name).extra_files.items():
            group.add_argument(f"--{dest}", default=None, metavar="FILE", help=f"--head {name}: {help_text}")


def extra_file_heads() -> dict[str, list[str]]:
    """``{extra-file flag dest: [heads that load it]}``."""
    out: dict[str, list[str]] = {}
    for name in HEADS.names():
        for dest in HEADS.get(name).extra_files:
            out.setdefault(dest, []).append(name)
    return out
