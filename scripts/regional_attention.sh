#!/usr/bin/env bash
# Regional attention (Kim & Yoon, BMVC 2018; spec-landmarks §3): off-the-shelf Caffe ResNet-101, R-MAC
# regions (L = 5) at 1024 px, PCA-whitening learned on other data, context-aware attention; Oxford5k and
# Paris6k (add the Flickr 100k images to jpg/ for 105k/106k), without and with average query expansion
# (top 5). The released weights are passed as extra flags, e.g.
#   bash scripts/regional_attention.sh DATA --pretrained w/resnet101_caffe.pth \
#        --attention_weights w/attention.pth --region_whitening w/pca_landmarks.pth
source "$(dirname "$0")/_common.sh"
for d in oxford5k paris6k; do
  common="--data_name $d --data_path {root}/$d --backbone_type caffe_resnet101 --head regional_attention --imsize 1024 --model_option levels=5"
  row "${d}" eval $common
  row "${d}_qe" eval $common --qe aqe:5
done
finish
