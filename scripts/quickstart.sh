#!/usr/bin/env bash
# Fresh machine → environment, install, and the main job: train on the built-in synthetic data, then
# retrieve the nearest images of one test query. Usage: bash scripts/quickstart.sh [extra `metric-retrieval train` flags]
# Each call trains into a new runs/quickstart-<date-time> folder, or into --output_dir DIR if given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
RUN=runs/quickstart-$(date +%Y%m%d-%H%M%S)
args=("$@")
for i in "${!args[@]}"; do  # the run folder the user chose, if any (--output_dir DIR or --output_dir=DIR)
  case "${args[$i]}" in
    --output_dir) RUN=${args[$((i + 1))]:-$RUN} ;;
    --output_dir=*) RUN=${args[$i]#--output_dir=} ;;
  esac
done
"$PY" -m metric_retrieval train --output_dir "$RUN" "$@"
QUERY=$("$PY" -c "import sys; from metric_retrieval.retrieval import load_database as load; \
print(load(sys.argv[1])['query']['paths'][0])" "$RUN/database_best.pth")
"$PY" -m metric_retrieval query --query_img_name "$QUERY" --data_base "$RUN/database_best.pth" --retrieval_num 8 \
  --output_dir "$RUN/retrieval"
