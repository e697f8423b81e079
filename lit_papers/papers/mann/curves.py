"""Accuracy-by-instance curves (the shape of Santoro et al. 2016, Table 1) as a PNG, drawn with PIL only.

    python -m lit_papers.papers.mann.curves OUT.png VARIANT[=LABEL] ...

reads this paper's ``results/<VARIANT>.json`` (kept ``card_result.json`` files, which carry the card's paper
value next to ours) and draws each variant's test accuracy at the 1st, 2nd, 3rd, 4th, 5th and 10th instance (solid;
an instance a result did not log, e.g. the 4th in runs made before it was logged, is left out, not invented) next to
the paper's numbers for the same rows (dashed, one curve for the MANN and one for the LSTM; a paper value missing from
a result file is read from ``card.yaml``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

INSTANCES = (1, 2, 3, 4, 5, 10)  # Table 1's columns
HERE = Path(__file__).resolve().parent
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


@dataclass(frozen=True)
class Frame:
    """Plot area: x = instance number 1..10, y = accuracy 0..100 %, mapped to image pixels (y down)."""

    width: int = 720
    height: int = 420
    left: int = 60
    right: int = 250  # room for the legend
    top: int = 20
    bottom: int = 50

    def pixel(self, instance: float, accuracy: float) -> tuple[int, int]:
        span_x = self.width - self.left - self.right
        span_y = self.height - self.top - self.bottom
        return (round(self.left + (instance - 1) / 9 * span_x), round(self.height - self.bottom - accuracy / 100 * span_y))


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], color, width: int, dash: int = 8):
    length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    for start in range(0, length, 2 * dash):
        end = min(start + dash, length)
        p = (a[0] + (b[0] - a[0]) * start / length, a[1] + (b[1] - a[1]) * start / length)
        q = (a[0] + (b[0] - a[0]) * end / length, a[1] + (b[1] - a[1]) * end / length)
        draw.line([p, q], fill=color, width=width)


def draw_curves(series: list[tuple[str, dict[int, float], bool]], path: str | os.PathLike, *,
                title: str = "accuracy by instance, 5-class episodes", frame: Frame = Frame()) -> Path:
    """Draw ``series`` = [(label, {instance: accuracy %}, dashed)] and write the PNG atomically. -> path."""
    image = Image.new("RGB", (frame.width, frame.height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, y0 = frame.pixel(1, 0)
    x1, y1 = frame.pixel(10, 100)
    for acc in range(0, 101, 20):  # horizontal grid + y labels
        _, y = frame.pixel(1, acc)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 8, y), f"{acc}%", fill="black", font=font, anchor="rm")
    for inst in INSTANCES:
        x, _ = frame.pixel(inst, 0)
        draw.line([(x, y0), (x, y0 + 4)], fill="black")
        draw.text((x, y0 + 8), str(inst), fill="black", font=font, anchor="mt")
    draw.text(((x0 + x1) // 2, frame.height - 14), "instance (presentation of a class)", fill="black", font=font,
              anchor="mm")
    draw.text(((x0 + x1) // 2, 8), title, fill="black", font=font, anchor="mm")
    draw.rectangle([x0, y1, x1, y0], outline="black")
    for i, (label, points, dashed) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        xy = [frame.pixel(k, points[k]) for k in sorted(points)]
        for a, b in zip(xy, xy[1:]):
            _dashed(draw, a, b, color, 2) if dashed else draw.line([a, b], fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        ly = frame.top + 10 + 18 * i
        lx = x1 + 15
        _dashed(draw, (lx, ly), (lx + 30, ly), color, 2) if dashed else draw.line([(lx, ly), (lx + 30, ly)], fill=color,
                                                                                  width=2)
        draw.text((lx + 36, ly), label, fill="black", font=font, anchor="lm")
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out


def card_values(card: Path) -> dict[tuple[str, str], float]:
    """(variant, metric) -> the paper's value (%) from a card file; {} without one."""
    if not card.is_file():
        return {}
    import yaml

    return {(r["variant"], r["metric"]): float(r["value"]) for r in (yaml.safe_load(card.read_text()) or {}).get("results", [])}


def series_from_results(variants: list[tuple[str, str]], results_dir: Path = HERE / "results",
                        card: Path = HERE / "card.yaml") -> list[tuple[str, dict[int, float], bool]]:
    """Ours (solid) for each (variant, label) from ``results/<variant>.json``, then each distinct paper curve
    (dashed) that those rows are compared with."""
    ours, paper = [], {}
    values = card_values(card)
    for variant, label in variants:
        path = results_dir / f"{variant}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no kept result for variant {variant!r} (lit-papers report --add RUN/card_result.json)")
        rows = {r["metric"]: r for r in json.loads(path.read_text())}
        points, reference = {}, {}
        for inst in INSTANCES:
            row = rows.get(f"test/acc_inst{inst}")
            if row is not None:
                points[inst] = float(row["ours"])
                reference[inst] = float(row["paper_value"])
            elif (variant, f"test/acc_inst{inst}") in values:
                reference[inst] = values[(variant, f"test/acc_inst{inst}")]
        if 1 not in points:
            raise SystemExit(f"{path}: no test/acc_inst1 row")
        ours.append((label, points, False))
        source = rows["test/acc_inst1"]["source"]  # "Table 1" or "Table 1, LSTM"
        paper.setdefault(f"{'LSTM' if 'LSTM' in source else 'MANN'}, paper (Table 1)", reference)
    return ours + [(label, points, True) for label, points in paper.items()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    variants = [(a.split("=", 1)[0], a.split("=", 1)[-1]) for a in args[1:]]
    print(f"wrote {draw_curves(series_from_results(variants), args[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
