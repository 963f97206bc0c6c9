"""Modules imported on first use.

``import torchvision`` costs about 2 s (it loads ``torch._dynamo`` through ``torchvision.ops``), ``timm`` about 1 s;
``metric-retrieval COMMAND --help`` and a mistake in the arguments need neither. A module that uses them writes
``v2 = lazy_module("torchvision.transforms.v2")`` and imports it only when an attribute is first read.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    """Stands in for module ``name``; the first attribute read imports it (then every read goes to it)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r} ({'loaded' if self._module else 'not loaded'})>"


def lazy_module(name: str) -> Any:
    return _LazyModule(name)
