#!/usr/bin/env bash
# DAS Table 1 (Liu et al., ECCV 2022; DAS table1.sh, spec-training §1.7): MS loss, ResNet-50, 512-d, with
# DAS (K = 8). Baseline rows (MS alone) are included for the comparison the table makes.
# Fixes a slip of the original script: its CARS / ResNet-50 line passed --dataset cub200; here it is CARS.
source "$(dirname "$0")/_common.sh"
FINE="--das_dfs_scale_left 0.99 --das_dfs_scale_right 1.01 --das_mts_scale 0.01 --detach"
row cub_ms train --config configs/das/table1.yaml --data_name cub --data_path {root}/cub --no-das --batch_size 180 --weight_decay 0.0008
row cub_ms_das train --config configs/das/table1.yaml --data_name cub --data_path {root}/cub --batch_size 180 --weight_decay 0.0008 $FINE
row cars_ms train --config configs/das/table1.yaml --data_name cars --data_path {root}/cars --no-das
row cars_ms_das train --config configs/das/table1.yaml --data_name cars --data_path {root}/cars $FINE
row sop_ms train --config configs/das/table1.yaml --data_name sop --data_path {root}/sop --no-das
row sop_ms_das train --config configs/das/table1.yaml --data_name sop --data_path {root}/sop --das_mts_scale 0.1
finish
