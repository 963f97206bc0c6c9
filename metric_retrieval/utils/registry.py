"""A name → builder registry, one per package (losses, models, samplers, ...).

Usage::

    LOSSES = Registry("loss")

    @LOSSES.register("triplet")
    class TripletLoss(nn.Module): ...

    LOSSES.build("triplet", margin=0.2)

Unknown names raise :class:`UnknownOptionError` (a ``ValueError``) listing the known ones; a duplicate
registration raises too. A *family* registered with :meth:`Registry.register_family` answers every name
``"<prefix>:<rest>"`` with its builder bound to ``rest`` (``BACKBONES.build("timm:resnet50")``), the way
timm's ``hf-hub:`` names work; the family checks ``rest`` itself.
Keyword arguments go to the builder untouched, so an unknown kwarg is a ``TypeError``, never dropped.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from metric_retrieval.utils.errors import UnknownOptionError


class Registry:
    """Maps names (and optional aliases) to classes or factory functions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}
        self._families: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
        """Decorator registering ``obj`` under ``name`` and each alias."""

        def decorator(obj: Callable) -> Callable:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorator

    def register_family(self, prefix: str, builder: Callable[..., Any]) -> None:
        """Answer every name ``"<prefix>:<rest>"`` with ``functools.partial(builder, rest)``."""
        if prefix in self._families or ":" in prefix:
            raise ValueError(f"{self.kind} family {prefix!r} is registered twice or contains ':'")
        self._families[prefix] = builder

    def _family(self, name: str) -> Callable[..., Any] | None:
        prefix, sep, rest = name.partition(":")
        return self._families.get(prefix) if sep and rest else None

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (a family name is its own canonical name)."""
        if self._family(name) is not None:
            return name
        key = self._aliases.get(name, name)
        if key not in self._entries:
            known = ", ".join(self.names() + [f"{prefix}:<name>" for prefix in sorted(self._families)])
            raise UnknownOptionError(f"unknown {self.kind} {name!r}; choose one of: {known}")
        return key

    def get(self, name: str) -> Callable[..., Any]:
        family = self._family(name)
        if family is not None:
            return functools.partial(family, name.partition(":")[2])
        return self._entries[self.canonical(name)]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def families(self) -> list[str]:
        return sorted(self._families)

    def items(self) -> list[tuple[str, Callable[..., Any]]]:
        """``(name, builder)`` for every registered name, then ``("<prefix>:<name>", family builder)``."""
        return [(n, self._entries[n]) for n in self.names()] + \
            [(f"{p}:<name>", self._families[p]) for p in self.families()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases or self._family(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
