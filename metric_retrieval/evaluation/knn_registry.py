"""The kNN back-end registry: which back-ends exist, which one ``"auto"`` picks, and what each one serves.

A back-end is a class registered in :data:`KNN_BACKENDS` that declares, as class attributes:

- ``priority`` (int): ``"auto"`` takes the available back-end with the highest priority that serves the search;
- ``max_k`` (int or None): the widest search (neighbours per query, as the caller asks for them) it serves;
- ``metrics`` (tuple of str): the metrics it serves (``"ip"``, ``"l2"``);
- ``available()``: whether it runs on this machine (hardware, installed libraries);

plus ``prepare(gallery, metric)``, ``search(state, query_chunk, k)`` and ``chunk_device()``
(:mod:`metric_retrieval.evaluation.knn`). A search a back-end cannot serve (k above ``max_k``, another metric)
falls to the next one in priority order, with a warning when the back-end was named explicitly.
"""
from __future__ import annotations

import warnings

from metric_retrieval.utils.errors import UnknownOptionError
from metric_retrieval.utils.registry import Registry

__all__ = ["KNN_BACKENDS", "auto_order", "available_backends", "resolve_backend", "serves"]

KNN_BACKENDS = Registry("knn backend")


def auto_order() -> list[str]:
    """Every registered back-end, highest priority first (ties by name)."""
    return sorted(KNN_BACKENDS.names(), key=lambda name: (-KNN_BACKENDS.get(name).priority, name))


def available_backends() -> list[str]:
    """Names of the back-ends usable on this machine, in ``auto`` preference order."""
    return [name for name in auto_order() if KNN_BACKENDS.get(name).available()]


def serves(name: str, k: int, metric: str = "ip") -> bool:
    """Whether back-end ``name`` serves a search of width ``k`` with ``metric`` (availability aside)."""
    impl = KNN_BACKENDS.get(name)
    return metric in impl.metrics and (impl.max_k is None or k <= impl.max_k)


def resolve_backend(backend: str, k: int, metric: str = "ip") -> str:
    """The concrete back-end for ``backend`` ("auto" or a registered name), search width ``k`` and ``metric``.

    ``"auto"``: the first available back-end in :func:`auto_order` that serves the search. A named back-end
    that is not available raises :class:`UnknownOptionError`; one that does not serve the search warns and
    resolves ``"auto"`` instead.
    """
    if backend == "auto":
        for name in available_backends():
            if serves(name, k, metric):
                return name
        raise RuntimeError("no kNN back-end available")  # pragma: no cover - torch serves everything
    name = KNN_BACKENDS.canonical(backend)
    impl = KNN_BACKENDS.get(name)
    if not impl.available():
        raise UnknownOptionError(
            f"kNN back-end {name!r} is not available on this machine; available: {', '.join(available_backends())}"
        )
    if not serves(name, k, metric):
        fallback = resolve_backend("auto", k, metric)
        if metric not in impl.metrics:
            reason = f"serves metric {' or '.join(impl.metrics)} only (asked {metric})"
        else:
            reason = f"{impl.limit_reason} (asked k = {k})"
        warnings.warn(f"{name} {reason}; using {fallback}", stacklevel=3)
        return fallback
    return name
