"""index.py build / add / info on a tiny synthetic catalogue: shards, bad files, resume, faiss types, wrong model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import index as index_cli
from metric_retrieval.retrieval import catalogue as catalogue_mod
from metric_retrieval.retrieval.catalogue import read_catalogue, shard_files
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import check_recipe, open_index
from metric_retrieval.utils.errors import UserError
from tests.index.conftest import COLOURS, save_checkpoint, write_catalogue, write_image

REPO = Path(__file__).resolve().parents[2]
FAST = ["--workers", "0", "--no_progress", "--device", "cpu"]


def build(checkpoint, images, out, *extra) -> int:
    return index_cli.main(["build", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                           *FAST, *extra])


@pytest.fixture(scope="module")
def built(checkpoint, tmp_path_factory):
    """A Flat index of 12 good images + 1 unreadable file, in shards of 5 (3 shards)."""
    root = tmp_path_factory.mktemp("cat")
    write_catalogue(root)
    (root / "green" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    out = tmp_path_factory.mktemp("idx") / "index"
    assert build(checkpoint, root, out, "--shard_size", "5") == 0
    return root, out


def test_build_stores_every_readable_image_with_its_metadata(built, checkpoint):
    root, out = built
    store = IndexStore.open(out)
    assert len(store) == 12 and store.meta["factory"] == "Flat" and store.meta["dim"] == 8
    assert store.meta["model"]["checkpoint"] == str(checkpoint)
    assert store.meta["recipe"]["image_size"] == 32 and store.meta["recipe"]["transform"] == "cgd"
    assert store.meta["recipe"] == Embedder(checkpoint).recipe.to_dict()
    assert store.meta["faiss_version"] and store.meta["metric"] == "ip"
    assert "broken.jpg" not in " ".join(store.items["paths"])
    assert sorted(set(store.items["labels"])) == ["blue", "green", "red"]
    assert store.items["ids"][0] == "blue/blue_0_0.jpg"  # relative to the folder root
    assert len(shard_files(out / "shards" / "batch-000")) == 3  # 13 items, 5 per shard
    report = (out / "bad_files.tsv").read_text().splitlines()
    assert len(report) == 2 and report[1].startswith("0\t") and "broken.jpg" in report[1]
    # the stored vectors are the model's own embeddings of the files (same path as test.py's queries)
    embedder = Embedder(checkpoint)
    for i in (0, 7, 11):
        expected = embedder.embed_file(store.items["paths"][i]).numpy()
        np.testing.assert_allclose(store.index.reconstruct(i), expected, atol=1e-6)
        assert abs(float(np.linalg.norm(expected)) - 1) < 1e-5


def test_the_metric_is_the_models_recipes(catalogue_dir, tmp_path):
    """An un-normalised model's index compares by distance (an inner product would rank by vector length) and
    holds the vectors as the model gives them; there is no flag to compare otherwise."""
    unnormalised = save_checkpoint(tmp_path / "model_best.pth", embedding_norm=False)
    assert build(unnormalised, catalogue_dir, tmp_path / "a") == 0
    store = IndexStore.open(tmp_path / "a")
    assert store.meta["metric"] == store.meta["recipe"]["metric"] == "l2"
    assert store.meta["recipe"]["normalized"] is False
    expected = Embedder(unnormalised).embed_file(store.items["paths"][0]).numpy()
    np.testing.assert_allclose(store.index.reconstruct(0), expected, atol=1e-5)
    assert abs(float(np.linalg.norm(expected)) - 1) > 1e-2
    with pytest.raises(SystemExit):
        build(unnormalised, catalogue_dir, tmp_path / "b", "--metric", "ip")


def test_an_index_without_a_recipe_or_with_another_is_refused(built, checkpoint):
    """An index written before recipes (its vectors always normalised) and one whose recipe is not the model's
    are refused with the index named."""
    _, out = built
    store = IndexStore.open(out)
    recipe = store.meta.pop("recipe")
    with pytest.raises(UserError, match="predates inference recipes"):
        check_recipe(store, Embedder(checkpoint))
    store.meta["recipe"] = {**recipe, "image_size": 64}
    with pytest.raises(UserError, match="embeds images differently"):
        check_recipe(store, Embedder(checkpoint))
    store.meta["recipe"] = {**recipe, "image_size": "big"}
    with pytest.raises(UserError, match=r"meta\.json: its inference recipe has image_size 'big'"):
        check_recipe(store, Embedder(checkpoint))


def test_info_prints_the_contents(built, capsys):
    _, out = built
    assert index_cli.main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 12 and info["labelled"] == 12 and info["classes"] == 3 and info["bad_files"] == 1


def test_building_over_an_index_is_refused(built, checkpoint, capsys):
    root, out = built
    assert build(checkpoint, root, out) == 2
    assert "already holds an index" in capsys.readouterr().err


def test_add_appends_items_without_retraining(checkpoint, tmp_path):
    first, more = tmp_path / "first", tmp_path / "more"
    write_catalogue(first, per_class=3, classes=("red", "green"))
    new = write_catalogue(more, per_class=2, seed=1, classes=("blue",))
    out = tmp_path / "idx"
    assert build(checkpoint, first, out, "--index_factory", "IVF2,Flat") == 0
    before = IndexStore.open(out)  # held: the quantizer belongs to its index
    centroids = before.index.quantizer.reconstruct_n(0, 2)
    assert index_cli.main(["add", str(out), "--images", str(more), *FAST]) == 0
    store = IndexStore.open(out)
    assert len(store) == 8 and store.items["paths"][6:] == [str(p) for p in new]
    assert store.items["labels"][6:] == ["blue", "blue"]
    np.testing.assert_array_equal(store.index.quantizer.reconstruct_n(0, 2), centroids)  # not retrained
    assert len(store.meta["batches"]) == 2 and (out / "shards" / "batch-001").is_dir()
    store.set_search_params(nprobe=2)
    q = Embedder(checkpoint).embed_file(str(new[1]))
    assert store.search(q.numpy()[None], 1)[1][0, 0] == 7  # the new item is found, with the next faiss id


def test_wrong_model_is_refused(built, other_checkpoint, capsys, tmp_path):
    _, out = built
    with pytest.raises(UserError, match="is not the one that built index"):
        open_index(out, str(other_checkpoint))
    more = tmp_path / "more"
    write_catalogue(more, per_class=1, seed=2)
    assert index_cli.main(["add", str(out), "--images", str(more), "--checkpoint", str(other_checkpoint), *FAST]) == 2
    assert "embeddings of different models are not comparable" in capsys.readouterr().err
    assert len(IndexStore.open(out)) == 12


def test_resume_skips_the_shards_already_written(checkpoint, tmp_path, monkeypatch):
    """A build interrupted after its first shard (a KeyboardInterrupt raised while writing the second) is
    finished by the rerun, which embeds only the missing shards and gives the uninterrupted build's index."""
    root = tmp_path / "cat"
    write_catalogue(root)
    write_shard, calls, interrupt = catalogue_mod._write_shard, [], [True]

    def interrupted(shard_dir, s, *args):
        calls.append(s)
        if len(calls) == 2 and interrupt.pop():
            raise KeyboardInterrupt
        write_shard(shard_dir, s, *args)

    monkeypatch.setattr(catalogue_mod, "_write_shard", interrupted)
    out = tmp_path / "idx"
    assert build(checkpoint, root, out, "--shard_size", "4") == 130
    first = out / "shards" / "batch-000" / "shard-000000.pt"
    assert [p.name for p in shard_files(first.parent)] == [first.name] and not (out / "meta.json").exists()
    stamp = first.stat().st_mtime_ns
    calls.clear()
    interrupt.append(False)
    assert build(checkpoint, root, out, "--shard_size", "4") == 0
    assert calls == [1, 2] and first.stat().st_mtime_ns == stamp  # shard 0 was not recomputed
    assert build(checkpoint, root, tmp_path / "fresh", "--shard_size", "4") == 0
    a, b = IndexStore.open(out), IndexStore.open(tmp_path / "fresh")
    np.testing.assert_array_equal(a.index.reconstruct_n(0, 12), b.index.reconstruct_n(0, 12))
    assert a.items == b.items


