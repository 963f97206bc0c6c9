"""The embedding-producer registry (kept apart from ``producers/__init__.py`` so producer modules can import it)."""
from __future__ import annotations

from metric_retrieval.utils.registry import Registry

PRODUCERS = Registry("embedding producer")

__all__ = ["PRODUCERS"]
