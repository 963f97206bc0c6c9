"""benchmarks/bench_transfer.py: the mean +- std table (hand-computed) and the skips without fonts or themes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_transfer.py"
_spec = importlib.util.spec_from_file_location("bench_transfer", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(recipe, before, after):
    return {"recipe": recipe, "epochs": 20 if recipe == "scratch" else 3,
            "untrained": {"recall@1": before, "map@r": before / 5}, "trained": {"recall@1": after, "map@r": after / 5}}


def test_table_gives_mean_std_and_the_smallest_gain():
    text = bench.table([_run("scratch", 0.40, 0.50), _run("scratch", 0.42, 0.46), _run("defaults", 0.4, 0.3)])
    rows = text.splitlines()
    # R@1 trained 0.50, 0.46: mean 0.48, sample std 0.0283; gains 0.10, 0.04: mean 0.07, std 0.0424
    assert rows[2] == ("| scratch | 20 | 2 | 0.410 ± 0.014 | 0.480 ± 0.028 | +0.070 ± 0.042 (min +0.040) | "
                       "0.082 ± 0.003 | 0.096 ± 0.006 |")
    assert rows[3].startswith("| defaults | 3 | 1 | 0.400 ± 0.000 | 0.300 ± 0.000 | -0.100 ± 0.000 (min -0.100)")


def test_skips_with_the_install_command_when_themes_are_missing(monkeypatch, capsys):
    monkeypatch.setattr(bench.icon_themes, "missing_themes", lambda: ["oxygen"])
    assert bench.main(bench.get_args_parser().parse_args(["--set", "icons"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped: icon themes ['oxygen'] are not installed") and "oxygen-icon-theme" in out


def test_skips_with_the_install_command_when_fonts_are_missing(monkeypatch, capsys):
    monkeypatch.setattr(bench.font_glyphs, "font_families", lambda: {"dejavu sans": Path("DejaVuSans.ttf")})
    assert bench.main(bench.get_args_parser().parse_args([])) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped: only 1 font families are installed (the glyph set needs 60)")
    assert "apt-get install --no-install-recommends fonts-3270" in out
