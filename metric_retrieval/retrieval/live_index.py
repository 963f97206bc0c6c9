"""The index a server searches, swapped for a newer committed version while it serves.

A :class:`LiveIndex` holds one :class:`Snapshot`: a verified :class:`IndexStore` and the paths its results show.
A request takes ``live.current`` once and uses only that snapshot, so it never mixes two versions. A watcher
thread reads the manifest (``meta.json``) every ``interval`` seconds. When the manifest's checksum (the index's
*version*) differs from the one served, :meth:`LiveIndex.poll` opens that version strictly: every checksum is
verified, and there is no fallback to the previous version, which the server already serves or has replaced.
It checks the new version against the served model (``check``), applies the same search parameters, and
replaces the snapshot with one assignment. Requests in flight finish on the version they started with; the old
one is freed when the last of them returns, so two versions are in memory during a swap. A version that fails
its checks is logged once and the served version stays.

Shown paths are relative to the catalogue root of the batch that added the item (the folder tree, or the list
file's folder: :func:`metric_retrieval.retrieval.catalogue.catalogue_root`), never the server's absolute paths.
An item outside every root (a list entry such as ``../x.jpg`` or ``/abs/x.jpg``) shows its file name.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from metric_retrieval.retrieval.catalogue import catalogue_root
from metric_retrieval.retrieval.index_store import META, IndexStore, on_gpu
from metric_retrieval.utils.errors import UserError

__all__ = ["LiveIndex", "Snapshot", "shown_paths"]

logger = logging.getLogger(__name__)


def shown_paths(store: IndexStore) -> list[str]:
    """Each item's path relative to the catalogue root that holds it (POSIX form), else its file name."""
    roots = [PurePath(os.path.normpath(catalogue_root(b["images"]))) for b in store.meta.get("batches", [])]
    out = []
    for path in store.items["paths"]:
        p = PurePath(os.path.normpath(path))
        root = next((r for r in roots if p.is_relative_to(r) and p != r), None)
        out.append(p.relative_to(root).as_posix() if root is not None else p.name)
    return out


@dataclass(frozen=True)
class Snapshot:
    """One committed version of the index as served: the store and its items' shown paths."""

    store: IndexStore
    paths: list[str]

    @classmethod
    def of(cls, store: IndexStore) -> Snapshot:
        return cls(store, shown_paths(store))

    @property
    def version(self) -> str:
        return self.store.version

    def item_of(self, n: int, sha256: str | None) -> int | None:
        """The item a result link ``(n, sha256)`` means in this version: ``n`` if it still holds that content (or
        no content is named), else the first item with that content (an ``add --update`` moves items), or None."""
        hashes = self.store.items.get("sha256") or []
        if 0 <= n < len(self.store) and (sha256 is None or n >= len(hashes) or hashes[n] == sha256):
            return n
        return hashes.index(sha256) if sha256 is not None and sha256 in hashes else None


class LiveIndex:
    """The served :class:`Snapshot`, replaced by a newer committed version of the same index (see the module
    docstring). ``check(store)`` raises :class:`UserError` for a version the server must not serve (another
    model); ``interval``: seconds between manifest reads (0: never reload)."""

    def __init__(self, store: IndexStore, check: Callable[[IndexStore], None] = lambda store: None,
                 interval: float = 2.0) -> None:
        self.current = Snapshot.of(store)
        self.check, self.interval = check, interval
        self._refused = ""  # the last version refused, logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _committed_version(self) -> str:
        """The version ``meta.json`` names now ("" while it cannot be read)."""
        try:
            return str(json.loads((self.current.store.root / META).read_text()).get("sha256", ""))
        except (OSError, ValueError, AttributeError):
            return ""

    def poll(self) -> bool:
        """Swap in the committed version if it is new and passes its checks; returns whether it swapped."""
        version = self._committed_version()
        if not version or version in (self.current.version, self._refused):
            return False
        old = self.current.store
        try:
            store = IndexStore.open(old.root, use_gpu=on_gpu(old.index), fallback=False)
            if store.version != version:
                return False  # committed again while it was read: the next poll takes the newer one
            self.check(store)
            store.set_search_params(**old.search_params)
        except UserError as err:
            self._refused = version
            logger.warning("not reloading index %s version %s: %s; still serving version %s", old.root,
                           version[:12], err, self.current.version[:12])
            return False
        self.current = Snapshot.of(store)
        logger.info("index %s: now serving version %s (%d items, was %s with %d)", old.root, version[:12],
                    len(store), old.version[:12], len(old))
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failed read; the server keeps serving
                logger.exception("index %s: reload check failed", self.current.store.root)

    def start(self) -> None:
        """Start the watcher thread (nothing when ``interval`` is 0)."""
        if self.interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="index-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
