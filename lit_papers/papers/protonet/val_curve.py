"""The validation curve of a run and the stopping point the paper protocol picks from it.

    python -m lit_papers.papers.protonet.val_curve RUN_DIR/csv/metrics.csv [--criterion val/5way_1shot_loss]

reads the run's CSV log (one row per validation with ``val/<task>_acc``, ``_acc_ci95``, ``_loss``) and prints a
Markdown table episodes -> val accuracy of every task (%, ± 95 % half-width), then the chosen point: the validation
with the lowest ``--criterion`` (the reference code early-stops on the validation loss; the selection rule of
``configs/protonet/vinyals_1shot_select.yaml``). Episodes = the logged ``step`` + 1 (Lightning logs the index of
the last training batch). Only validation rows are read; nothing here looks at test metrics.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_curve(path: str | Path) -> list[dict]:
    """-> [{'episodes': int, '<key>': float, ...}] one per validation, in step order."""
    points: dict[int, dict] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if not values:
                continue
            episodes = int(float(row["step"])) + 1
            points.setdefault(episodes, {"episodes": episodes}).update(values)
    return [points[k] for k in sorted(points)]


def choose(curve: list[dict], criterion: str) -> dict:
    """The validation point with the lowest ``criterion`` (the earliest on ties)."""
    scored = [p for p in curve if criterion in p]
    if not scored:
        raise SystemExit(f"no validation row logs {criterion!r}; logged: {sorted({k for p in curve for k in p})}")
    return min(scored, key=lambda p: (p[criterion], p["episodes"]))


def table(curve: list[dict]) -> str:
    tasks = sorted({k[len("val/"):-len("_acc")] for p in curve for k in p if k.endswith("_acc")})
    lines = ["| episodes | " + " | ".join(f"val {t} (%)" for t in tasks) + " | val loss |",
             "|---" * (len(tasks) + 2) + "|"]
    for p in curve:
        cells = []
        for t in tasks:
            acc, ci = p.get(f"val/{t}_acc"), p.get(f"val/{t}_acc_ci95")
            cells.append("—" if acc is None else f"{100 * acc:.2f}" + ("" if ci is None else f" ± {100 * ci:.2f}"))
        loss = p.get("val/loss")
        lines.append(f"| {p['episodes']} | " + " | ".join(cells) + f" | {'—' if loss is None else f'{loss:.4f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics_csv")
    parser.add_argument("--criterion", default="val/5way_1shot_loss")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    curve = read_curve(args.metrics_csv)
    if not curve:
        raise SystemExit(f"{args.metrics_csv}: no validation rows yet")
    print(table(curve))
    best = choose(curve, args.criterion)
    print(f"\nchosen (lowest {args.criterion}): {best['episodes']} episodes ({args.criterion} = {best[args.criterion]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
