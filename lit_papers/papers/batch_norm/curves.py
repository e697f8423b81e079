"""Validation accuracy against training steps, one line per arm (mean over seeds), as a PNG drawn with PIL only.

The shape of Ioffe & Szegedy 2015, Figure 2(a)/3: how fast each arm climbs to the no-BN network's best. Drawn by
``python -m lit_papers.papers.batch_norm.steps RUN_ROOT --plot out.png`` (:mod:`.steps` finds the runs).
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
          (140, 86, 75), (227, 119, 194)]
GREY = (120, 120, 120)


def mean_curves(runs) -> dict[str, list[tuple[int, float]]]:
    """arm -> [(step, mean val/acc over the arm's seeds)] at the steps every seed of the arm logged (a run still
    going or stopped early shortens its arm's line rather than making the mean jump where a seed is missing)."""
    by_arm: dict[str, list[dict[int, float]]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(dict(run.curve))
    means = {}
    for arm, curves in by_arm.items():
        common = set(curves[0]).intersection(*curves[1:])
        means[arm] = [(step, statistics.fmean(c[step] for c in curves)) for step in sorted(common)]
    return means


@dataclass(frozen=True)
class Frame:
    """Plot area: x = steps 0..x_max, y = accuracy 0..1 (shown in %), mapped to image pixels (y down)."""

    x_max: float
    width: int = 760
    height: int = 440
    left: int = 60
    right: int = 190  # room for the legend
    top: int = 24
    bottom: int = 50

    def pixel(self, step: float, accuracy: float) -> tuple[int, int]:
        span_x = self.width - self.left - self.right
        span_y = self.height - self.top - self.bottom
        return (round(self.left + step / self.x_max * span_x),
                round(self.height - self.bottom - accuracy * span_y))


def _nice_step(x_max: float, ticks: int = 6) -> float:
    raw = x_max / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], color, dash: int = 6) -> None:
    length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    for start in range(0, length, 2 * dash):
        end = min(start + dash, length)
        draw.line([(a[0] + (b[0] - a[0]) * start / length, a[1] + (b[1] - a[1]) * start / length),
                   (a[0] + (b[0] - a[0]) * end / length, a[1] + (b[1] - a[1]) * end / length)], fill=color, width=1)


def draw_curves(series: dict[str, list[tuple[int, float]]], path: str | os.PathLike, *,
                hline: tuple[float, str] | None = None, title: str = "CIFAR-10 validation accuracy (mean over seeds)",
                frame: Frame | None = None) -> Path:
    """Draw ``series`` = {label: [(step, accuracy 0..1)]} (colour i = ``COLORS[i]`` in dict order), an optional
    dashed horizontal line ``hline = (accuracy, label)``, and write the PNG atomically. -> path."""
    if not any(series.values()):
        raise ValueError("no curve has any point to draw")
    if frame is None:
        frame = Frame(x_max=max(step for points in series.values() for step, _ in points))
    image = Image.new("RGB", (frame.width, frame.height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, y0 = frame.pixel(0, 0)
    x1, y1 = frame.pixel(frame.x_max, 1)
    for tenth in range(0, 11, 2):  # horizontal grid + y labels
        _, y = frame.pixel(0, tenth / 10)
        draw.line([(x0, y), (x1, y)], fill=(228, 228, 228))
        draw.text((x0 - 6, y), f"{tenth * 10}%", fill="black", font=font, anchor="rm")
    tick = _nice_step(frame.x_max)
    for k in range(int(frame.x_max // tick) + 1):
        x, _ = frame.pixel(k * tick, 0)
        draw.line([(x, y0), (x, y0 + 4)], fill="black")
        draw.text((x, y0 + 7), f"{k * tick:g}", fill="black", font=font, anchor="mt")
    draw.text(((x0 + x1) // 2, frame.height - 14), "training steps", fill="black", font=font, anchor="mm")
    draw.text((12, (y0 + y1) // 2), "val acc", fill="black", font=font, anchor="lm")
    draw.text(((x0 + x1) // 2, 10), title, fill="black", font=font, anchor="mm")
    draw.rectangle([x0, y1, x1, y0], outline="black")
    legend_x, legend_y = x1 + 14, frame.top + 10
    if hline is not None:
        _, y = frame.pixel(0, hline[0])
        _dashed(draw, (x0, y), (x1, y), GREY)
        _dashed(draw, (legend_x, legend_y), (legend_x + 28, legend_y), GREY)
        draw.text((legend_x + 34, legend_y), hline[1], fill="black", font=font, anchor="lm")
        legend_y += 18
    for i, (label, points) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        xy = [frame.pixel(step, acc) for step, acc in sorted(points)]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2, joint="curve")
        for x, y in xy[:1] if len(xy) == 1 else []:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.line([(legend_x, legend_y), (legend_x + 28, legend_y)], fill=color, width=3)
        draw.text((legend_x + 34, legend_y), label, fill="black", font=font, anchor="lm")
        legend_y += 18
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out
