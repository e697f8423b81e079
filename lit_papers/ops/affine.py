"""Small rotations and shifts of image batches (the "affine distortions" used on Omniglot by Koch et al. 2015 and
in the MANN paper's training data, Santoro et al. 2016, sec. 4.1).

Images are ``x`` (M, C, S, S), float, background 0; angles in radians (M,), shifts in pixels (M, 2) as (x, y).
Resampling is bilinear; pixels that come from outside the image are background (0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_warp(x: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate image m by ``angles[m]`` about its centre and shift it by ``shifts[m]`` pixels. -> (M, C, S, S).

    Output pixel p takes the input at R p + shift (grid_sample), so content moves by -shift and an angle of +pi/2
    equals ``torch.rot90(x, 1, (2, 3))``.
    """
    size = x.shape[-1]
    cos, sin = torch.cos(angles), torch.sin(angles)  # (M,)
    offset = shifts.to(x.dtype) * (2.0 / size)  # pixels -> normalised [-1, 1] coordinates, (M, 2)
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (M, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine_params(m: int, max_degrees: float, max_shift: float, *,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles U(-max_degrees, max_degrees) in radians (M,) and shifts U(-max_shift, max_shift) pixels (M, 2)."""
    angles = (torch.rand(m, generator=generator) * 2 - 1) * math.radians(max_degrees)
    shifts = (torch.rand(m, 2, generator=generator) * 2 - 1) * max_shift
    return angles, shifts


def random_affine(x: torch.Tensor, max_degrees: float, max_shift: float, *, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (M, C, S, S) rotated and shifted by its own random draw (see :func:`random_affine_params`)."""
    return affine_warp(x, *random_affine_params(x.shape[0], max_degrees, max_shift, generator=generator))


__all__ = ["affine_warp", "random_affine_params", "random_affine"]
