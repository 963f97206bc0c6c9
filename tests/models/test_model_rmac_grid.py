"""R-MAC region grid against test vectors worked out from Tolias' ``rmac_regionvec_act.m`` / cirtorch ``rmac``."""
from collections import Counter
from fractions import Fraction

import pytest

from metric_retrieval.models.heads.rmac import rmac_grid_index, rmac_regions


def per_level(regions):
    sides = Counter(side for _, _, side in regions)
    return [sides[s] for s in sorted(sides, reverse=True)]


@pytest.mark.parametrize("H, W, L, idx, counts", [
    (768, 1024, 3, 1, [2, 6, 12]),
    (1024, 768, 3, 1, [2, 6, 12]),
    (1024, 1024, 3, None, [1, 4, 9]),
    (768, 1024, 5, 1, [2, 6, 12, 20, 30]),
    (800, 800, 5, None, [1, 4, 9, 16, 25]),
    (512, 1024, 3, 2, [3, 8, 15]),
    (600, 2000, 3, 4, [5, 12, 21]),
    (300, 1024, 3, 4, [5, 12, 21]),
    (600, 800, 2, 1, [2, 6]),
])
def test_table_rows(H, W, L, idx, counts):
    regions = rmac_regions(H, W, L)
    assert per_level(regions) == counts
    assert len(regions) == sum(counts)
    if idx is not None:
        assert rmac_grid_index(H, W) == idx


def reference_grid_index(H, W):
    """Brute force in exact arithmetic: the first step count (2..7) with the smallest |overlap − 2/5|."""
    w, long = min(H, W), max(H, W)
    costs = {s: abs(1 - Fraction(long - w, (s - 1) * w) - Fraction(2, 5)) for s in range(2, 8)}
    best = min(costs.values())
    return next(s for s in range(2, 8) if costs[s] == best) - 1, sum(c == best for c in costs.values()) > 1


EXACT_TIES = [(H, W) for H in range(1, 65) for W in range(H + 1, 65) if reference_grid_index(H, W)[1]]


def test_exact_ties_are_the_known_ones():
    assert {(5, 9), (10, 18), (20, 36)} <= set(EXACT_TIES)


@pytest.mark.parametrize("H, W", EXACT_TIES)
def test_grid_index_first_on_exact_ties(H, W):
    expected = reference_grid_index(H, W)[0]
    assert rmac_grid_index(H, W) == expected
    assert rmac_grid_index(W, H) == expected


def test_grid_index_matches_exact_reference_everywhere():
    for H in range(1, 65):
        for W in range(1, 65):
            assert rmac_grid_index(H, W) == reference_grid_index(H, W)[0], (H, W)


def test_exact_regions_24x32():
    expected = [(0, 0, 24), (8, 0, 24)]
    expected += [(x, y, 16) for y in (0, 8) for x in (0, 8, 16)]
    expected += [(x, y, 12) for y in (0, 6, 12) for x in (0, 6, 13, 20)]
    assert list(rmac_regions(24, 32, 3)) == expected


def test_exact_regions_32x24_portrait():
    level3 = [r for r in rmac_regions(32, 24, 3) if r[2] == 12]
    assert level3 == [(x, y, 12) for y in (0, 6, 13, 20) for x in (0, 6, 12)]


def test_exact_regions_768x1024_pixels():
    regions = rmac_regions(768, 1024, 3)
    assert [r for r in regions if r[2] == 768] == [(0, 0, 768), (256, 0, 768)]
    assert [r for r in regions if r[2] == 512] == [(x, y, 512) for y in (0, 256) for x in (0, 256, 512)]
    level3 = [(x, y, 384) for y in (0, 192, 384) for x in (0, 213, 426, 640)]
    assert [r for r in regions if r[2] == 384] == level3


def test_exact_regions_1024_square():
    regions = rmac_regions(1024, 1024, 3)
    assert regions[0] == (0, 0, 1024)
    assert [r for r in regions if r[2] == 682] == [(x, y, 682) for y in (0, 342) for x in (0, 342)]
    assert [r for r in regions if r[2] == 512] == [(x, y, 512) for y in (0, 256, 512) for x in (0, 256, 512)]


@pytest.mark.parametrize("H, W", [(7, 10), (10, 7), (1, 1), (3, 50), (24, 32)])
def test_regions_stay_inside_the_map(H, W):
    for x, y, s in rmac_regions(H, W, 5):
        assert s >= 1 and 0 <= x and x + s <= W and 0 <= y and y + s <= H


def test_bad_arguments():
    with pytest.raises(ValueError):
        rmac_regions(0, 5, 3)
