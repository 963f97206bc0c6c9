#!/usr/bin/env bash
# ABIR tables (Nie et al., ICMR 2019; spec-models §3.8): with and without SE on CUB, CARS, SOP, In-shop.
# Fixes a slip of the original: CUB uses the zero-shot split (classes 1-100 / 101-200), not the
# classification split of the released train.txt/test.txt.
source "$(dirname "$0")/_common.sh"
for d in cub cars sop inshop; do
  row "${d}_se" train --config configs/abir/$d.yaml --data_path {root}/$d
  row "${d}_no_se" train --config configs/abir/$d.yaml --data_path {root}/$d --no_se
done
finish
