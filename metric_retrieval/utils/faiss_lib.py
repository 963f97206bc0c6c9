"""The one place faiss is imported: lazily, because it is heavy and optional for training."""
from __future__ import annotations

from typing import Any

__all__ = ["faiss_gpu_count", "load_faiss"]


def load_faiss() -> Any:
    """The ``faiss`` module (``ImportError`` where neither faiss-cpu nor faiss-gpu is installed)."""
    import faiss  # noqa: PLC0415 - heavy optional dependency, imported on first use

    return faiss


def faiss_gpu_count(faiss: Any) -> int:
    """GPUs ``faiss`` can use: 0 for the faiss-cpu wheel, which has no ``StandardGpuResources``."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
