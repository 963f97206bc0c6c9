#!/usr/bin/env bash
# CLF tables (leftthomas CLF README, last version; spec-models §2.7): ResNet18 / ResNet50 / SEResNet50 on
# CARS and CUB (uncropped and cropped), SOP and In-shop. The README's Params|FLOPs table is for a 1536-d
# embedding (`python -m metric_retrieval.models.profile --head clf --feature_dim 1536`); its recall rows use the default 512.
source "$(dirname "$0")/_common.sh"
for bb in resnet18 resnet50 seresnet50; do
  for crop in uncropped cropped; do
    row "cars_${bb}_${crop}" train --config configs/clf/cars.yaml --data_path {root}/cars --backbone_type $bb --crop_type $crop
    row "cub_${bb}_${crop}" train --config configs/clf/cub.yaml --data_path {root}/cub --backbone_type $bb --crop_type $crop
  done
  row "sop_${bb}" train --config configs/clf/sop.yaml --data_path {root}/sop --backbone_type $bb
  row "inshop_${bb}" train --config configs/clf/inshop.yaml --data_path {root}/inshop --backbone_type $bb
done
finish
