"""export.py: ONNX / TorchScript files with a dynamic batch, the preprocessing JSON, the parity check on real
images of the built-in synthetic dataset, clear failures, and ``test.py --eval`` on the exported file."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnxruntime
import pytest
import torch

import export
from metric_retrieval import data, models
from metric_retrieval.models.backbones import BACKBONES
from metric_retrieval.models.export import ExportedModel, export_model, parity
from metric_retrieval.models.heads import HEADS
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.utils.errors import UserError
from tests.e2e.cli import run_test_cli

SIZE = 32


def recipe_of(model):
    return InferenceRecipe.of_model(model, {"image_size": SIZE, "transform": "cgd"})


def write_checkpoint(path, backbone="resnet18", head="gem", feature_dim=64, num_classes=None, **options):
    torch.manual_seed(0)
    model = models.build_model(backbone, head, feature_dim, num_classes, **options)
    torch.save({"model": model.state_dict(),
                "model_config": {"backbone": backbone, "head": head, "feature_dim": feature_dim,
                                 "num_classes": num_classes, "options": options},
                "config": {"transform": "cgd", "image_size": SIZE, "data_path": None, "data_name": "folder"}}, path)
    return model.eval()


def run_export(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    model = write_checkpoint(tmp / "best.pth")
    code, out, err = run_export(["--checkpoint", str(tmp / "best.pth"), "--format", "onnx",
                                 "--out", str(tmp / "model.onnx")])
    return tmp, model, code, out, err


@pytest.mark.slow  # the dynamo ONNX exporter takes ~20-60 s on a shared CPU
def test_onnx_file_json_parity_and_dynamic_batch(onnx_export):
    tmp, model, code, out, err = onnx_export
    assert code == 0, err
    assert "parity on 32 images: max |diff|" in out and "top-10 agreement 1.0000" in out
    spec = json.loads((tmp / "model.onnx.json").read_text())
    assert spec["input"]["shape"] == ["batch", 3, SIZE, SIZE] and spec["outputs"]["embedding"]["l2_normalised"]
    assert spec["preprocess"]["mean"] == [0.485, 0.456, 0.406] and spec["preprocess"]["channel_order"] == "RGB"
    assert spec["model"]["backbone"] == "resnet18" and spec["recipe"] == recipe_of(model).to_dict()
    session = onnxruntime.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic; a user runs it with onnxruntime alone
        x = torch.randn(batch, 3, SIZE, SIZE)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = torch.nn.functional.normalize(model(x)[0], dim=1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_test_py_evaluates_the_exported_file_like_the_checkpoint(onnx_export):
    tmp, _, code, _, _ = onnx_export
    assert code == 0
    root = str(data.ensure_default_dataset())
    common = ["--eval", "--data_name", "folder", "--data_path", root, "--workers", "0", "--json"]
    results = []
    for ckpt in ("best.pth", "model.onnx"):
        status, _, err = run_test_cli([*common, str(tmp / f"{ckpt}.metrics.json"), "--checkpoint", str(tmp / ckpt)])
        assert status == 0, err
        results.append(json.loads((tmp / f"{ckpt}.metrics.json").read_text()))
    assert results[0] == pytest.approx(results[1], abs=1e-6)


def test_torchscript_with_logits(tmp_path):
    model = write_checkpoint(tmp_path / "best.pth", head="cgd", feature_dim=32, num_classes=5, gd_config="SG")
    code, out, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                                 "--out", str(tmp_path / "m.ts"), "--logits"])
    assert code == 0, err
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        emb, logits = loaded(x)
        want_emb, want_logits = model(x)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(want_emb, dim=1))
    torch.testing.assert_close(logits, want_logits)
    assert json.loads((tmp_path / "m.ts.json").read_text())["outputs"]["logits"]["shape"] == ["batch", 5]


def test_parity_failure_is_a_clear_error_and_removes_the_files(tmp_path):
    write_checkpoint(tmp_path / "best.pth")
    code, _, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                               "--out", str(tmp_path / "m.ts"), "--min_agreement", "1.5"])  # agreement <= 1
    assert code == 2 and "Traceback" not in err
    assert "differs from PyTorch beyond the tolerance" in err and "nothing was written to" in err
    assert not (tmp_path / "m.ts").exists() and not (tmp_path / "m.ts.json").exists()


def test_user_errors(tmp_path):
    write_checkpoint(tmp_path / "best.pth")
    code, _, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                               "--out", str(tmp_path / "m.ts"), "--logits"])
    assert code == 2 and "has no classifier" in err
    code, _, err = run_export(["--checkpoint", str(tmp_path / "nothing.pth"), "--format", "onnx",
                               "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "checkpoint not found" in err
    (tmp_path / "lonely.onnx").write_bytes(b"not onnx")
    with pytest.raises(UserError, match="cannot load exported model"):
        ExportedModel(tmp_path / "lonely.onnx", recipe_of(models.build_model("resnet18", "gem", 64)))
    status, _, err = run_test_cli(["--eval", "--checkpoint", str(tmp_path / "lonely.onnx"), "--data_name", "folder",
                                   "--data_path", str(tmp_path)])
    assert status == 2 and "error:" in err


class _Untraceable(torch.nn.Module):
    config = {"backbone": "toy", "head": "data-dependent"}
    num_classes = 0

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
            return x.flatten(1), None
        return -x.flatten(1), None


def test_an_unexportable_model_names_backbone_head_and_reason(tmp_path):
    with pytest.raises(UserError, match="backbone toy with head data-dependent cannot be exported to onnx"):
        export_model(_Untraceable(), "onnx", tmp_path / "m.onnx", 8)
    assert not list(tmp_path.iterdir())  # no partial file left behind


TIMM_NAMES = ("timm:vit_tiny_patch16_224", "timm:convnext_atto")  # a ViT (token grid) and a timm CNN


def refusal(backbone: str, head: str) -> str | None:
    """The message a pair that cannot be built or exported must give, or None when it must export."""
    if head == "abir" and backbone.startswith("timm:"):  # ABIR reads two tapped maps; timm trunks give one
        return "the ABIR head needs at least two tapped maps"
    return None


def export_case(backbone: str, head: str, fmt: str):
    """A pair's tier. A pair exports the union of its trunk's and its head's operators, so CI checks a cover:
    every head on resnet18 and the ViT, every trunk with gem. TorchScript of resnet18's heads and the ViT's
    token head run by default, the rest of the cover in ``-m slow``; the other pairs (the dynamo ONNX exporter
    takes 20-80 s each on 2 cores) in ``-m exhaustive``."""
    covered = backbone in ("resnet18", TIMM_NAMES[0]) or head == "gem"
    default = fmt == "torchscript" and (backbone == "resnet18" or (backbone, head) == (TIMM_NAMES[0], "token"))
    mark = () if default else pytest.mark.slow if covered else pytest.mark.exhaustive
    return pytest.param(backbone, head, fmt, marks=mark, id=f"{fmt}-{backbone}-{head}")


CASES = [export_case(b, h, fmt) for fmt in ("torchscript", "onnx") for b in (*BACKBONES.names(), *TIMM_NAMES)
         for h in HEADS.names()]


@pytest.mark.parametrize("backbone, head, fmt", CASES)
def test_every_backbone_and_head_exports_with_parity_or_says_why(tmp_path, backbone, head, fmt):
    """Every registered backbone x head (plus a timm ViT and CNN) exports at a fixed 32 px with the PyTorch
    embedding (|diff| < 1e-4, same top-10), or is refused with the reason :func:`refusal` names."""
    options = {"gd_config": "SG"} if head == "cgd" else {}
    if backbone.startswith("timm:vit") and head != "token":
        options["token_pool"] = "map"  # the patch grid for the map heads
    dim = None if head in ("rmac", "gem", "regional_attention", "abir") else 32  # fixed-width heads
    classes = 4 if head in ("cgd", "clf") else None

    def build():
        torch.manual_seed(0)
        return models.build_model(backbone, head, dim, classes, **options).eval()

    why = refusal(backbone, head)
    if why is not None:
        with pytest.raises(UserError, match=why):
            export_model(build(), fmt, tmp_path / "m", SIZE)
        return
    model = build()
    out = export_model(model, fmt, tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts"), SIZE)
    result = parity(model, ExportedModel(out, recipe_of(model)), torch.randn(4, 3, SIZE, SIZE))
    assert result["max_abs_diff"] < 1e-4 and result["top10_agreement"] == 1.0, result
