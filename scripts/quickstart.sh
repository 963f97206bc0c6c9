#!/usr/bin/env bash
# Fresh machine → environment, install, and the main job: train on the built-in synthetic data, then
# retrieve the nearest images of one test query. Usage: bash scripts/quickstart.sh [extra train.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
RUN=runs/quickstart
"$PY" train.py --output_dir "$RUN" "$@"
QUERY=$("$PY" -c "import torch; print(torch.load('$RUN/database_best.pth', weights_only=False)['query']['paths'][0])")
"$PY" test.py --query_img_name "$QUERY" --data_base "$RUN/database_best.pth" --retrieval_num 8 --output_dir "$RUN/retrieval"
