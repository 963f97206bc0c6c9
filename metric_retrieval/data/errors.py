"""Dataset problems a user can fix: a missing file, a wrong layout, a truncated list, a corrupt image."""
from __future__ import annotations

from metric_retrieval.utils.errors import UserError


class DatasetError(UserError):
    """A dataset root that cannot be read; the message names the path and shows the expected layout."""


class BadImageError(DatasetError):
    """An image that stopped being readable after the run checked it (truncated, replaced, deleted).

    Raised in a DataLoader worker, it reaches the main process as ``BadImageError("Caught BadImageError in
    DataLoader worker process N. Original Traceback ...")``; the constructor keeps only the original
    one-line message, so the user sees the file's path rather than a traceback.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


class DatasetWarning(UserWarning):
    """A readable dataset that differs from the standard one (image counts, dropped images)."""


__all__ = ["BadImageError", "DatasetError", "DatasetWarning"]
