"""``results/summary.png`` of a paper (``lit-papers report --plot``): ours vs the paper, one panel per metric.

Each result row is a horizontal bar from the axis start (0, or a round number named in the panel title) to our
value (coloured by the row's kind), with its 95%
interval as a black whisker where one is known and the paper's number (or the target) as a red tick. Drawn with
PIL only (matplotlib is not a dependency). :func:`draw_summary` returns the image and the pixel box of every bar,
so tests can check that a bar's length is proportional to its value.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

KIND_COLORS = {"paper": (31, 119, 180), "scaled": (128, 177, 222), "ablation": (44, 160, 44),
               "target": (148, 103, 189), "variant": (150, 150, 150)}
PAPER_COLOR = (214, 39, 40)
DIGEST_KEY = "lit-papers-summary"  # PNG text chunk: digest of the plotted numbers (``report --check`` compares it)
WIDTH, LABEL_W, RIGHT_PAD, ROW_H, BAR_H, HEADER_H, TOP = 980, 220, 130, 22, 12, 30, 40


def _axis(rows: list[dict]) -> tuple[float, float]:
    """Axis range of a panel: from 0, unless every value is above half the largest (then from a round number
    below the smallest, said in the panel title, so that gaps of a point or two stay visible)."""
    values = [v for r in rows for v in (r["ours"], r["low"], r["high"], r["paper_value"]) if v is not None]
    lo, hi = min(0.0, *values), max(0.0, *values)
    smallest = min(values)
    if smallest > 0.5 * hi > 0:
        span = hi - smallest
        step = 10 ** math.floor(math.log10(span)) if span > 0 else 10 ** math.floor(math.log10(hi))
        lo = max(0.0, math.floor((smallest - 0.3 * span) / step) * step)
    if hi == lo:
        hi = lo + 1.0
    return lo, hi + 0.06 * (hi - lo)


def draw_summary(rows: list[dict], title: str = "") -> tuple[Image.Image, list[dict]]:
    """Rows (``report.collect`` rows of one paper) -> (image, bars). Rows without our number are left out."""
    rows = [r for r in rows if r["ours"] is not None]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    height = TOP + sum(HEADER_H + ROW_H * sum(r["metric"] == m for r in rows) for m in metrics) + 20
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((10, 8), title or "ours vs the paper (95% intervals)", fill="black", font=font)
    x = 10
    for kind, color in [*KIND_COLORS.items(), ("paper's number / target", PAPER_COLOR)]:  # legend
        draw.rectangle([x, 24, x + 10, 32], fill=color)
        draw.text((x + 14, 22), kind, fill="black", font=font)
        x += 24 + int(draw.textlength(kind, font=font))
    bars = []
    y = TOP
    x0, x1 = LABEL_W, WIDTH - RIGHT_PAD
    for metric in metrics:
        panel = [r for r in rows if r["metric"] == metric]
        lo, hi = _axis(panel)
        per_unit = (x1 - x0) / (hi - lo)

        def px(value: float, lo=lo, per_unit=per_unit) -> int:
            return round(x0 + (value - lo) * per_unit)

        better = "higher" if panel[0]["higher_is_better"] else "lower"
        draw.text((10, y + 10), f"{metric} ({better} is better; axis {lo:g} to {hi:.3g})", fill="black", font=font)
        y += HEADER_H
        origin = px(lo)
        draw.line([(origin, y - 4), (origin, y + ROW_H * len(panel))], fill=(200, 200, 200))
        for r in panel:
            top = y + (ROW_H - BAR_H) // 2
            label = f"{r['variant']}"
            while draw.textlength(label, font=font) > LABEL_W - 20 and len(label) > 4:
                label = label[:-2] + "…"
            draw.text((10, top), label, fill="black", font=font)
            end = px(r["ours"])
            box = (min(origin, end), top, max(origin, end), top + BAR_H)
            draw.rectangle(box, fill=KIND_COLORS.get(r["kind"], KIND_COLORS["variant"]))
            bars.append({"variant": r["variant"], "metric": metric, "value": r["ours"], "box": box,
                         "origin": origin, "axis_low": lo, "px_per_unit": per_unit})
            mid = top + BAR_H // 2
            if r["low"] is not None:
                a, b = px(r["low"]), px(r["high"])
                draw.line([(a, mid), (b, mid)], fill="black", width=1)
                draw.line([(a, mid - 3), (a, mid + 3)], fill="black")
                draw.line([(b, mid - 3), (b, mid + 3)], fill="black")
            right = max(end, px(r["high"]) if r["high"] is not None else end)
            if r["kind"] != "variant":
                p = px(r["paper_value"])
                draw.line([(p, top - 3), (p, top + BAR_H + 3)], fill=PAPER_COLOR, width=2)
                right = max(right, p + 1)
            text = f"{r['ours']:.4g}" + ("" if r["low"] is not None else " (no interval)")
            draw.text((right + 6, top), text, fill="black", font=font)
            y += ROW_H
    return image, bars


def digest(rows: list[dict]) -> str:
    """What the picture shows, as a short hash: it changes exactly when a plotted number, kind or label does."""
    shown = [[r["variant"], r["metric"], r["kind"], r["ours"], r["low"], r["high"], r["paper_value"],
              r["higher_is_better"]] for r in rows if r["ours"] is not None]
    return hashlib.sha256(json.dumps(shown).encode()).hexdigest()[:16]


def stored_digest(path: str | os.PathLike) -> str | None:
    """The digest a summary PNG was drawn from (None: missing file or not one of ours)."""
    try:
        with Image.open(path) as image:
            return image.text.get(DIGEST_KEY)
    except (OSError, AttributeError):
        return None


def write_summary(rows: list[dict], path: str | os.PathLike) -> Path:
    """Draw the rows of one paper and write the PNG atomically, with the digest of its numbers. -> path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{rows[0]['paper']}: ours vs the paper (bars: ours; whiskers: 95% interval; red: paper/target)"
    image, _ = draw_summary(rows, title)
    info = PngInfo()
    info.add_text(DIGEST_KEY, digest(rows))
    tmp = out.with_name(f".{out.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, out)
    return out
