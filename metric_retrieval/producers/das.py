"""Densely-Anchored Sampling (Liu, Li & Zhang et al., "DAS: Densely-Anchored Sampling for Deep Metric
Learning", ECCV 2022, arXiv 2208.00119), following lizhaoliu-Lec/DAS ``modules/embedding_producer.py``.

DAS is an embedding-space producer used during training only: from a real batch ``E (B, D)``, ``y (B,)`` it
returns ``E' = [E; G_1; …; G_N]`` and ``y' = [y; y; …; y]`` (real rows first), where each ``G_n`` holds one
generated "dense anchor" per real row. Per call (``EmbeddingProducer.forward``):

A. **FRM update (DFS statistics).** For each real row, the indices of its K largest *signed* values;
   ``F[y_i, d] += 1`` for each. ``F`` is the ``(C, D)`` int64 Frequency Recorder Matrix.
B. **Memory-bank update (MTS statistics).** For each class c in the batch, all ordered differences
   ``X_c[a] − X_c[b]`` of its (detached) real rows, those with zero L1 norm dropped (a = b, duplicates),
   are pushed into the class's FIFO ring ``M_c`` of capacity Q (a-major order). As in the reference's
   ``MemoryBank.enqueue_dequeue``: up to Q vectors are written at the ring pointer, which advances by their
   number (mod Q); when more than Q arrive at once, the last Q of them fill slots 0…Q−1 in order and the
   pointer does not move.
C. **Generation.** For each copy n and real row i: ``S_i = topK(F[y_i])`` (class-level dimensions);
   ``v = E_i`` (detached if ``detach``); ``v[S_i] *= s`` with ``s ~ U[a, b)^K`` drawn per row, copy and
   dimension; ``v += λ·δ`` with δ a uniformly chosen filled row of ``M_{y_i}`` (0 if the bank is empty);
   ``v /= ||v||₂`` if ``normalize``.

Implementation: fully vectorised (no Python loop over samples or classes): FRM counts with
``index_put_(accumulate=True)``, the bank writes with one scatter computed from per-class ranks, generation
with batched gathers. State is buffers (``frm``, ``bank``, ``bank_ptr``, ``bank_count``) plus a private
CPU ``torch.Generator`` whose state travels through ``get_extra_state``/``set_extra_state``, so
``state_dict()`` round-trips everything and a resumed run draws the same numbers. Random numbers are drawn
on the CPU and moved, so they are identical on every device.

Deviations and quirks of the reference, knowingly handled:
* ``MemoryBank.is_full`` tests ``targets[-1] != 0`` and is never true for class 0; unused by generation in
  the reference and not reproduced — here ``bank_count`` tracks the fill level of every class correctly.
* The reference recomputes top-K from a Python dict of lists per sample and copy (slow, same result);
  here one stable descending sort over ``F[y]`` per call. The two agree where the K-th and (K+1)-th counts
  differ; on ties the reference gets whatever ``torch.topk`` returns (it differs between CPU and CUDA), this
  code the lower dimension. The per-row top-K of the FRM update is chosen the same way.
* The reference picks the shift row with Python ``random.randint`` among non-zero bank rows; here the row
  is drawn from the module's own generator among the filled slots (a vector with zero L1 norm is never
  stored, so "filled" equals "non-zero").
* The internal class of the reference defaults to ``detach=True`` but its CLI default is ``detach=False``;
  the CLI default is used.

Under DDP the trainer passes the gathered global batch, so every rank updates identical state;
:meth:`sync_across_ranks` broadcasts rank 0's state once (e.g. after a resume) as a guard.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric_retrieval.producers._registry import PRODUCERS
from metric_retrieval.utils.options import Option


@PRODUCERS.register("das")
class DAS(nn.Module):
    """Args (defaults are the DAS CLI's, ``scripts/parameters.py``):
        num_classes: C, number of training classes (labels must lie in ``[0, C)``).
        embedding_dim: D.
        num_produce: N generated copies per real row, default 3.
        dfs_num_scale: K scaled dimensions, default 4.
        dfs_scale_left, dfs_scale_right: the scale range U[a, b), default 0.5 / 2.0.
        mts_num_transformation_bank: Q, bank capacity per class, default 10.
        mts_scale: λ, shift multiplier, default 0.01.
        normalize: L2-normalise generated rows, default True (``--das_not_normalize`` → False).
        detach: build generated rows from detached real rows, default False (CLI; the inner class uses True).
        seed: seed of the module's own generator, default 0.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        num_produce: int = 3,
        dfs_num_scale: int = 4,
        dfs_scale_left: float = 0.5,
        dfs_scale_right: float = 2.0,
        mts_num_transformation_bank: int = 10,
        mts_scale: float = 0.01,
        normalize: bool = True,
        detach: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        c, d = int(num_classes), int(embedding_dim)
        if c < 1 or d < 1:
            raise ValueError(f"DAS needs num_classes >= 1 and embedding_dim >= 1, got {num_classes}, {embedding_dim}")
        if not 1 <= int(dfs_num_scale) <= d:
            raise ValueError(f"DAS: dfs_num_scale must be in [1, {d}], got {dfs_num_scale}")
        if int(num_produce) < 0 or int(mts_num_transformation_bank) < 1:
            raise ValueError("DAS: num_produce must be >= 0 and mts_num_transformation_bank >= 1")
        if dfs_scale_right < dfs_scale_left:
            raise ValueError(f"DAS: dfs_scale_right ({dfs_scale_right}) < dfs_scale_left ({dfs_scale_left})")
        self.num_classes, self.embedding_dim = c, d
        self.num_produce, self.k = int(num_produce), int(dfs_num_scale)
        self.scale_left, self.scale_right = float(dfs_scale_left), float(dfs_scale_right)
        self.q, self.mts_scale = int(mts_num_transformation_bank), float(mts_scale)
        self.normalize, self.detach = bool(normalize), bool(detach)
        self.register_buffer("frm", torch.zeros(c, d, dtype=torch.int64))
        self.register_buffer("bank", torch.zeros(c, self.q, d))
        self.register_buffer("bank_ptr", torch.zeros(c, dtype=torch.int64))
        self.register_buffer("bank_count", torch.zeros(c, dtype=torch.int64))
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        self._last_dist: Tensor | None = None

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, N={self.num_produce}, "
                f"K={self.k}, scale=[{self.scale_left}, {self.scale_right}), Q={self.q}, λ={self.mts_scale}, "
                f"normalize={self.normalize}, detach={self.detach}")

    # -- self-description (see :mod:`producers`) -------------------------------------------------------------
    # the DAS CLI's flags (``scripts/parameters.py`` names and defaults)
    options = (
        Option("das", bool, False, "densely-anchored sampling (DFS + MTS)", negatable=True,
               aliases=("--embedding_producer_used",)),
        Option("das_num_produce", int, 3, "N generated copies per real row", low=1),
        Option("das_dfs_num_scale", int, 4, "K scaled dimensions (DFS)", low=1),
        Option("das_dfs_scale_left", float, 0.5, "DFS scale range U[a, b): a", low=0.0, low_ok=False),
        Option("das_dfs_scale_right", float, 2.0, "DFS scale range U[a, b): b", low=0.0, low_ok=False),
        Option("das_mts_num_transformation_bank", int, 10, "Q, MTS bank capacity per class", low=1),
        Option("das_mts_scale", float, 0.01, "λ, MTS shift multiplier", low=0.0),
        Option("das_not_normalize", bool, False, "do not L2-normalise generated rows"),
        Option("detach", bool, False, "DAS: generate from detached embeddings"),
    )

    @staticmethod
    def enabled(cfg: dict[str, Any]) -> bool:
        return bool(cfg.get("das"))

    @staticmethod
    def check_config(cfg: dict[str, Any]) -> list[str]:
        """What the declared ranges cannot say: switches without ``--das``, and a < b."""
        problems = []
        das_only = [f for f in ("detach", "das_not_normalize") if cfg.get(f)]
        if das_only and not cfg.get("das"):
            problems.append(f"{', '.join('--' + f for f in das_only)} only apply with --das")
        if not cfg["das_dfs_scale_left"] <= cfg["das_dfs_scale_right"]:
            problems.append("--das_dfs_scale_left must not exceed --das_dfs_scale_right")
        return problems

    @classmethod
    def from_config(cls, cfg: dict[str, Any], num_classes: int, embedding_dim: int) -> DAS:
        return cls(num_classes, embedding_dim, num_produce=cfg["das_num_produce"],
                   dfs_num_scale=cfg["das_dfs_num_scale"], dfs_scale_left=cfg["das_dfs_scale_left"],
                   dfs_scale_right=cfg["das_dfs_scale_right"],
                   mts_num_transformation_bank=cfg["das_mts_num_transformation_bank"],
                   mts_scale=cfg["das_mts_scale"], normalize=not cfg["das_not_normalize"], detach=cfg["detach"],
                   seed=cfg["seed"])

    # -- state ----------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    @property
    def last_stats(self) -> dict[str, float]:
        """``{"das_mean_dist": mean L2 distance between each real row and its generated copies}`` of the last
        training call (computed without gradient; empty before the first call). Reading it syncs the device."""
        return {} if self._last_dist is None else {"das_mean_dist": float(self._last_dist)}

    def sync_across_ranks(self, src: int = 0) -> None:
        """Broadcast rank ``src``'s buffers and generator state when ``torch.distributed`` is initialised."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for buf in (self.frm, self.bank, self.bank_ptr, self.bank_count):
            dist.broadcast(buf, src=src)
        obj = [self.generator.get_state()]
        dist.broadcast_object_list(obj, src=src)
        self.generator.set_state(obj[0])

    # -- the three steps ------------------------------------------------------------------------------------
    def _top_dims(self, x: Tensor) -> Tensor:
        """Indices of the ``k`` largest entries of each row of ``x`` ``(B, D)`` -> ``(B, K)``, ties to the lower
        dimension. ``topk`` breaks ties differently on the CPU and on CUDA, and the frequency counts tie often."""
        return torch.sort(x, dim=1, descending=True, stable=True).indices[:, :self.k]

    @torch.no_grad()
    def _update_frm(self, emb: Tensor, labels: Tensor) -> None:
        top = self._top_dims(emb)  # (B, K)
        rows = labels[:, None].expand_as(top)
        self.frm.index_put_((rows, top), torch.ones_like(top), accumulate=True)

    @torch.no_grad()
    def _update_banks(self, emb: Tensor, labels: Tensor) -> None:
        same = labels[:, None] == labels[None, :]
        a, b = torch.nonzero(same, as_tuple=True)  # row-major: per class, a-major order of (X[a] − X[b])
        diff = (emb[a] - emb[b]).to(self.bank.dtype)
        keep = diff.abs().sum(dim=1) != 0
        diff, cls = diff[keep], labels[a[keep]]
        if cls.numel() == 0:
            return
        order = torch.argsort(cls, stable=True)
        diff, cls = diff[order], cls[order]
        counts = torch.bincount(cls, minlength=self.num_classes)  # vectors arriving per class
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(cls.numel(), device=cls.device) - first[cls]  # position within its class
        n_c = counts[cls]
        survive = rank >= n_c - self.q  # only the last Q of a class are kept
        overflow = n_c > self.q  # the reference: the last Q fill slots 0..Q-1 in order, the pointer stays
        slot = torch.where(overflow, rank - (n_c - self.q), (self.bank_ptr[cls] + rank) % self.q)
        self.bank[cls[survive], slot[survive]] = diff[survive]
        self.bank_ptr.copy_(torch.where(counts > self.q, self.bank_ptr, (self.bank_ptr + counts) % self.q))
        self.bank_count.copy_(torch.clamp(self.bank_count + counts, max=self.q))

    def _generate(self, emb: Tensor, labels: Tensor) -> Tensor:
        n, (bsz, d) = self.num_produce, emb.shape
        dev = emb.device
        dims = self._top_dims(self.frm[labels])  # (B, K), class-level DFS dimensions
        s = torch.rand(n, bsz, self.k, generator=self.generator, dtype=torch.float64)
        s = (self.scale_left + (self.scale_right - self.scale_left) * s).to(dev, emb.dtype)
        u = torch.rand(n, bsz, generator=self.generator, dtype=torch.float64).to(dev)
        count = self.bank_count[labels]  # (B,)
        slot = torch.clamp((u * count).long(), max=self.q - 1)  # uniform over filled slots
        shift = self.bank[labels[None, :].expand(n, bsz), slot].to(emb.dtype)  # (N, B, D)
        shift = shift * (count > 0)[None, :, None].to(emb.dtype)
        base = emb.detach() if self.detach else emb
        scale = torch.ones(n, bsz, d, device=dev, dtype=emb.dtype)
        scale = scale.scatter(2, dims[None].expand(n, bsz, self.k), s)
        gen = base[None] * scale + self.mts_scale * shift
        if self.normalize:
            gen = F.normalize(gen, dim=2)
        return gen

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Args: embeddings ``(B, D)``, labels ``(B,)`` int64 in ``[0, C)``.

        Returns ``(E' ((1+N)·B, D), y' ((1+N)·B,))`` with the real rows first; in eval mode (or N = 0) the
        inputs unchanged.
        """
        if not self.training or self.num_produce == 0:
            return embeddings, labels
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"DAS: embeddings must be (B, {self.embedding_dim}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"DAS: labels {tuple(labels.shape)} do not match embeddings {tuple(embeddings.shape)}")
        labels = labels.long()
        if labels.numel() == 0:
            return embeddings, labels
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(f"DAS: labels must lie in [0, {self.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        real = embeddings.detach()
        self._update_frm(real, labels)
        self._update_banks(real, labels)
        gen = self._generate(embeddings, labels)
        with torch.no_grad():
            self._last_dist = (gen.detach() - real[None]).norm(dim=2).mean()
        out = torch.cat([embeddings, gen.reshape(-1, embeddings.shape[1])], dim=0)
        return out, labels.repeat(1 + self.num_produce)
