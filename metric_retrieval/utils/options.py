"""Declared options: how a registered component names, types and bounds its own settings (fairseq-style
``add_args``, as data instead of code).

A component (a class or a builder function in a :class:`metric_retrieval.utils.registry.Registry`) lists its options in
an ``options`` attribute::

    @SAMPLERS.register("m_per_class")
    class MPerClassSampler(BaseBatchSampler):
        options = (Option("samples_per_class", int, 4, "images per class in a batch", low=1, kwarg="m"),)

Each option is one ``train.py`` flag and YAML key of the same name; the parser, the YAML checks, the range
checks and ``train.py --list`` are assembled from the declarations (:mod:`metric_retrieval.training.components`). An
option with ``flag=False`` is the component's own constructor setting rather than a flag: a model part's is set with
``--model_option KEY=VALUE`` or its YAML node (``head: {name: gem, gem_p: 4}``) and checked against what the
selected backbone and head declare; its default is the constructor's. An option several components declare as
a flag (``--pooling`` for the baseline and CLF heads) must be declared identically by each; it becomes one flag
whose help names its users (:func:`merge_options`). A function builder declares its options with
:func:`declare`.
"""
from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.parsing import parse_number_list, range_problem

__all__ = ["Option", "builder_kwargs", "declare", "merge_options", "options_of"]


@dataclass(frozen=True)
class Option:
    """One option: flag ``--name`` (plus ``aliases``) and YAML key ``name``.

    ``type`` is ``int``, ``float``, ``str``, ``list`` (a repeatable flag, each use appending one ``metavar``
    string) or ``bool`` (a switch: ``--name``; ``negatable`` adds ``--no-name``); ``low``/``high`` bound a number
    (``low_ok``/``high_ok``: whether the bound itself is allowed); ``item``: the value is a comma-separated list
    of ``item`` numbers (``"1,2,4"``), each within the bounds; ``expected`` names what a bad value should have
    been (``"a fraction"``, ``"positive factors"``) in the message. ``kwarg`` is the builder keyword the value
    fills (default ``name``; ``to_builder=False``: the component reads it from the config itself);
    ``flag=False``: no flag of its own, set per component (see the module docstring). A value of ``None`` means
    "not set" (the builder's own default applies).
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_ok: bool = True
    high_ok: bool = True
    negatable: bool = False
    aliases: tuple[str, ...] = ()
    kwarg: str = ""
    to_builder: bool = True
    flag: bool = True
    item: type | None = None
    expected: str = ""
    metavar: str | None = None

    def __post_init__(self) -> None:
        if not self.kwarg:
            object.__setattr__(self, "kwarg", self.name)

    @property
    def flags(self) -> tuple[str, ...]:
        return (f"--{self.name}", *self.aliases)

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every option string the command line accepts (``--no-`` forms of a negatable switch included)."""
        if self.type is bool and self.negatable:
            return tuple(s for flag in self.flags for s in (flag, f"--no-{flag[2:]}"))
        return self.flags

    def add_to(self, group: argparse._ArgumentGroup, users: str = "") -> None:
        """Add the flag to an argparse group; ``users`` (e.g. ``"head cgd"``) is appended to the help."""
        text = f"{self.help} [{users}]" if users and self.help else (self.help or (f"[{users}]" if users else None))
        text = text and text.replace("%", "%%")  # argparse formats help with %
        if self.type is bool:
            action = argparse.BooleanOptionalAction if self.negatable else "store_true"
            group.add_argument(*self.flags, dest=self.name, action=action, default=self.default, help=text)
        elif self.type is list:
            group.add_argument(*self.flags, dest=self.name, action="append", default=list(self.default or ()),
                               metavar=self.metavar, help=text)
        else:
            group.add_argument(*self.flags, dest=self.name, type=None if self.type is str else self.type,
                               default=self.default, choices=self.choices, help=text)

    def problem(self, value: Any, where: str | None = None) -> str | None:
        """Why ``value`` is not allowed (type, choices, range), or None. ``where`` names it (default ``--name``)."""
        if value is None:
            return None
        where = where or f"--{self.name}"
        expected = {bool: "true or false", int: "an integer", float: "a number", list: "a list"}.get(self.type)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = {bool: isinstance(value, bool), int: is_number and math.isfinite(value) and float(value) == int(value),
                float: is_number, list: isinstance(value, (list, tuple))}.get(self.type, True)
        if not fits:
            return f"{where} must be {expected}, got {value!r}"
        if self.type in (bool, list):
            return None
        if self.choices is not None and value not in self.choices:
            return f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.item is not None:
            return self._list_problem(value, where)
        if self.low is None and self.high is None:
            return None
        if self.type is int and self.high is None and self.low_ok and not self.expected:
            if self.low == 1:
                return None if value >= 1 else f"{where} must be a positive integer, got {value}"
            return None if value >= self.low else f"{where} must be >= {self.low:g}, got {value}"
        return self._range_problem(float(value), where)

    def _range_problem(self, value: float, where: str) -> str | None:
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        message = range_problem(self.name, value, low, self.low_ok, high, self.high_ok and high < math.inf)
        if message is None:
            return None
        if self.expected:  # one sentence whatever broke it (not finite, or out of range)
            left, right = "[" if self.low_ok else "(", "]" if self.high_ok and high < math.inf else ")"
            return f"{where} must be {self.expected} in {left}{low:g}, {high:g}{right}, got {value:g}"
        return message.replace(f"--{self.name}", where, 1)

    def _list_problem(self, value: Any, where: str) -> str | None:
        """A comma-separated list of ``item`` numbers: every one parses, is finite and lies within the bounds."""
        wanted = self.expected or f"comma-separated {self.item.__name__} values in range"
        try:
            numbers = parse_number_list(value, where, self.item)
        except UserError:
            numbers = []
        if not numbers or any(self._range_problem(float(n), where) for n in numbers):
            return f"{where} must list {wanted}, got {value!r}"
        return None

    def describe(self, with_default: bool = True) -> str:
        """``type = default`` with its choices or range, for listings."""
        kind = f"list of {self.item.__name__}" if self.item is not None else self.type.__name__
        text = kind + (f" = {self.default!r}" if with_default else "")
        if self.choices is not None:
            text += f" in {{{', '.join(map(str, self.choices))}}}"
        elif self.low is not None or self.high is not None:
            left = ("[" if self.low_ok else "(") + (f"{self.low:g}" if self.low is not None else "-inf")
            right = (f"{self.high:g}" if self.high is not None else "inf") + ("]" if self.high_ok and
                                                                               self.high is not None else ")")
            text += f" in {left}, {right}"
        return text


