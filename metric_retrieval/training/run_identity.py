"""Which run a run folder and a checkpoint belong to, so one folder never mixes two runs' files.

Every run gets an id when it starts: a fresh ``uuid4`` hex, or, on a resume, the id of the checkpoint it
resumes. Rank 0 records it in the run folder (``run.json``, ``{"run_id": ...}``) and in every checkpoint it
writes (the ``run_id`` key). A resume whose checkpoint carries another id than the folder's is refused
(:func:`claim_run`): whether that checkpoint was copied into the folder or named by ``--resume PATH``, the folder
would then hold two runs' checkpoints, logs and best models. A checkpoint or a folder written before run ids
existed carries none and is accepted; the folder then takes the checkpoint's id, or a new one.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import atomic_write_text

__all__ = ["RUN_FILE", "claim_run", "folder_run_id"]

RUN_FILE = "run.json"


def folder_run_id(out_dir: str | Path) -> str | None:
    """The id recorded in ``out_dir/run.json`` (None without one)."""
    path = Path(out_dir) / RUN_FILE
    try:
        value = json.loads(path.read_text()).get("run_id")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{path} is unreadable or not a run record; delete it if this folder holds a single "
                        "run") from None
    return str(value) if value else None


def claim_run(out_dir: str | Path, resume: tuple[Path, dict[str, Any]] | None, write: bool) -> str:
    """The id of the run about to write ``out_dir``: the resumed checkpoint's (refused when the folder belongs
    to another run), the folder's, or a new one. ``write`` (rank 0): record it in ``run.json``."""
    folder = folder_run_id(out_dir) if resume is not None else None  # a fresh run (or --overwrite) starts anew
    theirs = resume[1].get("run_id") if resume is not None else None
    if folder and theirs and folder != theirs:
        raise UserError(f"--resume {resume[0]}: that checkpoint belongs to run {theirs[:12]}, but {out_dir} is "
                        f"run {folder[:12]} ({RUN_FILE}): resuming it here would mix two runs' files; resume it "
                        "with --output_dir set to its own run folder, or move it out of this one")
    run_id = theirs or folder or uuid.uuid4().hex
    if write and run_id != folder:
        atomic_write_text(Path(out_dir) / RUN_FILE, json.dumps({"run_id": run_id}))
    return run_id
