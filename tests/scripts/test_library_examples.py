"""The library page's examples (docs/library.md) run as written, and print what they say they compute."""
import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "library.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def run_example(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(PAGE), "exec"), {"__name__": "__example__"})  # noqa: S102 - our own page
    return out.getvalue()


def test_the_page_has_the_three_examples():
    assert len(EXAMPLES) == 3


def test_das_loss_and_miner_in_a_user_loop():
    out = run_example(EXAMPLES[0])
    loss = float(re.search(r"loss after 20 steps: ([0-9.]+)", out).group(1))
    assert loss >= 0


def test_the_evaluator_on_user_embeddings_matches_brute_force():
    import torch

    out = run_example(EXAMPLES[1])
    namespace: dict = {}
    exec(compile(EXAMPLES[1], str(PAGE), "exec"), namespace)  # noqa: S102 - recompute its tensors
    x, y = namespace["embeddings"], namespace["labels"]
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    top1 = y[sim.argmax(1)] == y
    assert namespace["metrics"]["recall@1"] == pytest.approx(top1.float().mean().item())
    assert f"'recall@1': {round(top1.float().mean().item(), 4)}" in out
    q, g = x[::2], x[1::2]
    split = (y[1::2][(q @ g.T).argmax(1)] == y[::2]).float().mean().item()
    assert f"query/gallery Recall@1 {split:.4f}" in out
    assert torch.is_tensor(x)


def test_an_index_from_user_embeddings_finds_each_item_first():
    out = run_example(EXAMPLES[2]).splitlines()
    assert out[0].startswith("[('item0', '0', 1.0") and out[1].startswith("[('item1', '1', 1.0")
    assert out[-1] == "510 items"