def options_of(component: Any) -> tuple[Option, ...]:
    """The options ``component`` declares (none if it declares nothing; a family member: its family's)."""
    if isinstance(component, functools.partial):
        component = component.func
    return tuple(getattr(component, "options", ()))


def builder_kwargs(component: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """The builder keywords ``component``'s declared options take from a resolved config (unset ones left out)."""
    return {o.kwarg: cfg[o.name] for o in options_of(component) if o.to_builder and cfg.get(o.name) is not None}


def declare(*options: Option, check: Callable[[dict[str, Any]], list[str]] | None = None
            ) -> Callable[[Callable], Callable]:
    """Decorator attaching ``options`` (and a ``check_config(cfg) -> problems`` hook) to a builder function;
    classes set ``options`` / define ``check_config`` themselves."""

    def decorator(fn: Callable) -> Callable:
        fn.options = options
        if check is not None:
            fn.check_config = check
        return fn

    return decorator


def merge_options(declared: Iterable[tuple[str, Option]]) -> dict[str, tuple[Option, list[str]]]:
    """``(component name, option)`` pairs → ``{option name: (option, [component names])}``.

    Raises:
        ValueError: two components declare the same name differently (one flag cannot serve both).
    """
    merged: dict[str, tuple[Option, list[str]]] = {}
    for component, option in declared:
        if option.name in merged:
            first, users = merged[option.name]
            if first != option:
                raise ValueError(f"option {option.name!r} is declared differently by {users[0]} and {component}: "
                                 f"{first} vs {option}")
            users.append(component)
        else:
            merged[option.name] = (option, [component])
    return merged
