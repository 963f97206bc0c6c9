"""``index.py build`` with the model exported by ``export.py`` (ONNX, TorchScript) instead of the checkpoint:
the stored vectors are the exported file's embeddings (equal to the checkpoint's within export tolerance), the
index names the file and its own fingerprint, and queries must come from that same file."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import export
import index as index_cli
from metric_retrieval.retrieval.embedder import exported_fingerprint
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import open_index
from metric_retrieval.utils.errors import UserError
from tests.index.conftest import save_checkpoint

FAST = ["--workers", "0", "--no_progress", "--device", "cpu"]


def export_file(checkpoint, out) -> None:
    fmt = "onnx" if out.suffix == ".onnx" else "torchscript"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert export.main(["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 0, \
            err.getvalue()


def build(model, images, out) -> int:
    return index_cli.main(["build", "--checkpoint", str(model), "--images", str(images), "--out", str(out), *FAST])


def vectors(out):
    store = IndexStore.open(out)
    return store, np.stack([store.index.reconstruct(i) for i in range(len(store))])


@pytest.mark.parametrize("suffix", [".ts", pytest.param(".onnx", marks=pytest.mark.slow)])  # dynamo ONNX: ~30 s
def test_build_from_the_exported_file_matches_the_checkpoint(checkpoint, catalogue_dir, tmp_path, suffix):
    model = tmp_path / f"model{suffix}"
    export_file(checkpoint, model)
    assert build(checkpoint, catalogue_dir, tmp_path / "from_pth") == 0
    assert build(model, catalogue_dir, tmp_path / "from_file") == 0
    (ref_store, ref), (store, got) = vectors(tmp_path / "from_pth"), vectors(tmp_path / "from_file")
    assert store.items["paths"] == ref_store.items["paths"] and len(store) == 12
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert store.meta["model"] == {"checkpoint": str(model), "fingerprint": exported_fingerprint(model)}
    assert store.meta["recipe"] == ref_store.meta["recipe"]  # the JSON's recipe is the checkpoint's
    _, embedder = open_index(tmp_path / "from_file")  # queries are embedded by the file the index names
    np.testing.assert_allclose(embedder.embed_file(store.items["paths"][4]).numpy(), got[4], atol=1e-6)
    with pytest.raises(UserError, match="is not the one that built index"):
        open_index(tmp_path / "from_file", str(checkpoint))  # not even the checkpoint it was exported from
    export_file(save_checkpoint(tmp_path / "other.pth", seed=1), tmp_path / f"other{suffix}")
    with pytest.raises(UserError, match="is not the one that built index"):
        open_index(tmp_path / "from_file", str(tmp_path / f"other{suffix}"))
