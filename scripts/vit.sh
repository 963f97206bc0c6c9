#!/usr/bin/env bash
# ViT-S/16 recipes (HIER / Hyp-ViT style, configs/vit/): proxy-anchor and multi-similarity on CUB, Cars,
# SOP and In-shop, 384-d; the multi-similarity rows add a cross-batch memory on SOP and In-shop.
source "$(dirname "$0")/_common.sh"
for ds in cub cars sop inshop; do
  row "${ds}_vits16_pa" train --config configs/vit/$ds.yaml --data_path {root}/$ds
  row "${ds}_vits16_ms" train --config configs/vit/$ds.yaml --data_path {root}/$ds --loss multi_similarity
done
row "sop_vits16_ms_xbm" train --config configs/vit/sop.yaml --data_path {root}/sop --loss multi_similarity --loss_option memory_size=8192 --loss_option memory_warmup=1000
row "inshop_vits16_ms_xbm" train --config configs/vit/inshop.yaml --data_path {root}/inshop --loss multi_similarity --loss_option memory_size=8192 --loss_option memory_warmup=1000
finish
