"""Check of the GPU environment that ``benchmarks/gpu_check.sh`` installs, and its versions.

The environment is right when torch sees a CUDA GPU, exactly one faiss package is installed and it is
``faiss-gpu`` (``faiss-cpu`` and ``faiss-gpu`` both provide the ``faiss`` module, so with both installed
one silently overwrites the other's files), and faiss sees the GPUs. Prints one line of versions
(GPU model and count, torch and its CUDA, faiss) and exits 0, or prints every problem and exits 1.
``--faiss any`` (an environment used as it is, ``gpu_check.sh --python``) accepts either faiss package, or
none, and only reports which one is there::

    python benchmarks/gpu_env.py [--faiss any]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys

FAISS_PACKAGES = ("faiss-cpu", "faiss-gpu")


def installed_faiss() -> set[str]:
    """The faiss distributions installed in this environment (names normalised as in PEP 503)."""
    names = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    return names & set(FAISS_PACKAGES)


def faiss_problems(installed: set[str]) -> list[str]:
    """What is wrong with the set of installed faiss packages for a GPU machine (empty: nothing)."""
    if installed >= set(FAISS_PACKAGES):
        return ["faiss-cpu and faiss-gpu are both installed (they overwrite each other's `faiss` module): "
                "pip uninstall -y faiss-cpu faiss-gpu, then pip install faiss-gpu"]
    if "faiss-gpu" not in installed:
        return [f"faiss-gpu is not installed ({'faiss-cpu is' if installed else 'no faiss is'}): "
                "pip uninstall -y faiss-cpu && pip install faiss-gpu"]
    return []


def main(args: argparse.Namespace) -> int:
    import torch

    installed = installed_faiss()
    both = installed >= set(FAISS_PACKAGES)
    problems = faiss_problems(installed) if args.faiss == "gpu" or both else []  # 'any': one of them, or none
    if not torch.cuda.is_available():
        problems.append(f"torch {torch.__version__} sees no CUDA GPU (its CUDA: {torch.version.cuda}; check the "
                        "driver with nvidia-smi)")
    versions = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    if torch.cuda.is_available():
        versions = (f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, "
                    f"compute capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))}, " + versions)
    if installed and not both:
        import faiss

        if installed == {"faiss-gpu"} and faiss.get_num_gpus() < 1:
            problems.append(f"faiss {faiss.__version__} sees no GPU (faiss-gpu built for another CUDA version?)")
        versions += f", faiss {faiss.__version__} ({'/'.join(installed)}, {faiss.get_num_gpus()} GPUs)"
    elif not installed:
        versions += ", no faiss"
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(versions)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faiss", choices=("gpu", "any"), default="gpu",
                        help="gpu: faiss-gpu must be the one faiss installed; any: report whichever is there")
    sys.exit(main(parser.parse_args()))
