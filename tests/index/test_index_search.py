"""test.py --index (one query, batches, JSON/CSV, --classify, search parameters) and index.py eval."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import index as index_cli
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from tests.e2e.cli import run_test_cli
from tests.index.conftest import write_catalogue
from tests.index.test_index_build import FAST, build


@pytest.fixture(scope="module")
def indexes(checkpoint, tmp_path_factory):
    """A Flat and an IVF4 index of the same 24 images (8 per colour), and 6 labelled query images."""
    root = tmp_path_factory.mktemp("gallery")
    write_catalogue(root, per_class=8)
    queries = tmp_path_factory.mktemp("queries")
    write_catalogue(queries, per_class=2, seed=5)
    flat, ivf = tmp_path_factory.mktemp("flat") / "i", tmp_path_factory.mktemp("ivf") / "i"
    assert build(checkpoint, root, flat) == 0
    assert build(checkpoint, root, ivf, "--index_factory", "IVF4,Flat") == 0
    return flat, ivf, queries


def brute_force(checkpoint, store, query_paths, k):
    """Exact top-k ids by numpy over independently computed embeddings."""
    embedder = Embedder(checkpoint)
    gallery = np.stack([embedder.embed_file(p).numpy() for p in store.items["paths"]])
    q = np.stack([embedder.embed_file(str(p)).numpy() for p in query_paths])
    return np.argsort(-(q @ gallery.T), axis=1, kind="stable")[:, :k], q, gallery


def test_one_query_writes_montage_html_and_json(indexes, tmp_path):
    flat, _, _ = indexes
    store = IndexStore.open(flat)
    query = tmp_path / "photo.jpg"
    shutil.copy(store.items["paths"][5], query)  # the same picture as item 5
    code, stdout, err = run_test_cli(["--index", str(flat), "--query_img_name", str(query), "--retrieval_num", "4",
                                      "--output_dir", str(tmp_path / "out")])
    assert code == 0, err
    ranked = [line.split() for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked) == 4 and ranked[0][2] == store.items["paths"][5] and float(ranked[0][1]) > 0.9999
    assert Image.open(tmp_path / "out" / "montage.png").width == 5 * 224
    assert (tmp_path / "out" / "index.html").read_text().count("<img") == 5
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results[0]["query"] == str(query)
    first = results[0]["results"][0]
    assert first["rank"] == 1 and first["path"] == store.items["paths"][5] and first["id"] == store.items["ids"][5]


def test_query_dir_batches_classify_and_csv_match_brute_force(indexes, checkpoint, tmp_path):
    flat, _, queries = indexes
    store = IndexStore.open(flat)
    out = tmp_path / "r.csv"
    code, stdout, err = run_test_cli(["--index", str(flat), "--query_dir", str(queries), "--retrieval_num", "5",
                                      "--classify", "--results", str(out)])
    assert code == 0, err
    query_paths = sorted(queries.rglob("*.jpg"))
    true, _, _ = brute_force(checkpoint, store, query_paths, 5)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 * 5 and list(rows[0]) == ["query", "rank", "path", "id", "label", "score", "predicted"]
    for n, qp in enumerate(query_paths):
        mine = [r for r in rows if r["query"] == str(qp)]
        assert [r["path"] for r in mine] == [store.items["paths"][j] for j in true[n]]
        votes = Counter(store.items["labels"][j] for j in true[n])
        top = max(votes.values())
        assert votes[mine[0]["predicted"]] == top  # the majority label (ties: best summed score)
    assert stdout.count("predicted") == 6


def test_query_list_json_with_nprobe(indexes, checkpoint, tmp_path):
    _, ivf, queries = indexes
    listed = sorted(queries.rglob("*.jpg"))[:3]
    (tmp_path / "q.txt").write_text("".join(f"{p}\n" for p in listed))
    store = IndexStore.open(ivf)
    store.set_search_params(nprobe=4)  # every list: exact
    true, q, gallery = brute_force(checkpoint, store, listed, 3)
    out = tmp_path / "r.json"
    code, _, err = run_test_cli(["--index", str(ivf), "--query_list", str(tmp_path / "q.txt"), "--nprobe", "4",
                                 "--retrieval_num", "3", "--results", str(out)])
    assert code == 0, err
    got = json.loads(out.read_text())
    assert [[r["path"] for r in g["results"]] for g in got] == [[store.items["paths"][j] for j in t] for t in true]
    for n, g in enumerate(got):  # scores are the cosine similarities
        np.testing.assert_allclose([r["score"] for r in g["results"]], gallery[true[n]] @ q[n], atol=1e-5)


@pytest.mark.parametrize(("argv", "message"), [
    (["--nprobe", "4"], "--nprobe applies to IVF indexes"),
    (["--ef_search", "4"], "--ef_search applies to HNSW indexes"),
    (["--results", "r.txt"], "expected a .json or .csv"),
    (["--query_dir", "nowhere"], "--index needs exactly one of"),
])
def test_bad_search_flags_are_clear_errors(indexes, tmp_path, argv, message):
    flat, _, queries = indexes
    q = next(queries.rglob("*.jpg"))
    code, _, err = run_test_cli(["--index", str(flat), "--query_img_name", str(q), "--output_dir", str(tmp_path),
                                 *argv])
    assert code == 2 and message in err


def test_search_with_another_model_is_refused(indexes, other_checkpoint, tmp_path):
    flat, _, queries = indexes
    code, _, err = run_test_cli(["--index", str(flat), "--query_dir", str(queries), "--checkpoint",
                                 str(other_checkpoint), "--output_dir", str(tmp_path)])
    assert code == 2 and "is not the one that built index" in err


def test_eval_measures_the_ivf_index_against_exact_search(indexes, checkpoint, tmp_path, capsys):
    _, ivf, queries = indexes
    store = IndexStore.open(ivf)
    store.set_search_params(nprobe=1)
    query_paths = sorted(queries.rglob("*.jpg"))
    true, q, _ = brute_force(checkpoint, store, query_paths, 8)
    approx = store.search(q, 8)[1]
    expected = np.mean([len(set(a[:4]) & set(t[:4])) / 4 for a, t in zip(approx, true)])
    labels = store.items["labels"]
    qlab = [p.parent.name for p in query_paths]
    exact_r1 = np.mean([labels[t[0]] == qlab[n] for n, t in enumerate(true)])
    assert index_cli.main(["eval", str(ivf), "--queries", str(queries), "--k", "4", "--nprobe", "1", "--recalls",
                           "1,8", "--json", str(tmp_path / "e.json"), *FAST]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recall@4"] == pytest.approx(expected) and result["queries"] == 6
    assert result["exact_label_recall@1"] == pytest.approx(exact_r1)
    assert set(result) >= {"label_recall@1", "label_recall@8", "exact_label_recall@8"}
    assert json.loads((tmp_path / "e.json").read_text()) == result
