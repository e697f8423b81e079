"""Affine warps against exact pixel operations (quarter turns and whole-pixel shifts map pixel centres to pixel
centres, so bilinear resampling must reproduce them exactly)."""

from __future__ import annotations

import math

import torch

from lit_papers.ops.affine import affine_warp, random_affine, random_affine_params


def test_quarter_turn_and_whole_pixel_shift_are_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 7, 7, generator=g)
    turned = affine_warp(x, torch.full((3,), math.pi / 2), torch.zeros(3, 2))
    torch.testing.assert_close(turned, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)
    shifted = affine_warp(x, torch.zeros(3), torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]))
    torch.testing.assert_close(shifted[0, :, :, :-1], x[0, :, :, 1:], atol=1e-5, rtol=0)  # content moves left
    torch.testing.assert_close(shifted[0, :, :, -1], torch.zeros(1, 7))  # background comes in
    torch.testing.assert_close(shifted[1, :, :-2], x[1, :, 2:], atol=1e-5, rtol=0)  # up by 2
    torch.testing.assert_close(shifted[2, :, :, 1:], x[2, :, :, :-1], atol=1e-5, rtol=0)  # right


def test_random_draws_stay_in_range_and_follow_the_generator():
    angles, shifts = random_affine_params(1000, 10.0, 1.5, generator=torch.Generator().manual_seed(3))
    assert angles.abs().max() <= math.radians(10.0) and angles.abs().max() > math.radians(9.0)
    assert shifts.abs().max() <= 1.5 and shifts.shape == (1000, 2)
    x = torch.rand(4, 1, 9, 9)
    a = random_affine(x, 10.0, 1.0, generator=torch.Generator().manual_seed(5))
    b = random_affine(x, 10.0, 1.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, x)
