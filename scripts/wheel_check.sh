#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a clean virtual environment, and use it from a folder outside
# the checkout: every command's --help, the shipped recipes, a tiny train -> eval -> index -> query -> export on
# the built-in synthetic data, and `import metric_retrieval` as the only new top-level name.
# The new environment reaches the pinned dependencies of .venv through a .pth file (nothing is downloaded);
# the wheel itself is installed with --no-deps, so only its own files land in the new site-packages.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# built from a copy of the checkout's files (tracked and not ignored), so no build/ folder is left in the checkout
mkdir "$WORK/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 tar -cf - --) | tar -xf - -C "$WORK/src"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/dist" "$WORK/src"
"$PY" -m venv --without-pip "$WORK/venv"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DEPS="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
before="$(ls "$SITE")"
"$PY" -m pip --python "$WORK/venv/bin/python" install --quiet --no-deps --no-index "$WORK"/dist/*.whl
echo "$DEPS" > "$SITE/zz_dependencies.pth"
new="$(comm -13 <(echo "$before") <(ls "$SITE" | grep -v '^zz_dependencies.pth$'))"
unexpected="$(echo "$new" | grep -v -E '^(metric_retrieval|metric_retrieval-[0-9.]+\.dist-info)$' || true)"
if [ -n "$unexpected" ]; then echo "error: the wheel installed other top-level names: $unexpected" >&2; exit 1; fi
cd "$WORK"
step() { "$@" > step.log 2>&1 || { cat step.log; echo "error: failed: $*" >&2; exit 1; }; }
export PATH="$WORK/venv/bin:$PATH" METRIC_RETRIEVAL_CACHE="$WORK/cache"
python -c 'import metric_retrieval, sys; assert "/venv/" in metric_retrieval.__file__, metric_retrieval.__file__'
for cmd in train eval query index serve export data; do step metric-retrieval "$cmd" --help; done
step python -m metric_retrieval --help
# the paper recipes ship inside the wheel: --config finds them with no checkout around
python -c 'from metric_retrieval.training.config import find_config as f, resolve_config as r
assert "/venv/" in str(f("configs/cgd/cars.yaml")), f("configs/cgd/cars.yaml")
assert r(["--config", "configs/transfer/scratch.yaml"])["loss"] == "multi_similarity"'
step metric-retrieval train --num_epochs 1 --image_size 32 --workers 0 --output_dir run
step metric-retrieval eval --checkpoint run/model_best.pth --data_name folder --data_path .synth/default_folder \
    --image_size 32 --workers 0 --json metrics.json
python -c 'import json; m = json.load(open("metrics.json")); assert 0 <= m["recall@1"] <= 1, m'
step metric-retrieval index build --checkpoint run/model_best.pth --images .synth/default_folder/test --out idx \
    --workers 0 --no_progress
query="$(find .synth/default_folder/test -name '*.jpg' | sort | head -1)"
step metric-retrieval query --index idx --query_img_name "$query" --retrieval_num 3 --output_dir q
grep -q "$(basename "$query")" step.log  # an indexed image finds itself
step metric-retrieval query --data_base run/database_best.pth --query_img_name "$query" --output_dir q2
test -f q2/montage.png
step metric-retrieval export --checkpoint run/model_best.pth --format torchscript --out model.ts
test -f model.ts && test -f model.ts.json
echo "wheel check: installed outside the checkout; help, train, eval, index, query, export ran"