def test_catalogue_lists_with_label_and_id_columns(tmp_path):
    img = write_image(tmp_path / "imgs" / "a.png", COLOURS["red"], 0)
    (tmp_path / "list.csv").write_text("path,label,id\nimgs/a.png,cat,sku-1\nimgs/a.png,,\n")
    cat = read_catalogue(tmp_path / "list.csv")
    assert cat.paths == [str(img), str(img)] and cat.labels == ["cat", None] and cat.ids == ["sku-1", "imgs/a.png"]
    (tmp_path / "list.txt").write_text("# comment\nimgs/a.png dog\n\nimgs/a.png\n")
    cat = read_catalogue(tmp_path / "list.txt")
    assert cat.paths == [str(img)] * 2 and cat.labels == ["dog", None] and cat.ids == ["imgs/a.png"] * 2
    (tmp_path / "bad.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(UserError, match="'path' column"):
        read_catalogue(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="no such folder or list file"):
        read_catalogue(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        read_catalogue(tmp_path / "empty")


def test_bad_factory_and_untrainable_index_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not a faiss index_factory string"):
        IndexStore.create(tmp_path, 8, "IVFx,Nonsense")
    few = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with pytest.raises(UserError, match="training on 5 vectors failed"):
        IndexStore.create(tmp_path, 8, "IVF16,Flat", train_sample=lambda: few)


@pytest.mark.parametrize("factory", ["IVF8,Flat", "IVF8,PQ4x4", "HNSW8"])
def test_factory_types_are_seeded_and_exact_at_full_search_width(factory, tmp_path):
    """Training is a pure function of the seed; IVF-Flat visiting every list and HNSW with a wide candidate list
    return the exact neighbours (brute force), IVF-PQ stores codes of 4 x 4 bits instead of 8 floats."""
    x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    stores = []
    for run in range(2):
        store = IndexStore.create(tmp_path / str(run), 8, factory, train_sample=lambda: x[:300], seed=3)
        store.add(x, [str(i) for i in range(400)], [None] * 400, [str(i) for i in range(400)])
        store.save()
        stores.append(IndexStore.open(tmp_path / str(run)))
    files = [(tmp_path / str(r) / "index-1.faiss").read_bytes() for r in range(2)]
    assert files[0] == files[1]
    store = stores[0]
    store.set_search_params(**({"ef_search": 400} if factory.startswith("HNSW") else {"nprobe": 8}))
    true = np.argsort(-(x[:20] @ x.T), axis=1, kind="stable")[:, :5]
    found = store.search(x[:20], 5)[1]
    if "PQ" in factory:
        assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, true)]) > 0.3
    else:
        np.testing.assert_array_equal(found, true)


