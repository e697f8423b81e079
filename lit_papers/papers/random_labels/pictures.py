"""Line plots with PIL (matplotlib is not a dependency): the three panels of Zhang et al.'s Figure 1.

:func:`line_plot` draws named series of (x, y) points, optionally with a vertical error bar per point, on linear
axes with round ticks, a legend and axis labels; :class:`Frame` maps data to pixels (y up).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
          (227, 119, 194), (127, 127, 127)]
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 460, 70, 180, 40, 50


@dataclass
class Frame:
    """Data box (x0, x1) x (y0, y1) -> the pixel box of the plot area."""

    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float, y: float) -> tuple[float, float]:
        u = LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)
        v = HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
        return u, v


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 x 10^k) giving about ``ticks`` intervals over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _ticks(lo: float, hi: float) -> list[float]:
    step = nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.2g}"


def line_plot(series: dict[str, list[tuple[float, float]]], path: str | os.PathLike, *, title: str, xlabel: str,
              ylabel: str, errors: dict[str, list[float]] | None = None, y_range: tuple[float, float] | None = None,
              hlines: dict[str, float] | None = None, markers: bool = True) -> Path:
    """Write a PNG of the ``series`` (name -> [(x, y)]); ``errors`` (name -> half-widths) draw error bars,
    ``hlines`` (label -> y) dashed reference lines. Returns the path."""
    errors = errors or {}
    points = [(x, y) for pts in series.values() for x, y in pts]
    if not points:
        raise ValueError(f"{path}: no points to plot")
    xs = [x for x, _ in points]
    ys = [y + s * e for name, pts in series.items() for (_, y), e in
          zip(pts, errors.get(name, [0.0] * len(pts)), strict=True) for s in (-1, 1)]
    ys += list((hlines or {}).values())
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0)
    if x1 == x0:
        x1 = x0 + 1.0
    frame = Frame(x0, x1, y0, y1)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((LEFT, 12), title, fill="black", font=font)
    (ax, ay), (bx, by) = frame.px(x0, y0), frame.px(x1, y1)
    draw.rectangle([ax, by, bx, ay], outline="black")
    for t in _ticks(x0, x1):
        u, _ = frame.px(t, y0)
        draw.line([u, ay, u, ay + 4], fill="black")
        draw.text((u - 8, ay + 6), _label(t), fill="black", font=font)
    for t in _ticks(y0, y1):
        _, v = frame.px(x0, t)
        draw.line([ax - 4, v, ax, v], fill="black")
        draw.line([ax, v, bx, v], fill=(235, 235, 235))
        draw.text((ax - 40, v - 6), _label(t), fill="black", font=font)
    draw.text(((ax + bx) / 2 - 40, HEIGHT - 22), xlabel, fill="black", font=font)
    draw.text((6, TOP - 16), ylabel, fill="black", font=font)
    for label, y in (hlines or {}).items():
        _, v = frame.px(x0, y)
        for u in range(int(ax), int(bx), 10):
            draw.line([u, v, min(u + 5, bx), v], fill=(120, 120, 120))
        draw.text((bx - 100, v - 14), label, fill=(90, 90, 90), font=font)
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        pixels = [frame.px(x, y) for x, y in pts]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for (x, y), e in zip(pts, errors.get(name, [0.0] * len(pts)), strict=True):
            if e:
                (u, lo), (_, hi) = frame.px(x, y - e), frame.px(x, y + e)
                draw.line([u, lo, u, hi], fill=color, width=1)
                draw.line([u - 3, lo, u + 3, lo], fill=color)
                draw.line([u - 3, hi, u + 3, hi], fill=color)
        if markers:
            for u, v in pixels:
                draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=color)
        ly = TOP + 16 * k
        draw.rectangle([bx + 12, ly + 3, bx + 24, ly + 9], fill=color)
        draw.text((bx + 30, ly), name, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    image.save(tmp)
    os.replace(tmp, path)
    return path
