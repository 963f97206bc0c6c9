"""No test, script or benchmark writes to a fixed temporary path: two runs at once would share it, and
nothing would clean it up (they use pytest's ``tmp_path`` or a fresh ``tempfile`` folder instead)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TMP = "/" + "tmp"  # spelled apart, so that this file does not match itself
# a quoted or assigned path that starts at the temporary root, e.g. "<TMP>/runs" or OUT=<TMP>/x
FIXED = re.compile(r"""["'=]""" + re.escape(TMP) + r"""(?:/|["'\s)]|$)""", re.MULTILINE)  # not prose


def sources() -> list[Path]:
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    files += [p for p in (ROOT / "scripts").iterdir() if p.suffix in {".py", ".sh"}]
    return sorted(files)


def test_the_pattern_finds_a_fixed_path_and_passes_a_temporary_one():
    assert FIXED.search(f'out = "{TMP}/metric_retrieval_smoke/runs"')
    assert FIXED.search(f"OUT={TMP}/x python train.py")
    assert not FIXED.search(f"prose naming a fixed {TMP} path")
    assert not FIXED.search('out = tmp_path / "runs"') and not FIXED.search("tempfile.mkdtemp(dir=base)")


def test_no_fixed_tmp_paths_in_tests_scripts_and_benchmarks():
    hits = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            for p in sources() for text in [p.read_text()] for m in FIXED.finditer(text)]
    assert not hits, f"fixed {TMP} paths (use tmp_path or tempfile): {hits}"
