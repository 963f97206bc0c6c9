"""Issue 26 item 11: the server swaps in a newer committed index version while it serves (an ``index add`` run as
a second process, with requests in flight all answered), ``/health`` reports the version and item count served,
and results show paths relative to their catalogue root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import index as index_cli
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import open_index
from metric_retrieval.retrieval.live_index import LiveIndex, shown_paths
from metric_retrieval.retrieval.serve_app import create_app
from tests.index.conftest import write_catalogue
from tests.index.test_index_build import FAST, build
from tests.integrity.test_serve_limits import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def index_dir(checkpoint, tmp_path) -> Path:
    write_catalogue(tmp_path / "gallery", per_class=2)
    write_catalogue(tmp_path / "more", per_class=1, seed=7)
    out = tmp_path / "idx"
    assert build(checkpoint, tmp_path / "gallery", out) == 0
    return out


def test_poll_swaps_in_a_committed_add_and_keeps_a_damaged_one_out(index_dir, tmp_path):
    store, embedder = open_index(index_dir)
    app = create_app(store, embedder, k=3)
    live: LiveIndex = app.state.live
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    before = client.get("/health").json()
    assert (before["items"], before["version"]) == (6, store.version)
    assert not live.poll()  # nothing new committed
    assert index_cli.main(["add", str(index_dir), "--images", str(tmp_path / "more"), *FAST]) == 0
    assert live.poll()
    after = client.get("/health").json()
    assert after["items"] == 9 and after["version"] == IndexStore.open(index_dir).version != before["version"]

    meta = json.loads((index_dir / "meta.json").read_text())
    meta["count"] = 99  # a manifest that no longer matches its checksum
    (index_dir / "meta.json").write_text(json.dumps(meta))
    assert not live.poll()  # refused (logged once), the served version stays
    assert client.get("/health").json() == after


def test_result_links_follow_their_item_across_an_update_reload(index_dir, tmp_path):
    """``add --update`` drops a changed image's item and appends its new one, so later items move down: a result's
    thumbnail link names the content, finds the moved item and refuses the replaced one."""
    store, embedder = open_index(index_dir)
    app = create_app(store, embedder, k=6)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    paths = store.items["paths"]
    upload = Path(paths[0]).read_bytes()
    links = {r["thumbnail"].split("?")[0].rsplit("/", 1)[1]: r["thumbnail"]
             for r in client.post("/search", files={"image": ("q.jpg", upload, "image/jpeg")}).json()["results"]}
    assert len(links) == 6
    first = client.get(links["1"]).content
    Path(paths[0]).write_bytes(Path(paths[5]).read_bytes())  # item 0's file now holds another image
    assert index_cli.main(["add", str(index_dir), "--images", str(tmp_path / "gallery"),
                           "--update", *FAST]) == 0
    assert app.state.live.poll()
    moved = app.state.live.current.store
    assert moved.items["paths"][0] == paths[1]  # every item moved down by one
    assert client.get(links["1"]).content == first  # link of old item 1 still shows that image (now item 0)
    gone = client.get(links["0"])
    assert gone.status_code == 404 and "the index changed since" in gone.json()["detail"]
    assert client.get("/thumbnail/0").status_code == 200  # a bare position is whatever item is there now


def test_search_params_survive_a_reload(checkpoint, tmp_path):
    write_catalogue(tmp_path / "gallery", per_class=4)
    write_catalogue(tmp_path / "more", per_class=1, seed=7)
    out = tmp_path / "ivf"
    assert build(checkpoint, tmp_path / "gallery", out, "--index_factory", "IVF2,Flat") == 0
    store, embedder = open_index(out)
    store.set_search_params(nprobe=2)
    live = LiveIndex(store)
    assert index_cli.main(["add", str(out), "--images", str(tmp_path / "more"), *FAST]) == 0
    assert live.poll()
    import faiss

    assert faiss.extract_index_ivf(live.current.store.index).nprobe == 2


def test_shown_paths_are_relative_to_each_batch_root(tmp_path):
    lists = tmp_path / "lists"
    meta = {"batches": [{"images": str(tmp_path / "photos")}, {"images": str(lists / "extra.txt")}]}
    items = {"paths": [str(tmp_path / "photos" / "cats" / "a.jpg"), str(tmp_path / "photos" / "b.jpg"),
                       str(lists / "sub" / "c.png"), str(lists / ".." / "elsewhere" / "d.jpg"), "/srv/abs/e.jpg"]}
    (tmp_path / "photos").mkdir()
    assert shown_paths(IndexStore(tmp_path / "i", None, meta, items)) == [
        "cats/a.jpg", "b.jpg", "sub/c.png", "d.jpg", "e.jpg"]


def _search(client: httpx.Client, image: bytes) -> int:
    return client.post("/search", files={"image": ("q.jpg", image, "image/jpeg")}, params={"k": 2}).status_code


@pytest.mark.slow
def test_a_second_process_adds_while_the_server_serves(index_dir, tmp_path):
    """serve.py and index.py add as two real processes: every request sent during the add and the swap gets a
    200, /health moves to the new version, and a new image is then found at rank 1 under its relative path."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "serve.py", "--index", str(index_dir), "--port", str(port),
                               "--reload_interval", "0.2"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    statuses: list[int] = []
    stop = threading.Event()
    query = next((tmp_path / "gallery" / "red").iterdir()).read_bytes()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                before = httpx.get(f"{base}/health").json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()
                time.sleep(0.3)

        def hammer() -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                while not stop.is_set():
                    statuses.append(_search(client, query))

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        added = subprocess.run([sys.executable, "index.py", "add", str(index_dir), "--images", str(tmp_path / "more"),
                                *FAST], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert added.returncode == 0, added.stderr
        deadline = time.time() + 30
        while (health := httpx.get(f"{base}/health").json())["version"] == before["version"]:
            assert time.time() < deadline, "the server never reloaded"
            time.sleep(0.1)
        served_after_swap = len(statuses)
        while len(statuses) < served_after_swap + 6:  # requests on the new version too
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        new = tmp_path / "more" / "blue"
        image = next(new.iterdir())
        hit = httpx.post(f"{base}/search", files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")},
                         params={"k": 1}).json()["results"][0]
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    assert (before["items"], health["items"]) == (6, 9)
    assert health["version"] == IndexStore.open(index_dir).version
    assert statuses and set(statuses) == {200}, statuses
    assert hit["path"] == f"blue/{image.name}"
