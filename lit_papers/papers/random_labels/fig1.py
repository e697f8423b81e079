"""Figure 1 of Zhang et al. 2017 from our runs: the card rows (``results/fig1.json``) and the three panels.

    python -m lit_papers.papers.random_labels.fig1 RUN_ROOT [--out DIR] [--prefix mlp_subset]

``RUN_ROOT`` is the runs root (``$LIT_PAPERS_RUNS``; runs are looked for under ``RUN_ROOT/random_labels/``) or that
``random_labels`` folder itself. The series is ``<prefix>_<name>`` for the names of :data:`SERIES` (the configs
``configs/random_labels/<prefix>_<name>.yaml``); every folder ``<variant>/<version>/`` holding ``csv/metrics.csv`` is
one run, its seed ``seed_everything`` of its ``config.yaml``. Per variant, over its seeds:

* ``fit/train_acc`` and ``test/acc``: the mean over seeds, with ``n`` = the images each is measured on (the report
  draws a Wilson interval over them; the seeds' spread is in ``seed_values``);
* ``fit/steps_to_fit``: steps to 100% training accuracy, mean ± 95% t-interval over seeds (only when every seed fit);
* ``fit/steps_ratio_vs_true`` (on the random-labels variant): steps(random labels) / steps(true labels) paired by
  seed, mean ± 95% t-interval over the seeds (Figure 1b's "small constant factor");
* ``fig1c/error_growth_spearman`` (on the random-labels variant): the Spearman rank correlation between the label
  corruption p and the test error (Figure 1c: the error grows steadily with p); one per seed that ran every p, mean
  ± 95% t-interval over those seeds (with fewer than two such seeds: of the mean errors, no interval).

Values are in the card's units (its ``scale``). All runs must come from one commit, or from clean commits that agree
on every file that decides the numbers (:data:`NUMBER_PATHS` and the series' configs), else an error naming them.
Pictures: ``fig1a_loss.png`` (training loss vs step, seed 0: true labels and every corruption),
``fig1b_time_to_fit.png`` (steps to fit vs p), ``fig1c_test_error.png`` (test error vs p, chance at 90%).
No Lightning here: reading CSV/JSON files and arithmetic only (tests in ``tests/papers/test_random_labels.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lit_papers.metrics.intervals import t_half_width
from lit_papers.papers.random_labels.pictures import line_plot

PAPER_DIR = Path(__file__).resolve().parent
# name -> (label corruption p or None, label in the pictures)
SERIES = {
    "true": (0.0, "true labels"), "p20": (0.2, "p = 0.2"), "p40": (0.4, "p = 0.4"), "p60": (0.6, "p = 0.6"),
    "p80": (0.8, "p = 0.8"), "random_labels": (1.0, "random labels"), "shuffled_pixels": (None, "shuffled pixels"),
    "random_pixels": (None, "random pixels"), "gaussian": (None, "gaussian"),
}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties) of two equally long lists."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    norm = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / norm if norm else float("nan")


def _number(row: dict, key: str, where: str) -> float | None:
    raw = (row.get(key) or "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        raise SystemExit(f"{where}: {key}={raw!r} is not a number") from None


def read_run(folder: Path) -> dict:
    """One run folder -> seed, loss curve, time to fit, final accuracies and counts, evidence."""
    metrics = folder / "csv" / "metrics.csv"
    seed = None
    if (folder / "config.yaml").is_file():
        seed = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("seed_everything")
    if seed is None:
        digits = "".join(c for c in folder.name if c.isdigit())
        seed = int(digits) if digits else folder.name
    out: dict = {"folder": str(folder), "seed": seed, "loss": [], "values": {}}
    with open(metrics, newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{metrics}:{line}"
            loss, step = _number(row, "train/loss", where), _number(row, "step", where)
            if loss is not None and step is not None:
                out["loss"].append((int(step) + 1, loss))  # the k-th optimizer step is logged as step k - 1
            for key in ("fit/steps", "test/acc", "test/acc_n", "fit/train_acc", "fit/train_acc_n"):
                v = _number(row, key, where)
                if v is not None and key not in out["values"]:
                    out["values"][key] = v
    card, alone = folder / "card_result.json", folder / "evidence.json"
    rows = json.loads(card.read_text()) if card.is_file() else []
    out["evidence"] = (rows[0].get("evidence") if rows else None) or (
        json.loads(alone.read_text()) if alone.is_file() else {})  # a variant without card rows: evidence.json
    return out


def collect_runs(root: Path, prefix: str, accept_unverified: bool = False) -> dict[str, list[dict]]:
    base = root / "random_labels" if (root / "random_labels").is_dir() else root
    runs: dict[str, list[dict]] = {}
    for name in SERIES:
        folder = base / f"{prefix}_{name}"
        found = [read_run(p.parent.parent) for p in sorted(folder.glob("*/csv/metrics.csv"))]
        if found:
            runs[name] = sorted(found, key=lambda r: str(r["seed"]))
    if not runs:
        raise SystemExit(f"{base}: no runs of {prefix}_<{'|'.join(SERIES)}>/<version>/csv/metrics.csv found")
    commits = sorted({str(r["evidence"].get("git_commit")) for rs in runs.values() for r in rs})
    paths = (*NUMBER_PATHS, f"configs/random_labels/{prefix}_*.yaml")
    agree = len(commits) == 1 or same_numbers(commits, paths)
    for rs in runs.values():
        for r in rs:
            r["same_numbers"] = agree  # one commit, or clean commits that agree on every file deciding the numbers
    if not agree and not accept_unverified:
        listing = "; ".join(f"{r['folder']}: {r['evidence'].get('git_commit')}" for rs in runs.values() for r in rs)
        raise SystemExit(f"runs of different commits ({listing}) whose code or configs differ in "
                         f"{', '.join(paths)} (or are not commits of this repository, or a dirty tree): re-run them "
                         "from one clean commit (--accept-unverified keeps them, flagged as a dirty tree)")
    return runs


# what decides a run's numbers (with the series' configs): runs of commits that agree on them are one experiment
NUMBER_PATHS = ("lit_papers/data/cifar.py", "lit_papers/data/base.py", "lit_papers/data/samplers.py",
                "lit_papers/papers/random_labels/model.py", "lit_papers/papers/random_labels/module.py")


def same_numbers(commits: list[str], paths: tuple[str, ...] = NUMBER_PATHS) -> bool:
    """Whether clean commits ``commits`` agree on every file of ``paths`` (git pathspecs; ``git diff``); a dirty
    or unknown commit never does."""
    if any(c.endswith("-dirty") or c in ("None", "") for c in commits):
        return False
    for other in commits[1:]:
        done = subprocess.run(["git", "-C", str(PAPER_DIR.parents[2]), "diff", "--quiet", commits[0], other, "--",
                               *paths],
                              capture_output=True)
        if done.returncode != 0:
            return False
    return True


def _card_scales(card_path: Path) -> dict[tuple[str, str], float]:
    if not card_path.is_file():
        return {}
    card = yaml.safe_load(card_path.read_text()) or {}
    return {(r["variant"], r["metric"]): float(r.get("scale", 1.0)) for r in card.get("results", [])}


def _evidence(variant: str, runs: list[dict]) -> dict:
    known = [r["evidence"] for r in runs if r["evidence"]]
    first = known[0] if known else {}
    commits = {r["folder"]: r["evidence"].get("git_commit") for r in runs}
    clean = sorted({c for c in commits.values() if c and not c.endswith("-dirty")})
    base = clean[0] if clean else next((c for c in commits.values() if c), None)
    # unknown, dirty, or mixed commits not verified to agree on the numbers: flag it; mixed clean commits that
    # agree (collect_runs: same_numbers) are one experiment, listed in git_commits
    verified_mix = all(c and not c.endswith("-dirty") for c in commits.values()) and all(
        r.get("same_numbers") for r in runs)
    if base and ((len(set(commits.values())) > 1 and not verified_mix) or base.endswith("-dirty")):
        base = base.removesuffix("-dirty") + "-dirty"
    return {
        "config": [f"configs/random_labels/{variant}.yaml"],
        "seed": ", ".join(sorted({str(r["seed"]) for r in runs})), "runs": len(runs),
        "global_step": ", ".join(str(int(r["values"]["fit/steps"])) if r["values"].get("fit/steps") is not None
                                 else "?" for r in runs),  # each run's steps (to the fit)
        "git_commit": base, "git_commits": commits, "hardware": first.get("hardware"), "versions": first.get("versions"),
        "wall_time_s": round(sum(float(r["evidence"].get("wall_time_s") or 0.0) for r in runs), 1),
        "train_items": first.get("train_items"), "train_items_unit": first.get("train_items_unit"),
        "run_dir": "; ".join(r["folder"] for r in runs), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def rows_from_runs(runs: dict[str, list[dict]], prefix: str, scales: dict) -> list[dict]:
    out = []

    def add(name: str, metric: str, raw: float, *, ci95: float | None = None, n: int | None = None,
            n_unit: str | None = None, used: list[dict], seed_values: list | None = None, note: str | None = None):
        variant = f"{prefix}_{name}"
        scale = scales.get((variant, metric), 1.0)
        row = {"paper_key": "random_labels", "variant": variant, "metric": metric, "ours": round(raw * scale, 6),
               "ci95": None if ci95 is None else round(ci95 * scale, 6), "n": n, "n_unit": n_unit,
               "seeds": [r["seed"] for r in used], "seed_values": seed_values, "evidence": _evidence(variant, used)}
        if note:
            row["note"] = note
        out.append(row)

    steps: dict[str, dict] = {}
    for name, rs in runs.items():
        for metric in ("fit/train_acc", "test/acc"):
            values = [r["values"].get(metric) for r in rs]
            if any(v is None for v in values):
                continue
            counts = {int(r["values"].get(f"{metric}_n") or 0) for r in rs}
            add(name, metric, statistics.fmean(values), n=max(counts) or None, used=rs, seed_values=values,
                note=f"mean over {len(rs)} seed(s); interval: Wilson over the images")
        fit = {r["seed"]: r["values"].get("fit/steps") for r in rs}
        if all(v is not None for v in fit.values()):
            steps[name] = fit
            values = list(fit.values())
            add(name, "fit/steps_to_fit", statistics.fmean(values), ci95=t_half_width(values), n=len(values),
                n_unit="seeds", used=rs, seed_values=values)
    if "random_labels" in steps and "true" in steps:
        paired = sorted(set(steps["random_labels"]) & set(steps["true"]), key=str)
        ratios = [steps["random_labels"][s] / steps["true"][s] for s in paired]
        if ratios:
            used = [r for r in runs["random_labels"] if r["seed"] in paired]
            add("random_labels", "fit/steps_ratio_vs_true", statistics.fmean(ratios), ci95=t_half_width(ratios),
                n=len(ratios), n_unit="seeds", used=used, seed_values=ratios,
                note="steps to 100% training accuracy, random labels / true labels, paired by seed")
    growth = [(SERIES[name][0], 1.0 - statistics.fmean(r["values"]["test/acc"] for r in rs))
              for name, rs in runs.items() if SERIES[name][0] is not None
              and all(r["values"].get("test/acc") is not None for r in rs)]
    if len(growth) >= 3 and "random_labels" in runs:
        ps, errors = zip(*sorted(growth), strict=True)
        used = [r for name, rs in runs.items() if SERIES[name][0] is not None for r in rs]
        levels = ", ".join(f"{p:g}" for p in ps)
        # one Spearman per seed that ran every level of p (its own errors), mean +- t-interval over those seeds
        by_seed: dict = {}
        for name, rs in runs.items():
            if SERIES[name][0] is None:
                continue
            for r in rs:
                if r["values"].get("test/acc") is not None:
                    by_seed.setdefault(r["seed"], {})[SERIES[name][0]] = 1.0 - r["values"]["test/acc"]
        complete = sorted((seed for seed, errs in by_seed.items() if set(errs) == set(ps)), key=str)
        if len(complete) >= 2:
            rhos = [spearman(list(ps), [by_seed[seed][p] for p in ps]) for seed in complete]
            add("random_labels", "fig1c/error_growth_spearman", statistics.fmean(rhos), ci95=t_half_width(rhos),
                n=len(rhos), n_unit="seeds", used=used, seed_values=[round(v, 4) for v in rhos],
                note=f"Spearman rank correlation of p in {levels} and the test error, one per seed "
                     f"({', '.join(map(str, complete))}); mean +- 95% t-interval over the seeds")
        else:
            add("random_labels", "fig1c/error_growth_spearman", spearman(list(ps), list(errors)), used=used,
                seed_values=[round(e, 4) for e in errors],
                note=f"Spearman rank correlation of p in {levels} and the mean test error (one seed: no interval)")
    return out


def draw(runs: dict[str, list[dict]], out: Path) -> list[Path]:
    paths = []
    curves = {}
    for name, rs in runs.items():
        if (SERIES[name][0] in (0.0, 1.0) or SERIES[name][0] is None) and rs[0]["loss"]:
            curves[SERIES[name][1]] = rs[0]["loss"]
    if curves:
        paths.append(line_plot(curves, out / "fig1a_loss.png", markers=False, xlabel="optimizer step",
                               ylabel="training loss", title="Fig. 1a: learning curves (MLP 1x512, 2,000 images, "
                               "seed 0, training stops at 100% training accuracy)"))
    by_p = [(SERIES[n][0], rs) for n, rs in runs.items() if SERIES[n][0] is not None]
    by_p.sort(key=lambda item: item[0])
    fitted = [(p, [r["values"]["fit/steps"] for r in rs]) for p, rs in by_p
              if all(r["values"].get("fit/steps") is not None for r in rs)]
    if fitted:
        paths.append(line_plot(
            {"steps to 100% train acc": [(p, statistics.fmean(v)) for p, v in fitted]}, out / "fig1b_time_to_fit.png",
            errors={"steps to 100% train acc": [t_half_width(v) or 0.0 for _, v in fitted]},
            xlabel="label corruption p", ylabel="steps to fit", y_range=(0.0, 1.1 * max(max(v) for _, v in fitted)),
            title="Fig. 1b: time to fit vs label corruption (mean, 95% t-interval over seeds)"))
    tested = [(p, [1.0 - r["values"]["test/acc"] for r in rs]) for p, rs in by_p
              if all(r["values"].get("test/acc") is not None for r in rs)]
    if tested:
        paths.append(line_plot(
            {"test error": [(p, 100 * statistics.fmean(v)) for p, v in tested]}, out / "fig1c_test_error.png",
            errors={"test error": [100 * (t_half_width(v) or 0.0) for _, v in tested]},
            hlines={"chance (90%)": 90.0}, y_range=(0.0, 100.0), xlabel="label corruption p", ylabel="test error (%)",
            title="Fig. 1c: test error (= generalisation gap: training error is 0) vs label corruption"))
    return paths


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m lit_papers.papers.random_labels.fig1", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="runs root ($LIT_PAPERS_RUNS) or its random_labels folder")
    parser.add_argument("--out", type=Path, default=PAPER_DIR / "results", help="where fig1.json and the PNGs go")
    parser.add_argument("--prefix", default="mlp_subset", help="the series' config prefix")
    parser.add_argument("--card", type=Path, default=PAPER_DIR / "card.yaml", help="card whose scales apply")
    parser.add_argument("--accept-unverified", action="store_true",
                        help="keep runs of other commits, a dirty tree or no recorded commit (flagged as dirty)")
    args = parser.parse_args(argv)
    runs = collect_runs(args.root, args.prefix, args.accept_unverified)
    rows = rows_from_runs(runs, args.prefix, _card_scales(args.card))
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "fig1.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(target)
    paths = draw(runs, args.out)
    print(f"wrote {target} ({len(rows)} rows) and {', '.join(p.name for p in paths)}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