def test_search_parameters_are_checked(tmp_path):
    store = IndexStore.create(tmp_path, 4, "Flat")
    with pytest.raises(UserError, match="--nprobe applies to IVF indexes"):
        store.set_search_params(nprobe=4)
    with pytest.raises(UserError, match="--ef_search applies to HNSW"):
        store.set_search_params(ef_search=4)


def test_open_refuses_missing_and_corrupt_indexes(built, tmp_path):
    with pytest.raises(UserError, match="no meta.json"):
        IndexStore.open(tmp_path)
    _, out = built
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("meta.json", "items-1.json"):
        (copy / f).write_bytes((out / f).read_bytes())
    (copy / "index-1.faiss").write_bytes((out / "index-1.faiss").read_bytes()[:100])
    with pytest.raises(UserError, match="index-1.faiss does not match the checksum in meta.json"):
        IndexStore.open(copy)


@pytest.mark.slow
def test_a_killed_build_process_resumes(checkpoint, tmp_path):
    """SIGKILL a real build after its first shard; the rerun finishes and equals an uninterrupted build."""
    root = tmp_path / "cat"
    write_catalogue(root, per_class=20)
    out = tmp_path / "idx"
    argv = [sys.executable, str(REPO / "index.py"), "build", "--checkpoint", str(checkpoint), "--images", str(root),
            "--out", str(out), "--shard_size", "4", "--batch_size", "2", *FAST]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "shards" / "batch-000" / "shard-000000.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = shard_files(out / "shards" / "batch-000")
    assert 1 <= len(done) < 15 and not (out / "meta.json").exists()
    assert subprocess.run(argv, cwd=REPO, capture_output=True).returncode == 0
    assert build(checkpoint, root, tmp_path / "fresh", "--shard_size", "4") == 0
    a, b = IndexStore.open(out), IndexStore.open(tmp_path / "fresh")
    np.testing.assert_array_equal(a.index.reconstruct_n(0, 60), b.index.reconstruct_n(0, 60))


@pytest.mark.slow
def test_torchrun_ranks_write_their_own_shards(checkpoint, tmp_path):
    """Two gloo ranks split the shards (even ones on rank 0, odd on rank 1); the index equals one process's."""
    root = tmp_path / "cat"
    write_catalogue(root, per_class=5)
    out = tmp_path / "idx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(REPO / "index.py"), "build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(out),
           "--shard_size", "3", *FAST]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    shards = [torch.load(p, weights_only=True) for p in shard_files(out / "shards" / "batch-000")]
    assert [(s["shard"], s["rank"]) for s in shards] == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]
    assert build(checkpoint, root, tmp_path / "single", "--shard_size", "3") == 0
    a, b = IndexStore.open(out), IndexStore.open(tmp_path / "single")
    np.testing.assert_allclose(a.index.reconstruct_n(0, 15), b.index.reconstruct_n(0, 15), atol=1e-6)
    assert a.items == b.items
