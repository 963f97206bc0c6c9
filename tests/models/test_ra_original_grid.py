"""The regional-attention original's R-MAC boxes (jaeyoon1603/Retrieval-RegionalAttention ``Common.py``).

The reference below transcribes ``get_rmac_region_coordinates`` (grid on the image's pixel size),
``pack_regions_for_network`` (inclusive xyxy) and ``RoIPool`` with a 1×1 output at scale 1/32, and is
compared box by box and descriptor by descriptor with :func:`original_map_boxes` / :func:`box_pool`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metric_retrieval.models.heads.rmac import box_pool, original_map_boxes, rmac_regions


def reference_pixel_regions(H, W, L):
    ovr = 0.4
    steps = np.array((2, 3, 4, 5, 6, 7), dtype=np.float32)
    w = np.minimum(H, W)
    b = (np.maximum(H, W) - w) / (steps - 1)
    idx = np.argmin(np.abs(((w ** 2 - w * b) / w ** 2) - ovr)) + 1
    Wd = idx if H < W else 0
    Hd = idx if H > W else 0
    out = []
    for l in range(1, L + 1):  # noqa: E741 (the original's name)
        wl = np.floor(2 * w / (l + 1))
        wl2 = np.floor(wl / 2 - 1)
        bw = (W - wl) / (l + Wd - 1) if l + Wd - 1 > 0 else 0
        cen_w = np.floor(wl2 + bw * np.arange(l - 1 + Wd + 1)) - wl2
        bh = (H - wl) / (l + Hd - 1) if l + Hd - 1 > 0 else 0
        cen_h = np.floor(wl2 + bh * np.arange(l - 1 + Hd + 1)) - wl2
        out += [[j, i, wl, wl] for i in cen_h for j in cen_w]
    for r in out:
        for j in range(4):
            r[j] = int(round(r[j]))
        if r[0] + r[2] > W:
            r[0] -= (r[0] + r[2]) - W
        if r[1] + r[3] > H:
            r[1] -= (r[1] + r[3]) - H
    return np.array(out).astype(np.float32)


def reference_roi_max(features, regions, scale=1 / 32):
    rois = regions.copy()
    rois[:, 2] = rois[:, 0] + rois[:, 2] - 1
    rois[:, 3] = rois[:, 1] + rois[:, 3] - 1
    _, c, height, width = features.shape
    out = torch.zeros(len(rois), c)
    for k, roi in enumerate(rois):
        x0, y0, x1, y1 = torch.round(torch.from_numpy(roi) * scale).numpy().astype(int)
        hstart, hend = min(height, max(0, y0)), min(height, max(0, int(np.ceil(max(y1 - y0 + 1, 1))) + y0))
        wstart, wend = min(width, max(0, x0)), min(width, max(0, int(np.ceil(max(x1 - x0 + 1, 1))) + x0))
        if hend > hstart and wend > wstart:
            out[k] = features[0, :, hstart:hend, wstart:wend].amax(dim=(1, 2))
    return out


SIZES = [(1024, 768), (768, 1024), (517, 288), (288, 517), (1024, 1024), (683, 1024), (1024, 575), (200, 300)]


@pytest.mark.parametrize("height,width", SIZES)
def test_boxes_and_descriptors_equal_the_original(height, width):
    map_h, map_w = -(-height // 32), -(-width // 32)
    features = torch.randn(1, 8, map_h, map_w, generator=torch.Generator().manual_seed(height * width))
    boxes = original_map_boxes(height, width, map_h, map_w, levels=5)
    reference = reference_roi_max(features, reference_pixel_regions(height, width, 5))
    assert len(boxes) == len(reference)
    torch.testing.assert_close(box_pool(features, boxes)[0], reference, rtol=0, atol=0)


def test_the_original_grid_is_not_the_map_grid():
    # a 517x288 image: ResNet map 17x9 (ceil of /32); the map grid of Tolias/cirtorch at L=5
    boxes = original_map_boxes(517, 288, 17, 9, levels=5)
    ours = [(x, y, x + s, y + s) for x, y, s in rmac_regions(17, 9, 5)]
    assert (len(boxes), len(ours)) == (70, 85)  # the original 70, the map grid 85
    for height, width in [(1024, 768), (768, 1024), (1024, 683)]:
        map_h, map_w = -(-height // 32), -(-width // 32)
        boxes = original_map_boxes(height, width, map_h, map_w, levels=5)
        ours = [(x, y, x + s, y + s) for x, y, s in rmac_regions(map_h, map_w, 5)]
        differ = len(set(boxes) ^ set(ours)) // 2
        assert differ >= 0.9 * min(len(boxes), len(ours)), (height, width, differ, len(boxes), len(ours))
