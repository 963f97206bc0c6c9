#!/usr/bin/env bash
# DAS Table 2 (Liu et al., ECCV 2022; DAS table2.sh, spec-training §1.7): ResNet-50, 128-d, each loss with
# and without DAS on CUB, CARS and SOP. Slips of the originals fixed here: N-pair runs (the published
# code raised an AttributeError, §1.6.1) and do not divide embeddings by 4 (RDML applies that to
# BN-Inception only); ArcFace is not in this table.
source "$(dirname "$0")/_common.sh"
FINE="--das_dfs_scale_left 0.99 --das_dfs_scale_right 1.01"
# loss | miner | L2-normalised output | CUB/CARS "+DAS" flags | SOP "+DAS" flags
ROWS_SPEC=(
  "triplet_semihard|triplet|semihard|yes|$FINE --detach|--das_mts_scale 0.1 --aux_loss --detach"
  "triplet_distance|triplet|distance|yes|$FINE --detach|--das_mts_scale 0.1 --aux_loss --detach"
  "contrastive_distance|contrastive|distance|yes|$FINE --detach|--das_mts_scale 0.1"
  "margin_distance|margin|distance|yes|$FINE --detach|"
  "lifted|lifted|lifted|no|$FINE --detach --das_not_normalize|$FINE --das_mts_scale 0.1 --das_not_normalize"
  "npair|npair|npair|no|$FINE --detach --das_not_normalize|$FINE --das_mts_scale 0.1 --das_not_normalize"
  "multisimilarity|multi_similarity|none|yes|$FINE --detach|--das_mts_scale 0.1"
)
for spec in "${ROWS_SPEC[@]}"; do
  IFS='|' read -r name loss miner norm das_fine das_sop <<<"$spec"
  norm_flag=""
  [ "$norm" = no ] && norm_flag="--model_option embedding_norm=false"
  for d in cub cars sop; do
    base="--config configs/das/base.yaml --data_name $d --data_path {root}/$d --loss $loss --miner $miner $norm_flag"
    row "${d}_${name}" train $base
    flags=$das_fine
    [ "$d" = sop ] && flags=$das_sop
    row "${d}_${name}_das" train $base --das $flags
  done
done
finish
