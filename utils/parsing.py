"""Flag text → values, shared by the config, the builders and the checks."""
from __future__ import annotations

from utils.errors import UserError


def parse_number_list(text: str | list | None, flag: str, kind: type = int) -> list:
    """``"1,2,4"`` (or a YAML list) → ``[1, 2, 4]`` of ``kind``; ``None`` → ``[]``; other text names ``flag``."""
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [kind(v) for v in text]
    try:
        return [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated numbers, got {text!r}") from None
