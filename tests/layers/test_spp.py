"""SPP layer (He et al. 2014, sec. 2.3) against the paper's numbers, a float64 loop, adaptive pooling and crops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_papers.layers.spp import (
    SpatialPyramidPooling,
    level_geometry,
    spatial_pyramid_pool,
    spp_over_boxes,
    uncovered,
)


def slow_spp(x: torch.Tensor, levels) -> torch.Tensor:
    """Independent oracle: the paper's formula written as explicit float64 loops over bins."""
    x = x.double()
    b, c, h, w = x.shape
    rows = []
    for bi in range(b):
        vals = []
        for n in levels:
            wh, sh = math.ceil(h / n), math.floor(h / n)
            ww, sw = math.ceil(w / n), math.floor(w / n)
            for ci in range(c):
                for i in range(n):
                    for j in range(n):
                        vals.append(x[bi, ci, i * sh: i * sh + wh, j * sw: j * sw + ww].max().item())
        rows.append(vals)
    return torch.tensor(rows, dtype=torch.float64)


def test_paper_footnote_example():
    # sec. 2.3 footnote: conv5 13x13, pyramid 3x3/2x2/1x1 -> windows 5/7/13, strides 4/6/13
    assert [level_geometry(13, n) for n in (3, 2, 1)] == [(5, 4), (7, 6), (13, 13)]
    assert level_geometry(13, 6) == (3, 2)


@pytest.mark.parametrize("hw", [(13, 13), (10, 10), (11, 11), (6, 6), (7, 12), (20, 9), (24, 24)])
@pytest.mark.parametrize("levels", [(1, 2, 3, 6), (1, 2, 4)])
def test_output_size_and_values_vs_float64_loop(hw, levels):
    g = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    x = torch.randn(2, 3, *hw, generator=g)
    out = spatial_pyramid_pool(x, levels)
    assert out.shape == (2, 3 * sum(n * n for n in levels))
    assert SpatialPyramidPooling(levels=levels)(x).shape == out.shape
    torch.testing.assert_close(out.double(), slow_spp(x, levels), rtol=0, atol=0)


def test_non_square_applies_formula_per_axis():
    # H=7, W=12 at n=3: rows window 3 stride 2, columns window 4 stride 4 -> bin (2, 1) is rows 4..6, cols 4..7
    x = torch.zeros(1, 1, 7, 12)
    x[0, 0, 6, 7] = 5.0  # inside bin (2, 1) only
    out = spatial_pyramid_pool(x, (3,)).view(3, 3)
    expect = torch.zeros(3, 3)
    expect[2, 1] = 5.0
    assert torch.equal(out, expect)


def test_uncovered_rows_hand_computed():
    # a = q n + r: r >= 1 leaves r - 1 trailing cells unpooled
    assert uncovered(10, 4) == 1   # window 3 stride 2: bins end at 3,5,7,9 -> row 9 never seen
    assert uncovered(11, 6) == 4   # window 2 stride 1: rows 7..10 never seen
    assert uncovered(13, 6) == 0 and uncovered(13, 3) == 0 and uncovered(12, 4) == 0
    for a in range(1, 40):
        for n in range(1, a + 1):
            q, r = divmod(a, n)
            assert uncovered(a, n) == (r - 1 if r else 0)


def test_more_sliding_outputs_than_bins_are_dropped():
    # a=11, n=6: a plain max pool (2, stride 1) gives 10 outputs per axis; the formula keeps 6
    x = torch.randn(1, 2, 11, 11)
    assert F.max_pool2d(x, 2, 1).shape[-1] == 10
    assert spatial_pyramid_pool(x, (6,)).shape == (1, 2 * 36)


def test_uncovered_row_is_ignored_unlike_adaptive_pool():
    # a=10, n=4: the formula never looks at row/column 9; adaptive_max_pool2d ([7, 10) for the last bin) does
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 9, 9] = 7.0
    ours = spatial_pyramid_pool(x, (4,)).view(4, 4)
    adaptive = F.adaptive_max_pool2d(x, 4)[0, 0]
    assert ours.max().item() == 0.0
    assert adaptive[3, 3].item() == 7.0


@pytest.mark.parametrize("hw,n", [((12, 12), 4), ((12, 12), 6), ((12, 12), 3), ((8, 16), 4), ((18, 6), 2)])
def test_equals_adaptive_max_pool_when_n_divides_a(hw, n):
    x = torch.randn(2, 4, *hw)
    torch.testing.assert_close(spatial_pyramid_pool(x, (n,)), F.adaptive_max_pool2d(x, n).reshape(2, -1),
                               rtol=0, atol=0)


def test_differs_from_adaptive_when_not_divisible():
    # a=10, n=4 bins: formula [0,3) [2,5) [4,7) [6,9); adaptive [0,3) [2,5) [5,8) [7,10) -> bin 2 differs
    x = torch.zeros(1, 1, 10, 1).expand(1, 1, 10, 4).clone()
    x[0, 0, 4, :] = 3.0  # in formula bin 2 ([4,7)) but only in adaptive bin 1 ([2,5)), not adaptive bin 2
    ours = spatial_pyramid_pool(x, (4,)).view(4, 4)[:, 0]
    adaptive = F.adaptive_max_pool2d(x, 4)[0, 0, :, 0]
    assert ours.tolist() == [0.0, 3.0, 3.0, 0.0]
    assert adaptive.tolist() == [0.0, 3.0, 0.0, 0.0]


