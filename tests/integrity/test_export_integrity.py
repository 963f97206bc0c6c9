"""Issue 26 items 7, 9, 10 on exports: the model and its JSON reach their final names only after the parity
check; an edited model file or edited preprocessing is refused on load and by an index; --out naming a folder
is one clear line; a killed export's temporaries are removed at the next start."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metric_retrieval.models import export as export_mod
from metric_retrieval.models.export import load_exported
from metric_retrieval.retrieval.embedder import exported_fingerprint
from metric_retrieval.utils.errors import UserError
from tests.e2e.test_export import run_export, write_checkpoint


@pytest.fixture
def exported(tmp_path) -> Path:
    write_checkpoint(tmp_path / "best.pth")
    code, out, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                                 "--out", str(tmp_path / "m.ts")])
    assert code == 0, err
    return tmp_path / "m.ts"


def test_the_json_records_both_digests_and_only_final_names_remain(exported):
    spec = json.loads(Path(f"{exported}.json").read_text())
    assert spec["file"] == "m.ts" and len(spec["model_sha256"]) == 64 and len(spec["sha256"]) == 64
    assert sorted(p.name for p in exported.parent.iterdir()) == ["best.pth", "m.ts", "m.ts.json"]
    load_exported(exported)


def test_flipped_model_bytes_are_refused(exported):
    raw = bytearray(exported.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = bytes(b ^ 0x5A for b in raw[mid:mid + 4096])
    exported.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="m.ts does not match the checksum its preprocessing file m.ts.json records"):
        load_exported(exported)


def test_edited_mean_and_std_are_refused_and_change_the_fingerprint(exported):
    before = exported_fingerprint(exported)
    path = Path(f"{exported}.json")
    spec = json.loads(path.read_text())
    spec["recipe"]["input_spec"]["mean"] = [0.0, 0.0, 0.0]
    spec["preprocess"]["std"] = [1.0, 1.0, 1.0]
    path.write_text(json.dumps(spec, indent=2))
    with pytest.raises(UserError, match="m.ts.json does not match its checksum"):
        load_exported(exported)
    assert exported_fingerprint(exported) != before  # an index built with the original refuses this pair


def test_an_interrupted_parity_check_leaves_no_file(tmp_path, monkeypatch):
    """SIGTERM during the parity check ends the process like an exception there: nothing under the final
    names, no temporaries (a SIGKILL leaves temporaries only, removed by the next export)."""
    write_checkpoint(tmp_path / "best.pth")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_mod, "parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                    "--out", str(tmp_path / "k.ts")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth"]


def test_a_killed_exports_temporaries_are_removed_at_the_next_start(tmp_path):
    write_checkpoint(tmp_path / "best.pth")
    dead = 2**22 + 12345  # above the default pid_max: no live process has it
    for name in (f".k.tmp{dead}.ts", f".k.tmp{dead}.ts.json"):
        (tmp_path / name).write_bytes(b"x" * 1000)
    code, _, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "torchscript",
                               "--out", str(tmp_path / "k.ts")])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "k.ts", "k.ts.json"]


def test_out_naming_a_folder_is_one_line_and_leaves_nothing(tmp_path):
    write_checkpoint(tmp_path / "best.pth")
    (tmp_path / "folder").mkdir()
    code, _, err = run_export(["--checkpoint", str(tmp_path / "best.pth"), "--format", "onnx",
                               "--out", str(tmp_path / "folder")])
    assert code == 2 and err.count("\n") == 1 and "is a folder; expected a file name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "folder"]
    assert not list((tmp_path / "folder").iterdir())


def test_a_checkpoint_without_backbone_is_one_clear_line(tmp_path):
    ckpt = {"model": {"w": torch.zeros(1)}, "model_config": {"head": "gem"}, "config": {}}
    torch.save(ckpt, tmp_path / "bad.pth")
    code, _, err = run_export(["--checkpoint", str(tmp_path / "bad.pth"), "--format", "onnx",
                               "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "model_config" in err and "backbone" in err and "Traceback" not in err
