"""The docs site: it builds with ``--strict``, documents every public name, and its generated parts are current.

The README's and the pages' shell commands are run or listed by ``test_doc_commands.py``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The public modules and their API pages (docs/api/); a name in a module's __all__ needs an entry on its page.
API_PAGES = {"losses": "losses", "losses.miners": "losses-miners", "samplers": "samplers", "producers": "producers",
             "evaluation": "evaluation", "models": "models", "retrieval": "retrieval"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_site_builds_strict_with_every_page_in_the_nav(site):
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    nav = (REPO / "mkdocs.yml").read_text()
    assert not [p for p in pages if p not in nav], "pages missing from mkdocs.yml's nav"
    assert all((site / p.removesuffix(".md") / "index.html").is_file() or p == "index.md" for p in pages)


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_api_reference_has_every_public_name(site, module):
    mod = importlib.import_module(f"metric_retrieval.{module}")
    html = (site / "api" / API_PAGES[module] / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(metric_retrieval[\w.]*)"', html))
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        # a function shadowed by its module's name (evaluation.knn) is documented under its defining path
        where = getattr(obj, "__name__", "") if isinstance(obj, type(sys)) else \
            f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if f"metric_retrieval.{module}.{name}" not in anchors and where not in anchors:
            missing.append(name)
    assert not missing, f"docs/api/{API_PAGES[module]}.md documents no {missing}"


def test_commands_page_is_current():
    spec = importlib.util.spec_from_file_location("gen_commands", REPO / "docs" / "gen_commands.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / "docs" / "commands.md").read_text(encoding="utf-8") == gen.render(), \
        "docs/commands.md is stale: run python docs/gen_commands.py"


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to a docs/ page"
    links = re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines))
    assert links and all((REPO / link).is_file() for link in links), [x for x in links if not (REPO / x).is_file()]


@pytest.mark.parametrize("block", range(len(re.findall(r"^```python\n", (REPO / "README.md").read_text(), re.M))))
def test_readme_python_examples_run_as_written(block, monkeypatch, tmp_path):
    code = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.S | re.M)[block]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md python block {block}", "exec"), {"__name__": "__main__"})
    assert out.getvalue().strip(), "the example prints its result"


def test_architecture_names_every_module():
    """The package map of docs/architecture.md names each module of metric_retrieval/ in its package's entry."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = page.split("## Package map", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    entries = dict(re.findall(r"^  (\w+)/\s+(.*?)(?=^  \w|\n\n|\Z)", tree, re.S | re.M))
    root = REPO / "metric_retrieval"
    missing = []
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.html")):
        parts = path.relative_to(root).parts
        if len(parts) == 1 or "__pycache__" in parts or path.stem == "__init__":
            continue
        entry = entries.get(parts[0], "")
        if not re.search(rf"\b{re.escape(path.stem if path.suffix == '.py' else path.name)}\b", entry) or \
                (len(parts) > 2 and f"{parts[1]}/" not in entry):
            missing.append(path.relative_to(REPO).as_posix())
    assert entries and not missing, f"docs/architecture.md's package map does not name {missing}"
