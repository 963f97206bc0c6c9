"""Issue 26 items 4-6, 9, 10 on the index: a second writer is refused, adds are idempotent (also after a kill),
a changed shard size is refused, flipped bytes in every kind of index file are caught (the previous version is
opened instead), a read-only index is a clear error, a killed writer's temporaries are removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import index as index_cli
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import exact_search
from metric_retrieval.training.run_lock import RunLock
from metric_retrieval.utils.errors import UserError
from tests.index.conftest import COLOURS, write_catalogue, write_image

REPO = Path(__file__).resolve().parents[2]
FAST = ["--workers", "0", "--no_progress", "--device", "cpu"]


def build(checkpoint, images, out, *extra) -> int:
    return index_cli.main(["build", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                           *FAST, *extra])


def add(out, images, *extra) -> int:
    return index_cli.main(["add", str(out), "--images", str(images), *FAST, *extra])


@pytest.fixture
def two_versions(checkpoint, tmp_path):
    """An index built from 6 images, then 6 more added: generation 2 current, generation 1 previous."""
    first, second = tmp_path / "a", tmp_path / "b"
    write_catalogue(first, per_class=2)
    write_catalogue(second, per_class=2, seed=1)
    out = tmp_path / "idx"
    assert build(checkpoint, first, out) == 0 and add(out, second) == 0
    return out, first, second


def test_a_second_writer_is_refused_naming_the_holder(two_versions, capsys):
    out, first, _ = two_versions
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from metric_retrieval.training.run_lock "
                               "import RunLock\nwith RunLock(sys.argv[1]):\n    print('held', flush=True); "
                               "time.sleep(60)", str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert add(out, first) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"index {out} is in use by another index.py build or add (pid {holder.pid}" \
            in err
    finally:
        holder.kill()
        holder.wait()
    assert len(IndexStore.open(out)) == 12  # nothing was written by the refused run


@pytest.mark.slow
def test_two_concurrent_add_processes_never_mix_items(two_versions, tmp_path):
    out, _, _ = two_versions
    batches = [tmp_path / "c1", tmp_path / "c2"]
    for n, b in enumerate(batches):
        write_catalogue(b, per_class=3, seed=10 + n)
    procs = [subprocess.Popen([sys.executable, "index.py", "add", str(out), "--images", str(b), *FAST], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for b in batches]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    store = IndexStore.open(out)
    if codes == [0, 2]:  # overlapped: one was refused with one line
        assert any("in use by another index.py build or add" in err for _, err in results)
        assert len(store) == 12 + 9
    else:  # ran one after the other
        assert codes == [0, 0] and len(store) == 12 + 18
    assert len(set(store.items["paths"])) == len(store)
    # every vector is the one its path's shard holds: exact search of each item finds itself first
    ids = exact_search(store, __import__("torch").from_numpy(store.index.reconstruct_n(0, len(store))), 1)
    assert ids[:, 0].tolist() == list(range(len(store)))


def test_add_is_idempotent_by_path_and_content(two_versions, capsys):
    out, first, second = two_versions
    capsys.readouterr()
    assert add(out, second) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["added"] == 0 and result["already_present"] == 6 and result["count"] == 12
    victim = sorted(second.rglob("*.jpg"))[0]
    victim.write_bytes(sorted(first.rglob("*.jpg"))[0].read_bytes())  # same path, new content
    assert add(out, second) == 0  # without --update: skipped and counted, the old vector stays
    result = json.loads(capsys.readouterr().out)
    assert (result["added"], result["already_present"], result["changed"], result["count"]) == (0, 5, 1, 12)


def assert_vectors_are_the_files(store: IndexStore, checkpoint) -> None:
    """Every item's vector is its file's embedding now (computed independently), one item per path."""
    reference = Embedder(checkpoint)
    paths = store.items["paths"]
    assert len(set(paths)) == len(paths) == store.index.ntotal
    expected = np.stack([reference.embed_file(p).numpy() for p in paths])
    scores, ids = store.search(expected, 1)
    assert ids[:, 0].tolist() == list(range(len(paths)))  # each file finds its own item first
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "IVF2,Flat", "IVF2,Flat,RFlatDisk"])
def test_add_update_replaces_the_vectors_of_changed_images(checkpoint, tmp_path, capsys, factory):
    first, second = tmp_path / "a", tmp_path / "b"
    write_catalogue(first, per_class=3)
    write_catalogue(second, per_class=2, seed=1)
    out = tmp_path / "idx"
    assert build(checkpoint, first, out, "--index_factory", factory) == 0 and add(out, second) == 0
    for n, victims in enumerate([sorted(second.rglob("*.jpg"))[:2], sorted(first.rglob("*.jpg"))[-1:]]):
        for m, victim in enumerate(victims):  # same path, another image
            write_image(victim, COLOURS["green"], seed=9000 + 10 * n + m)
        capsys.readouterr()
        assert add(out, second if n == 0 else first, "--update") == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["added"], result["updated"], result["count"]) == (len(victims), len(victims), 15)
        store = IndexStore.open(out)
        if factory != "Flat":
            store.set_search_params(nprobe=2)  # every list: exact
        if store.vectors is not None:  # the disk refine: --update rewrote the vectors file from the kept items
            assert store.vectors.count == 15 and f"vectors-{store.meta['generation']}.f32" in store.meta["files"]
        assert store.index.is_trained and store.meta["factory"] == factory
        assert_vectors_are_the_files(store, checkpoint)
        assert len(store.meta["superseded"]) == (2 if n == 0 else 3)
        exact = exact_search(store, torch.from_numpy(np.stack([Embedder(checkpoint).embed_file(p).numpy()
                                                               for p in store.items["paths"]])), 1)
        assert exact[:, 0].tolist() == list(range(15))  # eval's exact reference skips the superseded rows
    assert add(out, first, "--update") == 0  # nothing changed since: nothing to do
    assert json.loads(capsys.readouterr().out)["added"] == 0


@pytest.mark.slow
def test_an_add_killed_after_its_commit_then_rerun_adds_nothing_twice(two_versions, tmp_path):
    """The add process is killed right after ``store.save`` commits (before it prints); the rerun the error
    message advises finds every item present."""
    out, _, _ = two_versions
    more = tmp_path / "more"
    write_catalogue(more, per_class=2, seed=7)
    script = ("import os, signal, sys, index\n"
              "from metric_retrieval.retrieval.index_store import IndexStore\n"
              "save = IndexStore.save\n"
              "def save_then_die(self):\n    save(self)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "IndexStore.save = save_then_die\n"
              "index.main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", script, "add", str(out), "--images", str(more), *FAST], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == -9
    assert len(IndexStore.open(out)) == 18
    assert add(out, more) == 0
    assert len(IndexStore.open(out)) == 18


def test_a_resume_with_another_shard_size_is_refused(checkpoint, tmp_path, capsys, monkeypatch):
    root = tmp_path / "cat"
    write_catalogue(root, per_class=3)
    out = tmp_path / "idx"
    from metric_retrieval.retrieval import indexing

    def killed(*args, **kwargs):  # the build dies after embedding, before the index is written
        raise KeyboardInterrupt

    monkeypatch.setattr(indexing.IndexStore, "create", killed)
    assert build(checkpoint, root, out, "--shard_size", "4") == 130
    monkeypatch.undo()
    assert build(checkpoint, root, out, "--shard_size", "5") == 2
    assert "interrupted run with --shard_size 4; rerun with --shard_size 4" in capsys.readouterr().err
    assert build(checkpoint, root, out, "--shard_size", "4") == 0
    store = IndexStore.open(out)
    assert len(store) == 9 and len(set(store.items["paths"])) == 9


def flip(path: Path, at: float = 0.5, count: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    start = int(len(raw) * at)
    for i in range(start, min(start + count, len(raw))):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["index-2.faiss", "items-2.json", "meta.json"])
def test_flipped_bytes_in_each_index_file_fall_back_to_the_previous_version(two_versions, name, caplog):
    out, _, _ = two_versions
    if name == "meta.json":  # edit a value, keeping valid JSON: only the checksum can tell
        meta = json.loads((out / name).read_text())
        meta["count"] = 13
        (out / name).write_text(json.dumps(meta))
    elif name == "items-2.json":  # an edited path, still valid JSON
        (out / name).write_text((out / name).read_text().replace("red_1_0.jpg", "evil.jpg"))
    else:
        flip(out / name, count=4096)
    store = IndexStore.open(out)
    assert len(store) == 6 and store.meta["generation"] == 1
    assert f"{name} does not match" in caplog.text and "opened the previous version (generation 1, 6 items)" \
        in caplog.text


def test_both_versions_damaged_is_an_error(two_versions):
    out, _, _ = two_versions
    flip(out / "index-2.faiss")
    flip(out / "index-1.faiss")
    with pytest.raises(UserError, match="index-2.faiss does not match.*and the previous version too: "
                                        "index-1.faiss does not match"):
        IndexStore.open(out)


def test_flipped_bytes_in_a_shard_are_caught(two_versions, capsys):
    out, _, _ = two_versions
    shard = sorted((out / "shards" / "batch-000").glob("shard-*.pt"))[0]
    flip(shard, at=0.6)
    assert index_cli.main(["eval", str(out), "--queries", str(out.parent / "a"), *FAST]) == 2
    assert "is unreadable or damaged" in capsys.readouterr().err


def test_add_into_a_read_only_index_is_one_clear_line(two_versions, capsys):
    out, first, _ = two_versions
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    (out / ".lock").unlink()
    out.chmod(0o555)
    try:
        assert add(out, first) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith("error: index ") and "is not writable" in err and "Traceback" not in err


def test_a_killed_writers_temporaries_are_removed(two_versions, first_shard_tmp=".shard-000000.pt.x1.tmp"):
    out, first, _ = two_versions
    (out / ".index-3.faiss.abc.tmp").write_bytes(b"x" * 1000)
    (out / "shards" / "batch-000" / first_shard_tmp).write_bytes(b"x")
    assert add(out, first) == 0
    assert not list(out.rglob(".*.tmp"))
    with RunLock(out, "index", "x"):  # and the lock is free again
        pass
