"""Small PIL line plots and image grids for the attack papers' pictures (no plotting library in the project).

:func:`line_plot`: several named (x, y) series on shared axes with ticks and a legend (BFA accuracy vs flips,
ROC curves). :func:`image_grid`: rows of 32x32 images scaled up, with a caption under each.
Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def _save(picture: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    picture.save(tmp)
    os.replace(tmp, path)
    return path


def line_plot(series: dict[str, tuple[list[float], list[float]]], path: str | os.PathLike, *, title: str,
              xlabel: str, ylabel: str, xlim: tuple[float, float] | None = None,
              ylim: tuple[float, float] | None = None, size: tuple[int, int] = (640, 440),
              diagonal: bool = False, legend: str = "upper right") -> Path:
    """Draw ``{name: (xs, ys)}`` as polylines with markers; ``diagonal``: the chance line of a ROC plot;
    ``legend``: "upper right" or "lower right" (a ROC curve's empty corner), on a white box."""
    if legend not in ("upper right", "lower right"):
        raise ValueError(f"legend must be 'upper right' or 'lower right', got {legend!r}")
    width, height = size
    left, right, top, bottom = 70, 20, 40, 60
    font = ImageFont.load_default()
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [y for _, ys in series.values() for y in ys]
    x0, x1 = xlim or (min(xs_all), max(xs_all) if max(xs_all) > min(xs_all) else min(xs_all) + 1)
    y0, y1 = ylim or (min(ys_all), max(ys_all) if max(ys_all) > min(ys_all) else min(ys_all) + 1)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for t in np.linspace(0, 1, 6):
        xv, yv = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        gx, _ = px(xv, y0)
        _, gy = px(x0, yv)
        draw.line([gx, height - bottom, gx, height - bottom + 4], fill="black")
        draw.text((gx - 12, height - bottom + 6), f"{xv:.3g}", fill="black", font=font)
        draw.line([left - 4, gy, left, gy], fill="black")
        draw.text((8, gy - 6), f"{yv:.3g}", fill="black", font=font)
    if diagonal:
        draw.line([px(x0, y0), px(x1, y1)], fill=(180, 180, 180), width=1)
    legend_top = top + 6 if legend == "upper right" else height - bottom - 8 - 14 * len(series)
    draw.rectangle([width - right - 216, legend_top - 2, width - right - 4, legend_top + 14 * len(series) + 2],
                   fill="white", outline=(200, 200, 200))
    for i, (xs, ys) in enumerate(series.values()):
        colour = COLOURS[i % len(COLOURS)]
        points = [px(x, y) for x, y in zip(xs, ys)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if len(points) <= 60:
            for p in points:
                draw.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=colour)
    for i, name in enumerate(series):  # the legend last, over the curves
        colour = COLOURS[i % len(COLOURS)]
        y = legend_top + 6 + 14 * i
        draw.line([width - right - 210, y, width - right - 190, y], fill=colour, width=3)
        draw.text((width - right - 185, y - 6), name, fill="black", font=font)
    draw.text((left, 12), title, fill="black", font=font)
    draw.text(((width - left) // 2, height - 22), xlabel, fill="black", font=font)
    draw.text((8, top - 16), ylabel, fill="black", font=font)
    return _save(img, path)


def image_grid(rows: list[list[np.ndarray]], captions: list[list[str]], path: str | os.PathLike, *,
               row_names: list[str] | None = None, scale: int = 3, title: str = "") -> Path:
    """``rows[r][c]``: an (H, W, 3) float image in [0, 1]; ``captions[r][c]`` under it; ``row_names`` at left."""
    font = ImageFont.load_default()
    h, w = rows[0][0].shape[:2]
    cell_w, cell_h = w * scale + 8, h * scale + 18
    left = 90 if row_names else 4
    top = 20 if title else 4
    img = Image.new("RGB", (left + cell_w * max(len(r) for r in rows), top + cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    for r, row in enumerate(rows):
        if row_names:
            draw.text((4, top + r * cell_h + cell_h // 2 - 8), row_names[r], fill="black", font=font)
        for c, image in enumerate(row):
            tile = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).resize(
                (w * scale, h * scale), Image.NEAREST)
            img.paste(tile, (left + c * cell_w + 4, top + r * cell_h))
            draw.text((left + c * cell_w + 4, top + r * cell_h + h * scale + 2), captions[r][c][:16], fill="black",
                      font=font)
    return _save(img, path)
