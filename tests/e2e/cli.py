"""Run ``test.py`` in-process and capture what a user would see."""
import contextlib
import importlib.util
import io
from pathlib import Path

_spec = importlib.util.spec_from_file_location("test_cli", Path(__file__).resolve().parents[2] / "test.py")
test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_cli)


def run_test_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = test_cli.main(argv)
    return code, out.getvalue(), err.getvalue()
