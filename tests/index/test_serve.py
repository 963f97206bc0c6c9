"""serve.py's app: /health, /search against brute force, every kind of bad upload, and the page in Chromium."""
from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.live_index import shown_paths
from metric_retrieval.retrieval.serve_app import create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def served(small_index):
    store, embedder = small_index
    return store, embedder, create_app(store, embedder, k=4, max_bytes=20_000,
                                      allowed_hosts=["127.0.0.1", "testserver"])


def jpeg_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def test_health_and_page(served):
    store, _, app = served
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok", "version": store.version, "items": 9, "dim": 8,
                                            "factory": "Flat", "metric": "ip"}
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text
    thumb = client.get("/thumbnail/3")
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size == (160, 160)
    assert client.get("/thumbnail/9").status_code == 404


def test_search_returns_the_exact_top_k(served, checkpoint):
    store, embedder, app = served
    path = store.items["paths"][4]
    reply = TestClient(app).post("/search", files={"image": ("q.jpg", jpeg_bytes(path), "image/jpeg")},
                                 params={"k": 3})
    assert reply.status_code == 200
    body = reply.json()
    independent = Embedder(checkpoint)
    gallery = np.stack([independent.embed_file(p).numpy() for p in store.items["paths"]])
    scores = gallery @ independent.embed_file(path).numpy()
    order = np.argsort(-scores, kind="stable")[:3]
    root = Path(store.meta["batches"][0]["images"])  # the catalogue folder: results do not show the server's paths
    assert root.is_absolute()
    assert [r["path"] for r in body["results"]] == [Path(store.items["paths"][j]).relative_to(root).as_posix()
                                                     for j in order]
    assert all(r["path"].count("/") == 1 for r in body["results"])  # <class>/<file>
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores[order], atol=1e-5)
    assert body["results"][0]["thumbnail"] == f"/thumbnail/4?sha256={store.items['sha256'][4]}"
    assert body["results"][0]["rank"] == 1
    assert body["predicted"] == store.items["labels"][4] or sum(body["votes"].values()) == 3


def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(served, tmp_path):
    store, _, app = served
    client = TestClient(app)
    good = jpeg_bytes(store.items["paths"][0])
    photo = io.BytesIO()  # big enough that cutting it in half keeps the whole header: a truncated image
    ramp = np.linspace(0, 255, 120 * 120 * 3).reshape(120, 120, 3).astype(np.uint8)
    Image.fromarray(ramp).save(photo, "JPEG", quality=95)
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(big, "PNG")
    cases = {
        "not an image": (("x.jpg", b"hello, I am text", "image/jpeg"), 400, "not an image"),
        "truncated": (("x.jpg", photo.getvalue()[: len(photo.getvalue()) // 2], "image/jpeg"), 400, "truncated"),
        "too large": (("x.png", big.getvalue(), "image/png"), 413, "larger than the limit"),
        "wrong type": (("x.jpg", good, "text/plain"), 415, "expected an image upload"),
        "empty": (("x.jpg", b"", "image/jpeg"), 400, "empty"),
    }
    for name, (upload, status, message) in cases.items():
        reply = client.post("/search", files={"image": upload})
        assert reply.status_code == status, name
        assert message in reply.json()["detail"], (name, reply.json())
    assert client.post("/search").status_code == 422  # no file field
    assert client.post("/search", files={"image": ("ok.jpg", good, "image/jpeg")}).status_code == 200


@pytest.fixture
def live_server(served):
    """The app on a real uvicorn server at 127.0.0.1 and a free port, in a thread."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(served[2], host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not (server.started and server.servers) and time.time() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                           "apt-get install -y chromium chromium-driver")
def test_page_in_headless_chromium_shows_result_thumbnails(served, live_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = served[0]
    upload = tmp_path / "mine.jpg"
    shutil.copy(store.items["paths"][7], upload)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)  # no driver download
    try:
        driver.get(live_server + "/")
        driver.find_element(By.ID, "file").send_keys(str(upload))
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img.result")) == 4)
        images = driver.find_elements(By.CSS_SELECTOR, "img.result")
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
                                 for im in images))
        assert [im.get_attribute("alt") for im in images][0] == shown_paths(store)[7]  # relative to its catalogue
        assert [im.get_attribute("src").rsplit("/", 1)[1].split("?")[0] for im in images][0] == "7"
        captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#results figcaption")]
        assert captions[0].startswith("#1 · 1.0000") or captions[0].startswith("#1 · 0.9999")
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_serve_cli_binds_localhost_by_default_and_refuses_a_missing_index(tmp_path, capsys):
    import serve

    assert serve.get_args_parser().parse_args(["--index", "x"]).host == "127.0.0.1"
    assert serve.main(["--index", str(tmp_path / "nothing")]) == 2
    assert "is not an index directory" in capsys.readouterr().err
