# Shared by the paper-table scripts. Usage of every script:
#   bash scripts/NAME.sh DATA_ROOT [--dry-run] [extra train.py flags...]   run the table's rows
#   bash scripts/NAME.sh --smoke                                          every row, 2 steps, synthetic data
# DATA_ROOT holds one folder per dataset in its official layout: cub/ (CUB_200_2011/...), cars/
# (cars_annos.mat, car_ims/), sop/ (Ebay_train.txt, ...), inshop/ (Eval/, img/), oxford5k/, paris6k/.
# A row is declared as `row NAME train|eval ARGS...`; ARGS may use {root} for DATA_ROOT.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
TABLE=$(basename "$0" .sh)
MODE=run
DATA_ROOT=""
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --smoke) MODE=smoke ;;
    -h|--help) sed -n '2,6p' "$REPO/scripts/_common.sh"; exit 0 ;;
    *) if [ -z "$DATA_ROOT" ] && [ "$MODE" != smoke ] && [[ "$arg" != -* ]]; then DATA_ROOT=$arg; else EXTRA+=("$arg"); fi ;;
  esac
done
if [ "$MODE" = run ] && [ -z "$DATA_ROOT" ]; then
  echo "usage: bash scripts/$TABLE.sh DATA_ROOT [--dry-run] [train.py flags] | --smoke" >&2
  exit 2
fi
ROWS=""
row() {
  local name=$1
  shift
  ROWS+="$name"$'\t'"$*"$'\n'
}
finish() {
  cd "$REPO"
  printf '%s' "$ROWS" | "$PY" scripts/tables.py --table "$TABLE" --mode "$MODE" --data_root "$DATA_ROOT" -- "${EXTRA[@]+"${EXTRA[@]}"}"
}
