"""The package and its one command: ``metric-retrieval COMMAND`` / ``python -m metric_retrieval COMMAND``.

The built wheel, installed outside the checkout, is checked by ``scripts/wheel_check.sh`` (run by ``.ci/run``).
"""
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from metric_retrieval import cli

REPO = Path(__file__).resolve().parents[2]


def test_the_console_script_is_the_dispatcher_and_the_only_one():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"metric-retrieval": "metric_retrieval.cli:main"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["metric_retrieval*"]


def test_only_metric_retrieval_is_a_package_at_the_root():
    packages = [p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"]
    assert packages == ["metric_retrieval"]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: metric-retrieval {command}")


def test_usage_lists_the_commands_and_refuses_an_unknown_one(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)
    assert cli.main(["trian"]) == 2
    assert "error: unknown command 'trian'; choose from train, eval" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_python_m_runs_the_same_dispatcher():
    done = subprocess.run([sys.executable, "-m", "metric_retrieval", "data", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: metric-retrieval data")


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["data", "check", "--data_name", "cub", "--data_path", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_test_py_maps_its_modes_onto_eval_and_query(monkeypatch):
    from metric_retrieval.cli import compat
    from metric_retrieval.cli import eval as eval_cmd
    from metric_retrieval.cli import query as query_cmd

    calls = []
    monkeypatch.setattr(eval_cmd, "run", lambda args: calls.append(("eval", args.data_name)) or 0)
    monkeypatch.setattr(query_cmd, "run", lambda args: calls.append(("query", args.index)) or 0)
    compat.test_main(["--eval", "--data_name", "cub"])
    compat.test_main(["--learn_whitening", "w.pth", "--data_name", "sop"])
    compat.test_main(["--index", "idx", "--query_img_name", "q.jpg"])
    assert calls == [("eval", "cub"), ("eval", "sop"), ("query", "idx")]


def test_every_eval_and_query_flag_is_a_test_py_flag():
    """``test.py`` is exactly the union of the two commands' flags (plus ``--eval``): none is declared twice."""
    from metric_retrieval.cli import compat
    from metric_retrieval.cli import eval as eval_cmd
    from metric_retrieval.cli import query as query_cmd

    def flags(parser):
        return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}

    union = flags(eval_cmd.get_args_parser()) | flags(query_cmd.get_args_parser())
    assert flags(compat.get_test_parser()) - {"--eval"} == union


def test_help_loads_none_of_the_heavy_optional_libraries():
    """``--help`` of every command builds its parser without torchvision, timm, faiss, onnx, FastAPI or scipy
    (each loads on first use; ``benchmarks/bench_startup.py`` measures what that saves)."""
    code = ("import sys; from metric_retrieval import cli; import importlib\n"
            "for name, (module, _) in cli.COMMANDS.items(): importlib.import_module(module).get_args_parser()\n"
            "heavy = ('torchvision', 'timm', 'faiss', 'onnx', 'onnxruntime', 'fastapi', 'scipy')\n"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
