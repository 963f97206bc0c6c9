"""``python train.py --list``: every registered component of every kind, with its keywords and declared options."""
from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

from metric_retrieval.training.components import KINDS
from metric_retrieval.utils.options import options_of

_spec = importlib.util.spec_from_file_location("train_cli", Path(__file__).resolve().parents[2] / "train.py")
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)


def run_list() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_cli.main(["--list"]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def listing() -> str:
    return run_list()


def _entry(listing: str, title: str, name: str) -> str:
    """The lines of component ``name`` in section ``title``."""
    section = listing.split(f"\n{title} (", 1)[1] if not listing.startswith(f"{title} (") else listing
    block = section.split(f"\n  {name}(", 1)[1]
    lines = block.split("\n")
    return "\n".join([lines[0], *[line for line in _continuation(lines[1:])]])


def _continuation(lines: list[str]):
    for line in lines:
        if not line.startswith("      "):
            return
        yield line


@pytest.mark.parametrize("k", KINDS, ids=[k.title for k in KINDS])
def test_every_registered_component_is_listed_with_its_declared_options(listing, k):
    for name, component in k.registry.items():
        entry = _entry(listing, k.title, name)
        for option in options_of(component):
            is_flag = k.flags and option.flag
            how = "/".join(option.spellings) if is_flag else k.set_by.format(name=name, option=option.name)
            assert f"option {how}: {option.describe(with_default=k.flags)}" in entry, (name, option.name)


def test_keywords_set_through_other_routes_are_listed(listing):
    assert "  margin(margin: float = 0.2, beta: float = 1.2," in listing  # a loss's --loss_option keywords
    assert "  cgd(gd_config: str = 'SG')\n      option --gd_config: str = None" in listing  # the head's own default
    # a constructor option declared with its default is listed once, as an option line with its help
    assert ("  gem()\n      option --model_option gem_p=VALUE or head: {name: gem, gem_p: VALUE}: float = 3.0 in "
            "(0, inf)  (initial GeM exponent p)") in listing
    assert "option --das/--no-das/--embedding_producer_used/--no-embedding_producer_used: bool = False" in listing
    assert "option --momentum: float = 0.9 in [0, 1)" in listing
