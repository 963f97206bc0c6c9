#!/usr/bin/env bash
# The CUDA paths on a real GPU: eight checks, one line each (`ok` / `FAIL <reason>`), each followed by its figures.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine; exits at once (status 2) without a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: prints every command it would run, runs none
#   bash benchmarks/gpu_check.sh --python /opt/env/bin/python3 --skip knn,index
#                                           # an existing environment (nothing installed) and fewer checks
#
#   1 install  a fresh venv ($GPU_CHECK_VENV, default .venv-gpu; reused while its requirements are unchanged,
#              rebuilt when they change): requirements.txt as pinned but faiss-gpu instead of faiss-cpu, same
#              version (what the README tells GPU users), + requirements-dev.txt; benchmarks/gpu_env.py then
#              asserts faiss-gpu without faiss-cpu and that torch and faiss see the GPU. An install failure
#              stops the script with pip's error. With --python PY nothing is installed: PY's environment is
#              used as it is (a cluster's module, a machine that cannot reach PyPI) and gpu_env.py only reports
#              its faiss; the checks that need faiss-gpu (knn, index, and tests: its faiss-GPU tests) then fail
#              unless it is there.
#   2 tests    pytest -m cuda: every test that needs CUDA; none may skip.
#   3 knn      bench_knn at SOP size (60,502 x 512, k = 1000): faiss_gpu and torch_cuda against faiss_cpu, their
#              metrics must agree; k = 3000 > 2048 (the faiss GPU limit): faiss_gpu must fall back, same metrics.
#   4 train    bench_train --device cuda --batch_size 128: fp32, bf16, fp16 + grad scaler, eager and compiled.
#   5 data     bench_data --device cuda: the gpu decode variant (nvJPEG) against fast and cache.
#   6 recipe   CGD ResNet-50 on the synthetic data at 224 px, --decode gpu --amp bf16 --compile: Recall@1 within
#              RECALL_TOL of the same run with --decode fast.
#   7 ddp      torchrun --nproc_per_node <all GPUs> (NCCL): the cross-rank gathers checked exactly, then a few
#              training steps.
#   8 index    bench_index --gpu at 200,000 x 512: Flat, IVF-Flat and IVF-PQ trained and searched on the GPUs
#              (IndexShards over several): recall@10 of IVF1024,Flat at nprobe 32 against the GPU Flat >= 0.95.
#
# Time: <= 11 minutes on one H100/H200 with the venv cached. Each command runs under `timeout` with its budget in
# seconds (the first argument of `cmd` below), per check: install 20, tests 40, knn 70, train 150, data 40,
# recipe 180, ddp 60, index 60 = 620. A first install (or one after the requirements changed) adds the venv (30)
# and the download of torch's CUDA wheels, ~4 GB (pip, 600).
# --skip NAME,... leaves checks out (listed as `skip`).
# Logs: $GPU_CHECK_OUT (default runs/gpu_check)/<check>.log. Exit status 0: all ok; 1: a check failed; 2: no
# CUDA GPU, or bad usage.
set -uo pipefail  # no -e: a failed check is reported and the next one runs
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GPU_CHECK_VENV:-$REPO/.venv-gpu}
OUT=${GPU_CHECK_OUT:-$REPO/runs/gpu_check}
PY=$VENV/bin/python
RECALL_TOL=0.1  # 19 of the 192 synthetic test queries: nvJPEG and libjpeg-turbo differ by a grey level here and there
WORKERS=$(( $(nproc) / 2 ))
WORKERS=$(( WORKERS < 1 ? 1 : WORKERS > 8 ? 8 : WORKERS ))  # DataLoader workers: half the cores, 1..8
CHECKS=(install tests knn train data recipe ddp index)
DRY=0
GIVEN_PY=""
SKIP=""
usage_error() { echo "error: $1 (expected --dry-run, --python PY, --skip CHECK,... or --help)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --python) [ $# -ge 2 ] || usage_error "--python needs an interpreter"; GIVEN_PY=$2; shift ;;
    --skip) [ $# -ge 2 ] || usage_error "--skip needs check names"; SKIP=$2; shift ;;
    -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
  shift
done
for name in ${SKIP//,/ }; do
  [[ " ${CHECKS[*]} " == *" $name "* ]] || usage_error "--skip: unknown check '$name' (checks: ${CHECKS[*]})"
  [ "$name" != install ] || usage_error "--skip: install cannot be skipped (use --python to install nothing)"
done
if [ -n "$GIVEN_PY" ]; then
  [ -x "$GIVEN_PY" ] || command -v "$GIVEN_PY" > /dev/null || usage_error "--python $GIVEN_PY is not an executable"
  PY=$GIVEN_PY
fi
cd "$REPO" || exit 2

if [ "$DRY" = 0 ]; then
  if ! command -v nvidia-smi > /dev/null; then
    reason="nvidia-smi is not installed"
  elif ! gpus=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<< "$gpus"; then
    reason="nvidia-smi lists no GPU: $(head -n 1 <<< "$gpus")"
  fi
  if [ -n "${reason:-}" ]; then
    echo "error: no CUDA GPU on this machine ($reason); benchmarks/gpu_check.sh needs one" \
         "(--dry-run prints its commands anywhere)" >&2
    exit 2
  fi
  mkdir -p "$OUT" || exit 2
  echo "gpu_check $(date -u '+%F %T') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), logs in $OUT"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | sed 's/^/  GPU /'
fi

LOG=/dev/null
REASON=""
show() {  # the command line, each word quoted only where the shell needs it
  local word
  printf '$'
  for word in "$@"; do
    if [[ "$word" =~ ^[][A-Za-z0-9_./=,:+@%-]+$ ]]; then printf ' %s' "$word"; else printf ' %q' "$word"; fi
  done
  printf '\n'
}

cmd() {  # cmd BUDGET_S COMMAND...: run COMMAND under `timeout BUDGET_S` (output to the check's log) or print it
  local budget=$1 rc
  shift
  if [ "$DRY" = 1 ]; then
    printf '   '; show "$@"
    return 0
  fi
  show "$@" >> "$LOG"
  timeout --kill-after=10 "$budget" "$@" >> "$LOG" 2>&1
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    REASON="over its ${budget} s budget: $*"
  elif [ "$rc" != 0 ]; then
    REASON="exit $rc of: $* -- $(grep -v '^\s*$' "$LOG" | tail -n 1)"
  fi
  return "$rc"
}

expect() {  # expect PATTERN WHY: the check's log must contain PATTERN (extended regex), else FAIL with WHY
  if [ "$DRY" = 1 ]; then printf '   (the output must contain /%s/)\n' "$1"; return 0; fi
  grep -Eq -- "$1" "$LOG" || { REASON=$2; return 1; }
}

reject() {  # reject PATTERN WHY: the check's log must not contain PATTERN, else FAIL with WHY
  if [ "$DRY" = 1 ]; then printf '   (the output must not contain /%s/)\n' "$1"; return 0; fi
  ! grep -Eq -- "$1" "$LOG" || { REASON="$2: $(grep -E -- "$1" "$LOG" | head -n 1)"; return 1; }
}

FAILED=0
SKIPPED=0
check() {  # check NAME FIGURES_REGEX FUNCTION: run one check, print `ok` or `FAIL <reason>`, then its figures
  local name=$1 figures=$2 fn=$3 start=$SECONDS
  if [[ ",$SKIP," == *",$name,"* ]]; then echo "skip $name (--skip)"; SKIPPED=$((SKIPPED + 1)); return; fi
  if [ "$DRY" = 1 ]; then echo "[$name]"; "$fn"; return; fi
  LOG=$OUT/$name.log
  REASON=""
  : > "$LOG"
  if "$fn"; then
    echo "ok   $name ($((SECONDS - start)) s)"
  else
    echo "FAIL $name ($((SECONDS - start)) s): ${REASON:-see $LOG}"
    FAILED=$((FAILED + 1))
  fi
  grep -E -- "$figures" "$LOG" | grep -v '^\$' | sed 's/^ */     /'
}

# ---- 1. the GPU venv ------------------------------------------------------------------------------------------
gpu_requirements() {  # requirements.txt with faiss-cpu==V -> faiss-gpu==V, then requirements-dev.txt's own lines
  sed 's/^faiss-cpu==/faiss-gpu==/' requirements.txt
  grep -v '^-r ' requirements-dev.txt
}

install() {
  local stamp=$VENV/.gpu_check-requirements.txt
  if [ -n "$GIVEN_PY" ]; then
    [ "$DRY" = 1 ] || echo "venv none: --python $GIVEN_PY used as it is, nothing installed" >> "$LOG"
    cmd 20 "$PY" benchmarks/gpu_env.py --faiss any
    return
  fi
  if [ "$DRY" = 1 ]; then
    echo "   (requirements: requirements.txt with faiss-cpu==V replaced by faiss-gpu==V, + requirements-dev.txt)"
  elif [ -x "$PY" ] && gpu_requirements | cmp -s - "$stamp"; then
    echo "venv $VENV: cached, requirements unchanged" >> "$LOG"
  else
    if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
      REASON="$VENV exists and is not a venv (no pyvenv.cfg); set GPU_CHECK_VENV to another folder"
      return 1
    fi
    rm -rf "$VENV"
  fi
  if [ "$DRY" = 1 ] || [ ! -x "$PY" ]; then
    cmd 30 "${PYTHON:-python3}" -m venv "$VENV" || return 1
    [ "$DRY" = 1 ] || gpu_requirements > "$VENV/requirements-gpu.txt"
    cmd 600 "$PY" -m pip install --quiet --disable-pip-version-check -r "$VENV/requirements-gpu.txt" || return 1
    [ "$DRY" = 1 ] || cp "$VENV/requirements-gpu.txt" "$stamp"
  fi
  cmd 20 "$PY" benchmarks/gpu_env.py
}

# ---- 2.-7. ------------------------------------------------------------------------------------------------------
cuda_tests() {
  cmd 40 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs || return 1
  reject "[0-9]+ skipped" "CUDA tests skipped on a CUDA machine"
}

knn() {  # SOP: 3 subprocesses of ~5 s data + search each, the faiss_cpu ones the slowest
  cmd 45 "$PY" benchmarks/bench_knn.py --modes ours,faiss --backends faiss_gpu,torch_cuda,faiss_cpu || return 1
  cmd 25 "$PY" benchmarks/bench_knn.py --modes ours --backends faiss_gpu,torch_cuda --k 3000 || return 1
  expect "warning: faiss_gpu searches at most 2048 neighbours" "faiss_gpu did not fall back at k = 3000"
}

train_bench() {  # 3 compilations of the ResNet-50 step (~40 s each) dominate
  cmd 150 "$PY" benchmarks/bench_train.py --device cuda --batch_size 128 --steps 5 --warmup 1 \
    --variants fp32,bf16,fp16 --compile --compile_variants fp32,bf16,fp16
}

data_bench() {
  cmd 40 "$PY" benchmarks/bench_data.py --device cuda --workers "$WORKERS" --num_images 400 --epochs 1 --repeats 2 \
    --data_dir "$OUT/bench_data" || return 1
  expect "^  gpu " "bench_data timed no gpu variant"
}

best_recall() {  # the best test Recall@1 a run folder's train.log reports
  grep -o 'new best test/recall@1 [0-9.]*' "$1/train.log" 2>/dev/null | tail -n 1 | awk '{print $4}'
}

recipe() {  # the first run compiles (~40 s of its ~90 s on an H200); the second finds the kernels in inductor's cache
  local flags=(--backbone_type resnet50 --head cgd --feature_dim 1536 --gd_config SG --stage3_stride 1
               --image_size 224 --batch_size 48 --num_epochs 3 --workers "$WORKERS" --amp bf16 --compile --seed 0
               --no_tensorboard)
  cmd 120 "$PY" train.py "${flags[@]}" --decode gpu --output_dir "$OUT/recipe_gpu" || return 1
  cmd 60 "$PY" train.py "${flags[@]}" --decode fast --output_dir "$OUT/recipe_fast" || return 1
  if [ "$DRY" = 1 ]; then echo "   (Recall@1 of recipe_gpu within $RECALL_TOL of recipe_fast's)"; return 0; fi
  local gpu fast
  gpu=$(best_recall "$OUT/recipe_gpu") fast=$(best_recall "$OUT/recipe_fast")
  echo "Recall@1: --decode gpu ${gpu:-?}, --decode fast ${fast:-?} (allowed difference $RECALL_TOL)" >> "$LOG"
  awk -v a="${gpu:--9}" -v b="${fast:-9}" -v t="$RECALL_TOL" 'BEGIN { d = a - b; exit !(d <= t && -d <= t) }' ||
    { REASON="Recall@1 with --decode gpu ${gpu:-?} vs fast ${fast:-?}: more than $RECALL_TOL apart"; return 1; }
}

ddp() {
  local ngpu=N_GPUS
  if [ "$DRY" = 1 ]; then
    echo "   (N_GPUS: torch.cuda.device_count() in the venv)"
  else
    ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    [ "$ngpu" != 1 ] || echo "one GPU: a single rank, so NCCL and the gathers across ranks are not exercised" >> "$LOG"
  fi
  local run=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$ngpu")
  cmd 20 "${run[@]}" benchmarks/ddp_gather.py --device cuda || return 1
  cmd 40 "${run[@]}" train.py --device cuda --num_epochs 1 --max_steps_per_epoch 5 --batch_size 16 --workers 2 \
    --no_tensorboard --output_dir "$OUT/ddp"
}

index_bench() {  # 200k vectors: generating them on the CPU (~10 s) dominates the GPU work
  cmd 60 "$PY" benchmarks/bench_index.py --parts index --gpu --n 200000 --clusters 2000 --nlist 1024 \
    --train_size 50000 --nprobe 8,32 --pq 64np --threads "$(nproc)" || return 1
  local ivf='"index": "IVF1024,Flat", "nprobe": 32, '
  expect "$ivf\"on\": \"(Gpu[A-Za-z]*|IndexShards)\"" "the IVF index was not searched on the GPU" || return 1
  expect "$ivf.*\"recall@10\": (0\\.9[5-9]|1\\.0)" "IVF1024,Flat recall@10 < 0.95 at nprobe 32"
}

START=$SECONDS
check install "^venv |torch [0-9]" install
if [ "$FAILED" != 0 ]; then
  echo "stopped: the GPU environment is not usable; the end of $OUT/install.log:" >&2
  tail -n 20 "$OUT/install.log" >&2
  exit 1
fi
check tests "passed|failed|SKIPPED" cuda_tests
check knn "^ours|^faiss|ratio|agree|DIFFER|warning" knn
check train "images/s|overhead" train_bench
check data "vs pil" data_bench
check recipe "^Recall@1" recipe
check ddp "^world size|^one GPU|^best recall" ddp
check index '^\{"index"' index_bench
[ "$DRY" = 1 ] && exit 0
echo "$((${#CHECKS[@]} - SKIPPED - FAILED)) of $((${#CHECKS[@]} - SKIPPED)) checks ok in $((SECONDS - START)) s"
[ "$FAILED" = 0 ]
