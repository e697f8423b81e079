"""Stick-figure rendering of 2D skeleton motions (PIL only): frames, side-by-side panels, GIF files.

Motions are float (15, 2, T) pixel coordinates (image y down) in the joint order of
:data:`lit_papers.ops.motion2d.JOINTS`; NaN joints are not drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lit_papers.ops.motion2d import BONES

# right limbs red, left limbs blue, spine/head black (joint index sets)
_RIGHT = {2, 3, 4, 9, 10, 11}
_LEFT = {5, 6, 7, 12, 13, 14}


def _bone_color(a: int, b: int) -> tuple[int, int, int]:
    if a in _RIGHT or b in _RIGHT:
        return (215, 48, 39)
    if a in _LEFT or b in _LEFT:
        return (49, 104, 189)
    return (30, 30, 30)


def fit_to_panel(motions: list[np.ndarray], size: int, margin: float = 0.08, follow: bool = True) -> list[np.ndarray]:
    """Place several (15, 2, T) motions in ``size`` x ``size`` panels with **one shared scale** (so skeleton
    sizes stay comparable). ``follow``: the view follows the root horizontally (root x subtracted per frame),
    vertical motion (jumps) is kept; each motion is centred in its panel."""
    placed = []
    for m in motions:
        m = np.array(m, dtype=np.float64)  # copy
        if follow:
            m[:, 0] -= m[8, 0][None]  # (15, T) minus the root's x per frame
        placed.append(m)
    extent = max(float(np.nanmax(np.nanmax(m, axis=(0, 2)) - np.nanmin(m, axis=(0, 2)))) for m in placed) or 1.0
    scale = size * (1 - 2 * margin) / extent
    out = []
    for m in placed:
        lo, hi = np.nanmin(m, axis=(0, 2)), np.nanmax(m, axis=(0, 2))  # (2,)
        centre = (lo + hi) / 2
        out.append((m - centre[None, :, None]) * scale + size / 2)
    return out


def draw_frame(pose: np.ndarray, size: int = 256, title: str | None = None,
               canvas: Image.Image | None = None) -> Image.Image:
    """One (15, 2) pose in panel pixels -> RGB image ``size`` x ``size``."""
    img = canvas or Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    width = max(2, size // 80)
    for a, b in BONES:
        pa, pb = pose[a], pose[b]
        if np.all(np.isfinite(pa)) and np.all(np.isfinite(pb)):
            draw.line([tuple(pa), tuple(pb)], fill=_bone_color(a, b), width=width)
    for j, p in enumerate(pose):
        if np.all(np.isfinite(p)):
            r = width + (2 if j == 0 else 0)
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=(20, 20, 20))
    if title:
        draw.text((6, 4), title, fill=(0, 0, 0))
    return img


def side_by_side(motions: list[np.ndarray], titles: list[str], size: int = 256) -> list[Image.Image]:
    """Panels of several (15, 2, T) motions -> one RGB image per frame (T = the shortest motion)."""
    panels = fit_to_panel(motions, size)
    frames = min(m.shape[-1] for m in panels)
    images = []
    for t in range(frames):
        row = Image.new("RGB", (size * len(panels), size), (255, 255, 255))
        for i, (m, title) in enumerate(zip(panels, titles)):
            tile = draw_frame(m[:, :, t], size, title)
            row.paste(tile, (i * size, 0))
            ImageDraw.Draw(row).line([(i * size, 0), (i * size, size)], fill=(180, 180, 180))
        images.append(row)
    return images


def save_gif(images: list[Image.Image], path: str | os.PathLike, fps: float = 30.0) -> Path:
    """Write an animated GIF atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)
    return path


def filmstrip(images: list[Image.Image], count: int = 6) -> Image.Image:
    """``count`` evenly spaced frames stacked vertically (a PNG-friendly preview of an animation)."""
    picks = np.linspace(0, len(images) - 1, count).round().astype(int)
    w, h = images[0].size
    strip = Image.new("RGB", (w, h * count), (255, 255, 255))
    for i, k in enumerate(picks):
        strip.paste(images[k], (0, i * h))
    return strip
