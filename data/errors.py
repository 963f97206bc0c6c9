"""Dataset problems a user can fix: a missing file, a wrong layout, a truncated list, a corrupt image."""
from __future__ import annotations

from utils.errors import UserError


class DatasetError(UserError):
    """A dataset root that cannot be read; the message names the path and shows the expected layout."""


class DatasetWarning(UserWarning):
    """A readable dataset that differs from the standard one (image counts, dropped images)."""


__all__ = ["DatasetError", "DatasetWarning"]
