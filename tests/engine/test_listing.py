"""``python train.py --list``: every registered name of every registry, with its options and own flags."""
from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

from engine.listing import SECTIONS

_spec = importlib.util.spec_from_file_location("train_cli", Path(__file__).resolve().parents[2] / "train.py")
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)


@pytest.fixture(scope="module")
def listing() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_cli.main(["--list"]) == 0
    return out.getvalue()


@pytest.mark.parametrize("title, registry, skip", SECTIONS, ids=[s[0] for s in SECTIONS])
def test_every_registered_component_is_listed(listing, title, registry, skip):
    section = listing.split(f"{title}:\n", 1)[1]
    for name in registry.names():
        assert f"\n  {name}(" in "\n" + section, name


def test_options_and_own_flags_are_listed(listing):
    assert "  margin(margin: float = 0.2, beta: float = 1.2," in listing
    assert "      flag --das/--no-das/--embedding_producer_used/--no-embedding_producer_used (default False)" in listing
    assert "      flag --no_se (default False)" in listing
