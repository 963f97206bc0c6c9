#!/usr/bin/env bash
# CGD tables (leftthomas/CGD README; spec-models §1.10): ResNet-50 and ResNeXt-50 on CARS and CUB
# (uncropped and bbox-cropped), SOP and In-shop, 1536-d, 20 epochs.
source "$(dirname "$0")/_common.sh"
for bb in resnet50 resnext50; do
  for crop in uncropped cropped; do
    row "cars_${bb}_${crop}" train --config configs/cgd/cars.yaml --data_path {root}/cars --backbone_type $bb --crop_type $crop
    row "cub_${bb}_${crop}" train --config configs/cgd/cub.yaml --data_path {root}/cub --backbone_type $bb --crop_type $crop
  done
  row "sop_${bb}" train --config configs/cgd/sop.yaml --data_path {root}/sop --backbone_type $bb
  row "inshop_${bb}" train --config configs/cgd/inshop.yaml --data_path {root}/inshop --backbone_type $bb
done
finish