def test_too_small_map_raises_clearly():
    with pytest.raises(ValueError, match="stride floor"):
        spatial_pyramid_pool(torch.randn(1, 1, 5, 8), (1, 2, 6))
    with pytest.raises(ValueError, match="levels"):
        SpatialPyramidPooling(levels=())


def test_gradient_only_at_max_locations():
    g = torch.Generator().manual_seed(3)
    x = torch.randperm(1 * 2 * 9 * 11, generator=g).double().view(1, 2, 9, 11).requires_grad_(True)  # distinct
    levels = (1, 2, 3)
    out = spatial_pyramid_pool(x, levels)
    weights = torch.rand(out.shape, generator=g, dtype=torch.float64)
    (out * weights).sum().backward()
    # expected: each bin sends its weight to its argmax (found by the slow loop's formula)
    expect = torch.zeros_like(x)
    k = 0
    h, w = 9, 11
    for n in levels:
        wh, sh, ww, sw = math.ceil(h / n), h // n, math.ceil(w / n), w // n
        for c in range(2):
            for i in range(n):
                for j in range(n):
                    win = x.detach()[0, c, i * sh: i * sh + wh, j * sw: j * sw + ww]
                    r, q = divmod(int(win.argmax()), win.shape[1])
                    expect[0, c, i * sh + r, j * sw + q] += weights[0, k]
                    k += 1
    assert k == out.shape[1]
    torch.testing.assert_close(x.grad, expect, rtol=0, atol=1e-12)
    assert (x.grad != 0).sum() <= out.shape[1]


def test_spp_over_boxes_equals_crop_then_layer():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 3, 20, 24, generator=g)
    levels = (1, 2, 3, 6)
    # boxes in image pixels at stride 16: scaled windows are whole cells
    cells = [(0, 0, 0, 13, 13), (0, 4, 2, 24, 20), (1, 3, 5, 10, 17), (1, 0, 0, 24, 20)]  # (b, c0, r0, c1, r1)
    boxes = torch.tensor([[b, c0 * 16.0, r0 * 16.0, c1 * 16.0, r1 * 16.0] for b, c0, r0, c1, r1 in cells])
    out = spp_over_boxes(feats, boxes, levels, spatial_scale=1 / 16)
    assert out.shape == (4, 3 * 50)
    for k, (b, c0, r0, c1, r1) in enumerate(cells):
        ref = SpatialPyramidPooling(levels=levels)(feats[b:b + 1, :, r0:r1, c0:c1])[0]
        torch.testing.assert_close(out[k], ref, rtol=0, atol=0)
    # list-of-boxes form (torchvision roi_pool style) gives the same rows
    as_list = [boxes[boxes[:, 0] == b, 1:] for b in range(2)]
    torch.testing.assert_close(spp_over_boxes(feats, as_list, levels, spatial_scale=1 / 16), out, rtol=0, atol=0)


def test_spp_over_boxes_fractional_and_small_windows():
    feats = torch.randn(1, 2, 16, 16)
    # fractional edges cover outwards: [2.3, 9.1] -> cells [2, 10)
    out = spp_over_boxes(feats, torch.tensor([[0, 2.3, 1.5, 9.1, 12.0]]), (1, 2), spatial_scale=1.0)
    ref = spatial_pyramid_pool(feats[:, :, 1:12, 2:10], (1, 2))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # a 2x2 window with level 6 grows to 6 cells around its centre, kept inside the map (corner box -> [0, 6))
    out = spp_over_boxes(feats, torch.tensor([[0, 14.0, 0.0, 16.0, 2.0]]), (1, 6), spatial_scale=1.0)
    ref = spatial_pyramid_pool(feats[:, :, 0:6, 10:16], (1, 6))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="x2 >= x1"):
        spp_over_boxes(feats, torch.tensor([[0, 5.0, 0.0, 2.0, 4.0]]), (1,), spatial_scale=1.0)


def test_spp_over_boxes_gradient_reaches_features():
    feats = torch.randn(1, 2, 12, 12, requires_grad=True)
    out = spp_over_boxes(feats, torch.tensor([[0, 0.0, 0.0, 6.0, 6.0]]), (1, 2), spatial_scale=1.0)
    out.sum().backward()
    assert feats.grad[:, :, 6:, :].abs().sum() == 0 and feats.grad[:, :, :, 6:].abs().sum() == 0
    assert feats.grad[:, :, :6, :6].abs().sum() > 0


def test_spp_classifier_accepts_any_input_size():
    # The paper's classification use (sec. 2.3-2.4): conv layers -> SPP -> FC, one set of weights for any image
    # size. A small net built here (not lit_papers/papers/spp_net, which would need a card, configs and a sweep).
    torch.manual_seed(0)
    spp = SpatialPyramidPooling(levels=(1, 2, 4))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        spp, torch.nn.Linear(spp.output_dim(16), 10),
    )
    assert spp.output_dim(16) == 16 * 21
    small, large = net(torch.randn(2, 3, 32, 32)), net(torch.randn(2, 3, 45, 71))
    assert small.shape == large.shape == (2, 10)
    (small.sum() + large.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match="at least 4 cells"):
        net(torch.randn(1, 3, 6, 6))  # 3x3 conv map < level 4
