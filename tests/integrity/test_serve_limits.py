"""Issue 26 items 2, 3 and 11 on the server: the upload limit enforced while the body streams in (bytes written
by the server process measured), the pixel limit from the header, the Host check, validated flags."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import serve
from metric_retrieval.retrieval.indexing import open_index
from metric_retrieval.retrieval.serve_app import check_bind_address, create_app
from metric_retrieval.utils.errors import UserError
from tests.index.conftest import write_catalogue
from tests.index.test_index_build import build

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def index_dir(checkpoint, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gallery")
    write_catalogue(root, per_class=2)
    out = tmp_path_factory.mktemp("idx") / "i"
    assert build(checkpoint, root, out) == 0
    return out


@pytest.fixture(scope="module")
def app(index_dir):
    store, embedder = open_index(index_dir)
    return create_app(store, embedder, k=3, max_bytes=2**20, allowed_hosts=["127.0.0.1", "localhost"])


def png(size: tuple[int, int], mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_host_header_is_checked(app):
    good = TestClient(app, base_url="http://127.0.0.1:8000")
    assert good.get("/health").status_code == 200
    assert TestClient(app, base_url="http://localhost:8000").get("/health").status_code == 200
    evil = TestClient(app, base_url="http://attacker.example:8000")  # a rebound DNS name resolving to 127.0.0.1
    reply = evil.get("/health")
    assert reply.status_code == 400 and "Invalid host header" in reply.text


def test_an_over_limit_image_gets_413_from_its_header(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    body = png((12000, 12000))
    assert len(body) < 2**20  # under the byte limit: the pixel limit refuses it
    reply = client.post("/search", files={"image": ("huge.png", body, "image/png")})
    assert reply.status_code == 413 and "12000x12000 = 144000000 pixels" in reply.json()["detail"]
    ok = client.post("/search", files={"image": ("small.png", png((40, 30), "RGB"), "image/png")})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_declared_oversize_body_is_refused_before_reading(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    reply = client.post("/search", content=b"x" * (3 * 2**20), headers={"content-type": "multipart/form-data; "
                                                                                        "boundary=b"})
    assert reply.status_code == 413 and "larger than the limit of 1048576 bytes" in reply.json()["detail"]


def test_k_and_upload_limit_are_validated(app, index_dir, capsys):
    store, embedder = open_index(index_dir)
    with pytest.raises(UserError, match="--k must be between 1 and 1000, got 0"):
        create_app(store, embedder, k=0)
    with pytest.raises(UserError, match="--max_upload_mb must be positive"):
        create_app(store, embedder, max_bytes=-1)
    assert serve.main(["--index", str(index_dir), "--k", "0"]) == 2
    assert serve.main(["--index", str(index_dir), "--max_upload_mb", "-1"]) == 2
    assert capsys.readouterr().err.count("error: ") == 2


def test_non_loopback_bind_warns(caplog):
    assert check_bind_address("127.0.0.1") and check_bind_address("::1") and check_bind_address("localhost")
    assert not check_bind_address("0.0.0.0")
    assert "not a loopback address" in caplog.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bytes_written(pid: int) -> int:
    """``wchar`` of /proc/PID/io: every byte the process passed to write() (files, including spooled uploads)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


def stream_upload(port: int, total: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """POST a chunked multipart body of ``total`` image bytes; returns (HTTP status, bytes sent before the
    server stopped reading)."""
    boundary = "xyz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall((f"POST /search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
    sent, payload = 0, b"\x89PNG" + b"\0" * (chunk - 4)
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        while sent < total:
            sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
            sent += len(payload)
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: what we want
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0
    return status, sent


def run_streamed_upload(index_dir: Path, tmp_path: Path, total: int) -> tuple[int, int, int]:
    port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = subprocess.Popen([sys.executable, "serve.py", "--index", str(index_dir), "--port", str(port),
                             "--max_upload_mb", "1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(spool), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.3)
        before = bytes_written(proc.pid)
        status, sent = stream_upload(port, total)
        written = bytes_written(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return status, sent, written


def test_a_streamed_body_is_cut_off_at_the_limit(index_dir, tmp_path):
    """64 MB streamed in 1 MB chunks against a 1 MB limit: 413, and the server wrote (spooled) at most the limit
    plus the multipart slack plus one chunk."""
    status, sent, written = run_streamed_upload(index_dir, tmp_path, 64 << 20)
    assert status == 413
    assert written < 3 << 20, written


@pytest.mark.slow
def test_a_streamed_2_gb_body_is_cut_off_at_the_limit(index_dir, tmp_path):
    status, sent, written = run_streamed_upload(index_dir, tmp_path, 2 << 30)
    assert status == 413 and written < 3 << 20, written
