"""The ablation arms over training seeds: each arm's test box AP per seed, the mean and its 95 % Student-t interval
over seeds (training variance, which the per-run bootstrap over test images does not contain), written as JSON with
each run's evidence (seed, commit, steps, fit time).

    python -m lit_papers.papers.multipathnet.seeds RUNS_ROOT [--arms shapes_fast_rcnn ...] [--out results/seeds/arms.json]

``RUNS_ROOT/multipathnet/<arm>/<version>`` for every version folder holding a finished test (``FINISHED``, a
``test/bbox_AP`` row in ``csv/metrics.csv`` and ``evidence.json``); a folder without them is skipped and named.
Two runs of one arm with the same seed are an error (the mean would count one seed twice).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from lit_papers.metrics.intervals import t_half_width

ARMS = ("shapes_fast_rcnn", "shapes_foveal", "shapes_skip", "shapes_integral", "shapes")
METRICS = ("test/bbox_AP", "test/bbox_AP50", "test/bbox_AP75", "test/bbox_APs", "test/bbox_APm")


def read_run(folder: Path) -> dict | None:
    """One finished, tested run: its seed, commit, steps, fit time and test metrics (in %); None if unfinished."""
    metrics_csv, evidence_json = folder / "csv" / "metrics.csv", folder / "evidence.json"
    if not (folder / "FINISHED").exists() or not metrics_csv.is_file() or not evidence_json.is_file():
        return None
    with metrics_csv.open(newline="") as f:
        tested = [row for row in csv.DictReader(f) if row.get("test/bbox_AP")]
    if not tested:
        return None
    evidence = json.loads(evidence_json.read_text())
    row = tested[-1]
    return {"run": str(folder), "seed": evidence.get("seed"), "git_commit": evidence.get("git_commit"),
            "global_step": evidence.get("global_step"), "fit_time_s": evidence.get("fit_time_s"),
            **{m: 100.0 * float(row[m]) for m in METRICS if row.get(m) not in (None, "")},
            "bbox_AP_ci95_images": 100.0 * float(row["test/bbox_AP_ci95"]) if row.get("test/bbox_AP_ci95") else None}


def summarise(root: Path, arms: tuple[str, ...] = ARMS, *, log=print) -> dict:
    out = {}
    for arm in arms:
        runs = []
        for folder in sorted((root / "multipathnet" / arm).glob("*")):
            if not folder.is_dir():
                continue
            run = read_run(folder)
            if run is None:
                log(f"[multipathnet.seeds] skipped {folder}: not a finished, tested run")
                continue
            runs.append(run)
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{root / 'multipathnet' / arm}: two runs with the same seed ({seeds}); keep one per seed")
        runs.sort(key=lambda r: r["seed"])
        entry = {"runs": runs, "seeds": [r["seed"] for r in runs]}
        for m in METRICS:
            values = [r[m] for r in runs if m in r]
            if values:
                entry[m] = {"mean": statistics.fmean(values), "t_ci95": t_half_width(values), "n_seeds": len(values)}
        out[arm] = entry
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the runs root ($LIT_PAPERS_RUNS) of the arms")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--out", type=Path, default=None, help="write the summary here (JSON)")
    args = parser.parse_args(argv)
    summary = summarise(args.root, tuple(args.arms), log=lambda m: print(m, file=sys.stderr))
    for arm, entry in summary.items():
        ap = entry.get("test/bbox_AP")
        if ap is None:
            print(f"{arm:18s} no finished run")
            continue
        per_seed = ", ".join(f"{r['test/bbox_AP']:.2f}" for r in entry["runs"])
        half = f" ± {ap['t_ci95']:.2f}" if ap["t_ci95"] is not None else ""
        print(f"{arm:18s} AP {ap['mean']:.2f}{half} over seeds {entry['seeds']} ({per_seed})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(args.out)
    return summary


if __name__ == "__main__":
    main()
