"""benchmarks/gpu_check.sh without a GPU: its dry run, its no-CUDA exit, its stop at an install failure; and the
two checks it runs that have CPU-visible logic (benchmarks/gpu_env.py, benchmarks/ddp_gather.py)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
CHECKS = ["install", "tests", "knn", "train", "data", "recipe", "ddp", "index"]


def load(relpath: str):
    name = f"_gpu_check_{Path(relpath).stem}"
    if name not in sys.modules:  # registered before running it: dataclasses look their module up
        spec = importlib.util.spec_from_file_location(name, REPO / relpath)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_tools(tmp_path: Path, nvidia_smi: str | None) -> dict[str, str]:
    """Environment with a recording ``python3`` (and ``nvidia-smi`` printing ``nvidia_smi``) first on PATH;
    the script's venv and output folders in ``tmp_path``. Every fake call is appended to ``calls.txt``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    write_exe(bin_dir / "python3", f'#!/bin/sh\necho "python3 $*" >> {calls}\nexit 1\n')
    if nvidia_smi is not None:
        write_exe(bin_dir / "nvidia-smi", f'#!/bin/sh\necho "nvidia-smi $*" >> {calls}\n{nvidia_smi}\n')
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python3"),
            "GPU_CHECK_VENV": str(tmp_path / "venv"), "GPU_CHECK_OUT": str(tmp_path / "out")}


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def dry_run_sections(tmp_path: Path) -> dict[str, list[list[str]]]:
    env = fake_tools(tmp_path, "exit 0")
    result = run_script(env, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "calls.txt").exists(), "--dry-run ran a command"
    assert not (tmp_path / "venv").exists() and not (tmp_path / "out").exists()
    sections: dict[str, list[list[str]]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        elif line.strip().startswith("$ "):
            current.append(shlex.split(line.strip()[2:]))
    return sections


def script_args(commands: list[list[str]], script: str) -> list[list[str]]:
    """The arguments after ``script`` of every command that runs it."""
    return [c[c.index(script) + 1:] for c in commands if script in c]


def test_dry_run_prints_every_check_command(tmp_path):
    sections = dry_run_sections(tmp_path)
    assert list(sections) == CHECKS
    venv_py = str(tmp_path / "venv" / "bin" / "python")
    install = sections["install"]
    assert install[0][-3:] == ["-m", "venv", str(tmp_path / "venv")]
    assert install[1][:4] == [venv_py, "-m", "pip", "install"] and install[2] == [venv_py, "benchmarks/gpu_env.py"]
    assert sections["tests"] == [[venv_py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rs"]]
    knn = script_args(sections["knn"], "benchmarks/bench_knn.py")
    assert knn[0][knn[0].index("--backends") + 1] == "faiss_gpu,torch_cuda,faiss_cpu"
    assert load("benchmarks/bench_knn.py").get_args_parser().parse_args(knn[0]).n == 60502  # SOP's test set
    assert int(knn[1][knn[1].index("--k") + 1]) > 2048
    train = script_args(sections["train"], "benchmarks/bench_train.py")[0]
    assert " ".join(train).startswith("--device cuda --batch_size 128") and "--compile" in train
    for flag in ("--variants", "--compile_variants"):
        assert set(train[train.index(flag) + 1].split(",")) == {"fp32", "bf16", "fp16"}
    assert script_args(sections["data"], "benchmarks/bench_data.py")[0][:2] == ["--device", "cuda"]
    gpu, fast = script_args(sections["recipe"], "train.py")
    for flag, value in [("--decode", "gpu"), ("--amp", "bf16"), ("--backbone_type", "resnet50"), ("--head", "cgd"),
                        ("--image_size", "224")]:
        assert gpu[gpu.index(flag) + 1] == value
    assert "--compile" in gpu and "--data_path" not in gpu  # the built-in synthetic data
    same = [a for a in gpu if a not in ("gpu", "fast") and "recipe_" not in a]
    assert same == [a for a in fast if a not in ("gpu", "fast") and "recipe_" not in a]
    assert fast[fast.index("--decode") + 1] == "fast"
    ddp = sections["ddp"]
    assert all(c[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "N_GPUS"] for c in ddp)
    assert script_args(ddp, "benchmarks/ddp_gather.py") == [["--device", "cuda"]]
    assert script_args(ddp, "train.py")[0][:2] == ["--device", "cuda"]
    (index,) = script_args(sections["index"], "benchmarks/bench_index.py")
    args = load("benchmarks/bench_index.py").get_args_parser().parse_args(index)
    assert args.gpu and args.parts == "index" and args.nlist == 1024 and "32" in args.nprobe.split(",")


def test_dry_run_commands_name_real_files_and_flags(tmp_path):
    """Every script the dry run names exists, and its parser accepts the printed flags."""
    from metric_retrieval.training.config import get_args_parser as train_parser

    sections = dry_run_sections(tmp_path)
    commands = [c for section in sections.values() for c in section]
    parsers = {"train.py": train_parser}
    for name in ("bench_knn", "bench_train", "bench_data", "ddp_gather", "bench_index"):
        parsers[f"benchmarks/{name}.py"] = load(f"benchmarks/{name}.py").get_args_parser
    for command in commands:
        for word in command:
            if word.endswith(".py") and not word.startswith("/"):
                assert (REPO / word).is_file(), word
    assert {"fp32", "bf16", "fp16"} <= set(load("benchmarks/bench_train.py").VARIANTS)
    checked = 0
    for script, parser in parsers.items():
        for args in script_args(commands, script):
            parser().parse_args(args)
            checked += 1
    assert checked == 9  # bench_knn x 2, bench_train, bench_data, train.py x 3, ddp_gather, bench_index


@pytest.mark.parametrize("nvidia_smi, reason", [
    (None, "nvidia-smi is not installed"),
    ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9',
     "NVIDIA-SMI has failed"),
    ('echo "No devices were found"; exit 6', "No devices were found"),
])
def test_without_cuda_it_exits_at_once_with_a_clear_message(tmp_path, nvidia_smi, reason):
    if nvidia_smi is None and shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    result = run_script(fake_tools(tmp_path, nvidia_smi))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no CUDA GPU on this machine") and reason in result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines() if (tmp_path / "calls.txt").exists() else []
    assert all(c.startswith("nvidia-smi -L") for c in calls)  # nothing but the look for a GPU ran
    assert not (tmp_path / "venv").exists() and not (tmp_path / "out").exists()


def test_an_install_failure_stops_the_script_with_pips_error(tmp_path):
    env = fake_tools(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"')
    pip_error = "ERROR: No matching distribution found for faiss-gpu"
    venv_python = f'#!/bin/sh\necho "venv-python $*" >> {tmp_path}/calls.txt\necho "{pip_error}" >&2\nexit 1\n'
    write_exe(tmp_path / "venv-python", venv_python)
    write_exe(tmp_path / "bin" / "python3",  # creates a venv whose python fails every pip install
              f'#!/bin/sh\necho "python3 $*" >> {tmp_path}/calls.txt\nmkdir -p "$3/bin" && touch "$3/pyvenv.cfg" '
              f'&& cp {tmp_path}/venv-python "$3/bin/python"\n')
    result = run_script(env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith(("ok", "FAIL"))] == [["FAIL", "install"]]
    assert pip_error in next(line for line in lines if line.startswith("FAIL install"))
    assert "stopped: the GPU environment is not usable" in result.stderr and pip_error in result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls if not c.startswith("nvidia-smi")] == ["python3", "venv-python"]
    assert "-m pip install" in calls[-1]  # the pip call was the last thing run: no check after it
    requirements = (tmp_path / "venv" / "requirements-gpu.txt").read_text().splitlines()
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("faiss-cpu==")]
    assert pinned and pinned[0].replace("faiss-cpu", "faiss-gpu") in requirements
    assert not any(line.startswith("faiss-cpu") for line in requirements)
    assert not (tmp_path / "venv" / ".gpu_check-requirements.txt").exists()  # not cached: rebuilt next time


FAKE_VENV_PYTHON = r"""#!/bin/sh
echo "venv-python $*" >> "$FAKE_CALLS"
case "$*" in
  *gpu_env.py*) echo "NVIDIA H200 x 1, compute capability 9.0, torch 2.14.1 (CUDA 13.0), faiss 1.15.1 (1 GPUs)" ;;
  *"-m pytest"*) echo "$FAKE_PYTEST" ;;
  *bench_knn.py*"--k 3000"*) echo "       warning: faiss_gpu searches at most 2048 neighbours (asked k = 3001)" ;;
  *bench_knn.py*) echo "ours[faiss_gpu]      0.50 s"; echo "metrics of 3 back-ends agree: largest difference 0" ;;
  *bench_train.py*) echo "                        fp32:  1000.00 images/s  (1.00x fp32)" ;;
  *bench_data.py*) echo "  gpu         5000.0 images/s   x9.00 vs pil" ;;
  *ddp_gather.py*) echo "world size 1 (one process): exact" ;;
  *bench_index.py*) printf '{"index": "IVF1024,Flat", "nprobe": 32, "on": "IndexShards", "recall@10": %s}\n' \
      "$FAKE_IVF_RECALL" ;;
  *"-c "*) echo 1 ;;
  *train.py*)
    prev=""; for a in "$@"; do [ "$prev" = --output_dir ] && out=$a; prev=$a; done
    r1=0.60; case "$*" in *"--decode gpu"*) r1=$FAKE_GPU_R1 ;; esac
    mkdir -p "$out" && echo "new best test/recall@1 $r1 at epoch 3" > "$out/train.log" ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


def cached_fake_venv(tmp_path: Path) -> Path:
    """A venv folder as a successful earlier install left it (pyvenv.cfg, the requirements stamp) whose python
    answers each check's command with that command's success line."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    write_exe(venv / "bin" / "python", FAKE_VENV_PYTHON)
    runtime = (REPO / "requirements.txt").read_text().replace("faiss-cpu==", "faiss-gpu==")
    dev = "".join(line + "\n" for line in (REPO / "requirements-dev.txt").read_text().splitlines()
                  if not line.startswith("-r "))
    (venv / ".gpu_check-requirements.txt").write_text(runtime + dev)
    return venv


@pytest.mark.parametrize("pytest_out, gpu_r1, ivf_recall, failed", [
    ("8 passed in 2.0s", "0.65", "0.992", None),
    ("7 passed, 1 skipped in 2.0s", "0.65", "0.992", "tests"),  # a CUDA test that skips on a GPU machine fails
    ("8 passed in 2.0s", "0.40", "0.992", "recipe"),            # Recall@1 0.40 vs 0.60 with --decode fast
    ("8 passed in 2.0s", "0.65", "0.9", "index"),               # IVF recall@10 below 0.95 on the GPU
])
def test_checks_report_ok_or_fail_each_with_a_cached_venv(tmp_path, pytest_out, gpu_r1, ivf_recall, failed):
    env = fake_tools(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"')
    venv = cached_fake_venv(tmp_path)
    env.update(FAKE_CALLS=str(tmp_path / "calls.txt"), FAKE_PYTEST=pytest_out, FAKE_GPU_R1=gpu_r1,
               FAKE_IVF_RECALL=ivf_recall)
    result = run_script(env)
    assert result.returncode == (1 if failed else 0), result.stdout + result.stderr
    status = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()
              if line.startswith(("ok ", "FAIL "))}
    assert status == {name: "FAIL" if name == failed else "ok" for name in CHECKS}
    assert f"{8 - bool(failed)} of 8 checks ok" in result.stdout
    assert f"venv {venv}: cached, requirements unchanged" in result.stdout  # install's figure lines
    assert "NVIDIA H200 x 1, compute capability 9.0, torch 2.14.1" in result.stdout
    calls = (tmp_path / "calls.txt").read_text()
    assert "pip install" not in calls and "python3 -m venv" not in calls  # the cached venv was reused
    assert "Recall@1: --decode gpu " + gpu_r1 + ", --decode fast 0.60" in result.stdout
    assert "one GPU: a single rank, so NCCL and the gathers across ranks are not exercised" in result.stdout
    if failed == "recipe":
        assert "more than 0.1 apart" in result.stdout
    if failed == "index":
        assert "IVF1024,Flat recall@10 < 0.95 at nprobe 32" in result.stdout


def test_gpu_env_rejects_both_faiss_packages_and_a_missing_faiss_gpu():
    gpu_env = load("benchmarks/gpu_env.py")
    assert gpu_env.faiss_problems({"faiss-gpu"}) == []
    assert "both installed" in gpu_env.faiss_problems({"faiss-cpu", "faiss-gpu"})[0]
    assert "faiss-gpu is not installed (faiss-cpu is)" in gpu_env.faiss_problems({"faiss-cpu"})[0]
    assert "faiss-gpu is not installed (no faiss is)" in gpu_env.faiss_problems(set())[0]


@pytest.mark.skipif("faiss-gpu" in load("benchmarks/gpu_env.py").installed_faiss(), reason="faiss-gpu installed")
def test_gpu_env_fails_in_the_cpu_environment(capsys):
    import torch

    gpu_env = load("benchmarks/gpu_env.py")
    assert gpu_env.main(argparse.Namespace(faiss="gpu")) == 1
    out = capsys.readouterr()
    assert "error: faiss-gpu is not installed" in out.err and "torch " in out.out
    # 'any' takes the faiss-cpu of this environment; only a missing CUDA GPU is then a problem
    assert gpu_env.main(argparse.Namespace(faiss="any")) == (0 if torch.cuda.is_available() else 1)
    out = capsys.readouterr()
    assert "faiss-gpu" not in out.err and "faiss 1." in out.out and "(faiss-cpu, 0 GPUs)" in out.out


def test_python_uses_an_existing_environment_and_skip_leaves_checks_out(tmp_path):
    env = fake_tools(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"')
    given = write_exe(tmp_path / "given-python", FAKE_VENV_PYTHON)
    env.update(FAKE_CALLS=str(tmp_path / "calls.txt"), FAKE_PYTEST="8 passed in 2.0s", FAKE_GPU_R1="0.65",
               FAKE_IVF_RECALL="0.992")
    result = run_script(env, "--python", str(given), "--skip", "knn,index")
    assert result.returncode == 0, result.stdout + result.stderr
    status = [line.split()[:2] for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL ", "skip "))]
    assert status == [["ok", "install"], ["ok", "tests"], ["skip", "knn"], ["ok", "train"], ["ok", "data"],
                      ["ok", "recipe"], ["ok", "ddp"], ["skip", "index"]]
    assert "6 of 6 checks ok" in result.stdout
    assert f"venv none: --python {given} used as it is, nothing installed" in result.stdout
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert not (tmp_path / "venv").exists() and not any(c.startswith("python3 ") for c in calls)  # no venv, no pip
    assert "venv-python benchmarks/gpu_env.py --faiss any" in calls
    assert not any("bench_knn" in c or "bench_index" in c for c in calls)


@pytest.mark.parametrize("args, message", [
    (["--skip", "knn,nope"], "--skip: unknown check 'nope'"),
    (["--skip", "install"], "install cannot be skipped"),
    (["--python", "/no/such/python"], "--python /no/such/python is not an executable"),
    (["--python"], "--python needs an interpreter"),
    (["--fast"], "unknown argument '--fast'"),
])
def test_bad_arguments_exit_2_naming_the_flag(tmp_path, args, message):
    result = run_script(fake_tools(tmp_path, "exit 0"), *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert not (tmp_path / "calls.txt").exists()


def test_ddp_gather_check_passes_one_process_and_catches_a_wrong_gather(monkeypatch):
    ddp_gather = load("benchmarks/ddp_gather.py")
    import torch

    from metric_retrieval.training.distributed import DistInfo

    assert ddp_gather.check(DistInfo(), torch.device("cpu")) == []
    monkeypatch.setattr(ddp_gather, "gather_with_grad", lambda tensor, info: tensor * 2)
    problems = ddp_gather.check(DistInfo(), torch.device("cpu"))
    assert [p.split(":")[0] for p in problems] == ["gather_with_grad values", "gather_with_grad gradient"]


@pytest.mark.slow
def test_ddp_gather_check_on_two_gloo_ranks():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "benchmarks/ddp_gather.py", "--device", "cpu"], cwd=REPO, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "world size 2 (gloo): gather_with_grad values and gradient, all_gather_no_grad" in result.stdout
