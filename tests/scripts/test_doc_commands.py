"""Every command shown in the README and the docs pages still runs, or is listed here with the reason it is not run.

A command is one line (continuation lines joined, the trailing ``# comment`` dropped) of a ``bash``/``console``
block of ``README.md`` or ``docs/*.md``. Every command is

* **checked** against the program it calls: a Python script's own parser parses its arguments (``train.py``'s
  are resolved with their YAML config and checked as a run would, ``test.py``'s with ``check_test_args``), a
  ``python -m`` module must exist and take them, a paper-table script prints its rows with ``--dry-run``; so a
  renamed flag, script, config file or choice fails here whether or not the command is run; and
* either **run** here on small synthetic data (``RUN``: the paths it names are mapped into a temporary folder),
* or listed in ``NOT_RUN`` with the reason (a GPU, a benchmark dataset, root, or too long for the default suite)
  and the test that covers it where there is one.

A command added to a page fails ``test_every_command_is_run_or_listed`` until it is added to one of the two.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from metric_retrieval.utils.errors import UserError
from tests.index.conftest import save_checkpoint, write_catalogue

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHONS = {"python", "python3", ".venv/bin/python"}
COMMAND_NAMES = {"metric-retrieval", ".venv/bin/metric-retrieval"}


def doc_commands() -> dict[str, list[str]]:
    """``{command: [page, ...]}`` for every command of a bash/console block of the README and the docs pages."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for body in re.findall(r"^```(?:bash|console)\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M):
            for line in re.sub(r"\\\n\s*", "", body).splitlines():
                command = re.sub(r"^\$ ", "", line.strip())
                command = re.split(r"\s+#\s", command)[0].strip() if not command.startswith("#") else ""
                if command:
                    found.setdefault(command, []).append(page.relative_to(REPO).as_posix())
    return found


COMMANDS = doc_commands()

# Why a command is not run by the default suite, and what runs it or its parts (it is still checked below).
NOT_RUN = {
    "bash scripts/quickstart.sh": "installs the venv and trains for about a minute; "
    "tests/scripts/test_quickstart.py runs the script with a stand-in interpreter",
    ".venv/bin/python -m pytest": "the test suite itself",
    ".venv/bin/python -m mkdocs serve": "a server that runs until stopped; tests/scripts/test_docs.py builds the site",
    ".venv/bin/python -m mkdocs build --strict": "writes site/ in the checkout; tests/scripts/test_docs.py runs it "
    "into a temporary folder",
    ".venv/bin/python docs/gen_commands.py": "rewrites docs/commands.md; tests/scripts/test_docs.py checks that the "
    "page equals what it would write",
    "metric-retrieval train --config configs/cgd/cars.yaml --data_path /data/cars": "needs CARS196 and a GPU",
    "metric-retrieval train --data_path /data/cars --data_name cars --backbone_type resnet50 --head cgd --gd_config SG "
    "--feature_dim 1536 --loss ls_ce+batch_hard_triplet --miner none --batch_size 128": "needs CARS196 and a GPU",
    "metric-retrieval train --config configs/das/base.yaml --data_name cub --data_path /data/cub "
    "--loss triplet --miner "
    "distance --das --das_dfs_scale_left 0.99 --das_dfs_scale_right 1.01 --detach": "needs CUB-200-2011 and a GPU",
    "torchrun --nproc_per_node 4 train.py --config configs/clf/sop.yaml --data_path /data/sop --amp bf16":
        "needs SOP and 4 GPUs; tests/engine DDP tests run torchrun on gloo",
    "metric-retrieval train --backbone_type timm:vit_small_patch16_224 --image_size 48 --model_option token_pool=mean "
    "--head token --feature_dim 128 --optimizer adamw --lr 1e-4 --weight_decay 0.05 --warmup_epochs 1 --scheduler "
    "cosine --num_epochs 5 --pretrained none": "trains a ViT-S for minutes on a CPU; tests/e2e/test_vit_learns.py "
    "(slow) runs it",
    "metric-retrieval train --loss multi_similarity --miner none --loss_option memory_size=512 --loss_option "
    "memory_warmup=10": "trains the quick recipe for about a minute; tests/losses test the memory",
    "metric-retrieval train --config configs/transfer/scratch.yaml --data_path /data/glyphs64 --image_size 64":
        "needs the glyph set (Debian font packages) and 3-22 min; benchmarks/bench_transfer.py runs it",
    "metric-retrieval eval --checkpoint runs/cars/model_best.pth --data_name cars --data_path /data/cars "
    "--json r.json": "needs CARS196 and a trained run; tests/e2e/test_train_and_query.py evaluates a tiny run",
    "metric-retrieval query --query_img_name path/to/query.jpg --data_base "
    "runs/cars/database_best.pth --retrieval_num 8":
        "needs a trained run's database; tests/e2e/test_train_and_query.py queries a tiny run's",
    "metric-retrieval eval --data_name roxford5k --data_path /data/roxford5k --backbone_type resnet101 --head gem "
    "--pretrained imagenet --scales 1,0.7071,0.5 --qe aqe:2": "needs ROxford5k and ImageNet weights",
    "metric-retrieval eval --learn_whitening w.pth --data_name paris6k --data_path /data/paris6k "
    "--backbone_type resnet101 "
    "--head gem --pretrained imagenet": "needs Paris6k and ImageNet weights",
    ".venv/bin/metric-retrieval serve --index runs/quickstart/index": "a server that runs until stopped; "
    "tests/index/test_serve.py drives the app and the command's start-up",
    "metric-retrieval export --checkpoint runs/default/model_best.pth --format onnx --out model.onnx":
        "the ONNX exporter takes 20-80 s a model; tests/e2e/test_export.py runs it on a tiny run",
    "bash scripts/cgd.sh /data": "trains the CGD table on four benchmark datasets (days on GPUs); checked with "
    "--dry-run",
    "bash scripts/das_table2.sh --smoke": "trains 42 rows for 2 steps each (minutes); "
    "tests/scripts/test_paper_scripts.py runs it (slow)",
    "bash benchmarks/gpu_check.sh": "needs a CUDA GPU; tests/scripts/test_gpu_check.py runs its --dry-run and "
    "its checks with stand-ins",
    "bash benchmarks/gpu_check.sh --python /path/to/env/bin/python --skip knn,index": "needs a CUDA GPU; checked "
    "with --dry-run and this interpreter",
    "apt-get install -y --no-install-recommends $(python -c \"import metric_retrieval.data.font_glyphs as g; "
    "print(*g.FONT_PACKAGES)\")": "installs ~150 Debian packages as root; the $(python -c ...) part is run",
    "apt-get install --no-install-recommends adwaita-icon-theme elementary-xfce-icon-theme gnome-icon-theme "
    "lxde-icon-theme mate-icon-theme oxygen-icon-theme tango-icon-theme": "installs Debian packages as root",
    "metric-retrieval data glyphs --out /data/glyphs64": "needs the Debian font packages; tests/data/"
    "test_font_glyphs.py builds the set where they are installed (slow)",
    "metric-retrieval data icons --out /data/icons64": "needs the Debian icon themes; tests/data/"
    "test_icon_themes.py builds the set where they are installed (slow)",
    "OMP_NUM_THREADS=1 python benchmarks/bench_transfer.py": "trains 8 runs of 3-22 min each",
    "OMP_NUM_THREADS=1 python benchmarks/bench_transfer.py --set icons": "trains 8 runs of 3-22 min each",
}

# Placeholders of the pages that a check or a run replaces.
PLACEHOLDERS = {"/path/to/env/bin/python": sys.executable}


# --- running a command in this process ------------------------------------------------------------------------

def words_of(command: str) -> list[str]:
    """The command's argv without leading ``VAR=value`` assignments, placeholders replaced; the installed
    ``metric-retrieval`` command is ``python -m metric_retrieval``."""
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)]
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    if words and words[0] in COMMAND_NAMES:
        words = ["python", "-m", "metric_retrieval", *words[1:]]
    return words


def script_and_args(words: list[str]) -> tuple[str, list[str]]:
    """``(script or "-m module" or "-c", args)`` of a ``python`` or ``torchrun`` command line."""
    if words[0] == "torchrun":  # torchrun's own options come before the script
        start = next(i for i, w in enumerate(words) if w.endswith(".py"))
        return words[start], words[start + 1:]
    if words[1] in ("-m", "-c"):
        return f"{words[1]} {words[2]}", words[3:]
    return words[1], words[2:]


def run_python(words: list[str], mapping: dict[str, str] | None = None) -> str:
    """Run a ``python SCRIPT|-m MODULE|-c CODE ARGS`` line here (``runpy``, as ``python`` would) with its paths mapped
    (prefix replacement) into a temporary folder; returns stdout, fails the test on a non-zero exit."""
    script, args = script_and_args(words)
    for old, new in (mapping or {}).items():
        args = [new + a[len(old):] if a.startswith(old) else a for a in args]
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    code = 0
    try:
        sys.argv = [script.split()[-1], *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if script.startswith("-m "):
                runpy.run_module(script[3:], run_name="__main__", alter_sys=True)
            elif script.startswith("-c "):
                exec(compile(script[3:], "<string>", "exec"), {"__name__": "__main__"})
            else:
                runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    assert code == 0, f"{shlex.join(words)} exited {code}:\n{err.getvalue()[-3000:]}"
    return out.getvalue()


@functools.cache
def dry_run(words: tuple[str, ...]) -> subprocess.CompletedProcess:
    """A ``bash`` script's ``--dry-run`` (once per argument list: two pages may show the same table)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}  # the table scripts' interpreter
    return subprocess.run(["bash", *words, "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


# --- the check every command gets ------------------------------------------------------------------------------

def load_script(path: str):
    spec = importlib.util.spec_from_file_location(f"_doc_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_python(words: list[str]) -> None:
    script, args = script_and_args(words)
    if script.startswith("-c "):
        compile(script[3:], "<python -c>", "exec")
        return
    if script.startswith("-m "):
        name = script[3:]
        assert importlib.util.find_spec(name), f"no module {name}"
        if name == "mkdocs":  # a click program: parse its arguments without running it
            from mkdocs.__main__ import cli

            cli.make_context("mkdocs", list(args))
        elif name == "metric_retrieval":
            check_subcommand(args)
        elif name != "pytest":
            importlib.import_module(name).get_args_parser().parse_args(args)
        return
    assert (REPO / script).is_file(), f"{script} does not exist"
    module = load_script(script)
    args = [a for a in args if a != "--list"]  # train.py answers --list before parsing
    try:
        parsed = module.get_args_parser().parse_args(args)
    except SystemExit:  # argparse printed why to stderr
        pytest.fail(f"{script}'s parser refuses the arguments of {shlex.join(words)}")
    if script == "train.py":  # the YAML file, component names and options, ranges: everything a run checks first
        importlib.import_module("metric_retrieval.training").resolve_config(args, module.get_args_parser())
    elif script == "test.py":
        _check_files_only(parsed)


def check_subcommand(args: list[str]) -> None:
    """``metric-retrieval COMMAND ARGS``: the command exists and its parser takes the arguments; ``train``'s are
    resolved with their YAML config, ``eval``'s and ``query``'s checked as the command checks them first."""
    from metric_retrieval import cli

    assert args and args[0] in cli.COMMANDS, f"no command {args[:1]} (commands: {', '.join(cli.COMMANDS)})"
    module = importlib.import_module(cli.COMMANDS[args[0]][0])
    rest = [a for a in args[1:] if a != "--list"]
    try:
        parsed = module.get_args_parser().parse_args(rest)
    except SystemExit:
        pytest.fail(f"metric-retrieval {args[0]}'s parser refuses {shlex.join(rest)}")
    if args[0] == "train":
        importlib.import_module("metric_retrieval.training").resolve_config(rest, module.get_args_parser())
    elif args[0] in ("eval", "query"):
        _check_files_only(parsed)


def _check_files_only(parsed) -> None:
    """The files a command names come from earlier steps (a run, a download): only they may be missing."""
    from metric_retrieval.training.validate import check_test_args

    try:
        check_test_args(parsed)
    except UserError as err:
        problems = str(err).splitlines()[1:]
        assert all(line.endswith(": no such file") for line in problems), str(err)


def check_command(command: str) -> None:
    words = words_of(command)
    if words[0] in PYTHONS or words[0] == "torchrun":
        check_python(words)
    elif words[0] == "bash":
        assert (REPO / words[1]).is_file(), f"{words[1]} does not exist"
        assert subprocess.run(["bash", "-n", words[1]], cwd=REPO).returncode == 0
        if words[1] != "scripts/quickstart.sh":  # the table scripts and gpu_check.sh print what they would run
            args = [w for w in words[1:] if w not in ("--dry-run", "--smoke")]
            if words[1].startswith("scripts/") and len(args) == 1:
                args.append("/data")  # --smoke: every row, printed against a data root instead
            result = dry_run(tuple(args))
            assert result.returncode == 0, result.stderr
    elif words[0] == "apt-get":  # the package list a $(python -c ...) prints
        for code in re.findall(r'\$\(python -c "(.*?)"\)', command):
            assert len(run_python(["python", "-c", code]).split()) > 10
    else:
        pytest.fail(f"no check for the program of {command!r}: add one to check_command")


# --- the commands run here ------------------------------------------------------------------------------------

def synth(layout: str, out: Path) -> Path:
    run_python(["python", "data_utils.py", "synth", "--layout", layout, "--out", str(out)])
    return out


def run_check(words: list[str], tmp: Path) -> None:
    name = words[words.index("--data_name") + 1]
    root = synth(name, tmp / name)
    out = run_python(words, {f"/data/{name}": str(root)})
    assert ("\"splits\"" in out) if "--json" in words else ("train" in out and "ok" in out.lower()), out


def run_prepare(words: list[str], tmp: Path) -> None:
    run_python(words, {"/data/cars_256": str(tmp / "cars_256"), "/data/cars": str(synth("cars", tmp / "cars"))})
    run_python(["python", "data_utils.py", "check", "--data_name", "cars", "--data_path", str(tmp / "cars_256")])


def run_index_build(words: list[str], tmp: Path) -> None:
    ckpt = save_checkpoint(tmp / "model_best.pth")
    write_catalogue(tmp / "test")
    run_python(words, {"runs/quickstart/model_best.pth": str(ckpt), ".synth/default_folder/test": str(tmp / "test"),
                       "runs/quickstart/index": str(tmp / "index")})
    assert (tmp / "index" / "meta.json").is_file()


def run_index_query(words: list[str], tmp: Path) -> None:
    build = next(c for c in COMMANDS if c.startswith(".venv/bin/metric-retrieval index build"))
    run_index_build(words_of(build), tmp)
    run_python(words, {"runs/quickstart/index": str(tmp / "index"), ".synth/default_folder/test": str(tmp / "test"),
                       "runs/quickstart/knn.csv": str(tmp / "knn.csv")})
    assert len((tmp / "knn.csv").read_text().splitlines()) > 1


RUN: dict[str, Callable[[list[str], Path], None]] = {
    "metric-retrieval data synth --layout sop --out data/sop_synth":
        lambda words, tmp: run_python(words, {"data/sop_synth": str(tmp / "sop")}),
    "metric-retrieval data check --data_name cub --data_path /data/cub --verify": run_check,
    "metric-retrieval data check --data_name oxford5k --data_path /data/oxford5k --json": run_check,
    "metric-retrieval data prepare --data_name cars --data_path /data/cars --out /data/cars_256 --size 256 --crop":
        run_prepare,
    ".venv/bin/metric-retrieval index build --checkpoint runs/quickstart/model_best.pth --images "
    ".synth/default_folder/test --out runs/quickstart/index": run_index_build,
    ".venv/bin/metric-retrieval query --index runs/quickstart/index --query_dir .synth/default_folder/test --classify "
    "--results runs/quickstart/knn.csv": run_index_query,
    "bash scripts/cgd.sh /data --dry-run": lambda words, tmp: None,  # the check runs it as written
}


def test_every_command_is_run_or_listed():
    shown = set(COMMANDS)
    assert shown, "no commands found in README.md and docs/*.md"
    assert not set(RUN) & set(NOT_RUN)
    missing = {c: COMMANDS[c] for c in sorted(shown - set(RUN) - set(NOT_RUN))}
    assert not missing, f"commands of the docs that this test neither runs nor lists (add them): {missing}"
    stale = sorted((set(RUN) | set(NOT_RUN)) - shown)
    assert not stale, f"listed here but no longer on any page (remove them): {stale}"


def ids(commands) -> list[str]:
    return [re.sub(r"\W+", "_", c)[:80] for c in commands]


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=ids(sorted(COMMANDS)))
def test_command_names_real_programs_flags_and_files(command, monkeypatch):
    monkeypatch.chdir(REPO)
    check_command(command)


@pytest.mark.parametrize("command", sorted(RUN), ids=ids(sorted(RUN)))
def test_command_runs(command, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    RUN[command](words_of(command), tmp_path)
