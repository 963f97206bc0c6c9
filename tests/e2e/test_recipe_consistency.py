"""One inference recipe: a trained model ranks the same items in the same order on every inference path.

For a tiny model trained with ``embedding_norm=False`` (compared by Euclidean distance) and one trained with it
(cosine), on the built-in synthetic data: the run's reported Recall@1, ``metric-retrieval eval``, a feature
database query (a stored image, and the same picture as an external file embedded by the checkpoint), an index
search (``metric-retrieval query --index``) and the server's ``/search`` all rank the same items in the same order,
and agree with a brute-force ranking of the run's own evaluation embeddings by the model's metric.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import train as train_cli
from metric_retrieval.cli import eval as eval_cli
from metric_retrieval.cli import export as export_cli
from metric_retrieval.cli import index as index_cli
from metric_retrieval.cli import query as query_cli
from metric_retrieval.models.export import load_exported
from metric_retrieval.retrieval.database import load_database, query_database
from metric_retrieval.retrieval.indexing import open_index
from metric_retrieval.retrieval.query import retrieve
from metric_retrieval.retrieval.serve_app import create_app
from metric_retrieval.training import resolve_config
from metric_retrieval.training.checkpoint import load_file, load_model
from metric_retrieval.training.trainer import default_data

K = 5
QUERIES = (0, 7, 20, 45, 90)  # stored test images (the split has 192)
TRAIN = ["--workers", "0", "--no_tensorboard", "--pretrained", "none", "--backbone_type", "resnet18", "--head",
         "baseline", "--feature_dim", "16", "--image_size", "32", "--num_epochs", "1", "--max_steps_per_epoch", "3",
         "--batch_size", "16", "--samples_per_class", "4", "--amp", "off"]


def item(path: str | Path) -> tuple[str, ...]:
    """An image's class folder and file name: its identity whether a path is stored absolute or relative."""
    return Path(path).parts[-2:]


def brute_force(embeddings: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, N − 1) leave-one-out ranking of every stored item by ``metric`` (stable: ties to the lower index)."""
    if metric == "ip":
        far = -(embeddings @ embeddings.t())
    else:
        far = torch.cdist(embeddings.double(), embeddings.double())
    far.fill_diagonal_(float("inf"))
    return torch.sort(far, dim=1, stable=True).indices[:, :-1]


@pytest.fixture(scope="module", params=[False, True], ids=["unnormalised", "normalised"])
def run(request, tmp_path_factory):
    """A trained run folder with an index of its test split, and the data root."""
    out = tmp_path_factory.mktemp("run")
    argv = [*TRAIN, "--output_dir", str(out), "--model_option", f"embedding_norm={str(request.param).lower()}"]
    root = default_data(resolve_config(argv))
    assert train_cli.main(argv) == 0
    db = load_database(out / "database_best.pth")
    listing = out / "test_images.txt"
    listing.write_text("".join(f"{p}\n" for p in db["query"]["paths"]))
    assert index_cli.main(["build", "--checkpoint", str(out / "model_best.pth"), "--images", str(listing),
                           "--out", str(out / "index"), "--workers", "0", "--no_progress", "--device", "cpu"]) == 0
    return out, root, request.param


def test_the_recipe_is_the_models_and_travels_with_every_file(run):
    out, _, normalised = run
    metric = "ip" if normalised else "l2"
    saved = load_file(out / "model_best.pth")["recipe"]
    assert saved["metric"] == metric and saved["normalized"] is normalised
    assert saved["image_size"] == 32 and saved["embedding_dim"] == 16 and saved["transform"] == "cgd"
    assert load_file(out / "checkpoint_latest.pth")["recipe"] == saved
    assert load_database(out / "database_best.pth")["recipe"].to_dict() == saved
    store, embedder = open_index(out / "index")
    assert store.meta["recipe"] == embedder.recipe.to_dict() == saved and store.meta["metric"] == metric


def test_every_path_ranks_the_same_items_in_the_same_order(run, tmp_path):
    out, root, normalised = run
    db = load_database(out / "database_best.pth")
    metric, stored = db["recipe"].metric, db["query"]
    paths = stored["paths"]
    # the reference: the run's own evaluation embeddings ranked by brute force with the model's metric
    ranking = brute_force(stored["embeddings"], metric)
    reported = load_file(out / "model_best.pth")["metrics"]["test"]["recall@1"]
    labels = stored["labels"]
    assert reported == pytest.approx(float((labels[ranking[:, 0]] == labels).double().mean()), abs=1e-6)
    queries = list(QUERIES)
    if not normalised:  # the test can tell the metrics apart: it also asks a query whose list cosine would change
        cosine = brute_force(torch.nn.functional.normalize(stored["embeddings"], dim=1), "ip")
        differing = [q for q in range(len(paths)) if not torch.equal(cosine[q, :K], ranking[q, :K])]
        assert differing
        queries.append(differing[0])

    # metric-retrieval eval on the checkpoint reproduces the run's Recall@1
    report = tmp_path / "eval.json"
    assert eval_cli.main(["--checkpoint", str(out / "model_best.pth"), "--data_name", "folder", "--data_path",
                          str(root), "--workers", "0", "--device", "cpu", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["recall@1"] == pytest.approx(reported, abs=1e-6)

    store, embedder = open_index(out / "index")
    client = TestClient(create_app(store, embedder, k=K + 1, allowed_hosts=["testserver"]))
    for q in queries:
        expected = [item(paths[j]) for j in ranking[q, :K].tolist()]
        # the feature database, queried with the stored image (leave-one-out)
        assert [item(p) for p in query_database(db, paths[q], k=K).paths] == expected, q
        # the same picture as an external file: embedded by the database's checkpoint, itself first
        external = tmp_path / f"photo{q}{Path(paths[q]).suffix}"
        shutil.copy(paths[q], external)
        found = retrieve(out / "database_best.pth", str(external), K + 1)
        assert [item(p) for p in found.paths] == [item(paths[q]), *expected], q
        # the index, through metric-retrieval query --index
        results = tmp_path / f"results{q}.json"
        assert query_cli.main(["--index", str(out / "index"), "--query_img_name", str(external), "--retrieval_num",
                               str(K + 1), "--results", str(results), "--output_dir", str(tmp_path / "q")]) == 0
        hits = json.loads(results.read_text())[0]["results"]
        assert [item(h["path"]) for h in hits] == [item(paths[q]), *expected], q
        # the server's /search
        reply = client.post("/search", files={"image": (external.name, external.read_bytes(), "image/png")})
        assert reply.status_code == 200, reply.text
        # (its paths are shown relative to the list file's folder, so the items are compared by id: the listed path)
        assert [item(r["id"]) for r in reply.json()["results"]] == [item(paths[q]), *expected], q


def test_the_exported_model_carries_the_recipe_and_its_embeddings(run, tmp_path):
    """``export`` writes the checkpoint's recipe beside the file, and the file outputs the embedding as the model
    gives it (not normalised again)."""
    out, _, normalised = run
    target = tmp_path / "model.ts"
    assert export_cli.main(["--checkpoint", str(out / "model_best.pth"), "--format", "torchscript", "--out",
                            str(target), "--parity_images", "8"]) == 0
    exported, info = load_exported(target)
    model, ckpt = load_model(out / "model_best.pth")
    assert info["recipe"] == ckpt["recipe"] and exported.embedding_metric == ckpt["recipe"].metric
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = model(x)[0]
    torch.testing.assert_close(exported(x)[0], want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(want.norm(dim=1), torch.ones(3), atol=1e-5) is normalised
