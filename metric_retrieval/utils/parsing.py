"""Flag text → values, shared by the config, the builders and the checks."""
from __future__ import annotations

import math
from typing import Any

import yaml

from metric_retrieval.utils.errors import UserError


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


def range_problem(flag: str, value: float, low: float, low_ok: bool, high: float = math.inf,
                  high_ok: bool = False) -> str | None:
    """A message when ``value`` is not finite or outside the interval, else None."""
    if not math.isfinite(value):
        return f"--{flag} must be a finite number, got {value}"
    if value < low or (value == low and not low_ok) or value > high or (value == high and not high_ok):
        left, right = "[" if low_ok else "(", "]" if high_ok else ")"
        return f"--{flag} must be in {left}{low:g}, {high:g}{right}, got {value:g}"
    return None


def parse_key_values(items: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}``; values are parsed as YAML scalars."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
