"""Steps to reach the no-BN network's best accuracy, as a ratio (Ioffe & Szegedy 2015, sec. 4.2.2, Figure 3).

    python -m lit_papers.papers.batch_norm.steps RUN_ROOT [--plot out.png] [--json] [--reference no_bn] [--suffix _cpu]

``RUN_ROOT`` is the runs root (``$LIT_PAPERS_RUNS``; the arms are looked for under ``RUN_ROOT/batch_norm/<arm>/``)
or that ``batch_norm`` folder itself. Every folder ``<arm>/<version>/`` holding ``csv/metrics.csv`` is one run; its
seed is ``seed_everything`` of the run's ``config.yaml`` (the folder name when that is missing). For each arm and
seed: the first step at which ``val/acc`` reaches the reference (no-BN) run's best ``val/acc`` **of the same seed**
(``never`` if it does not), and the ratio ``reference_steps / arm_steps`` (the paper's "14x fewer steps"). Over
seeds: mean ± sample std (n = seeds that reached it, out of the seeds paired with a reference run).

Steps are optimizer steps done: Lightning writes the validation after the k-th step with ``step = k - 1``, so a
row's step + 1 is reported. A resumed run's log may repeat steps (an attempt that crashed after its last
checkpoint logged them once, the resumed attempt again): a row whose step is not after the previous kept row's
starts a new attempt, and the earlier attempt's rows from that step on are dropped (the later attempt wins).

No Lightning here: reading the CSV and the arithmetic only (tests in ``tests/papers/test_batch_norm_steps.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lit_papers.metrics.intervals import t_half_width

ARMS = ("no_bn", "bn", "bn_x5", "bn_x30", "bn_x5_sigmoid", "no_bn_sigmoid")  # configs/batch_norm/<arm>.yaml
REFERENCE = "no_bn"
METRIC = "val/acc"


class CurveError(ValueError):
    """A metrics file that cannot give a validation curve (names the file and the fix)."""


def read_curve(path: str | Path, metric: str = METRIC) -> list[tuple[int, float]]:
    """[(optimizer steps done, metric value)] from a Lightning CSV log, in step order, one value per step.

    Rows without the metric (training rows: empty cells) are skipped; an unparsable or non-finite value is an
    error naming the file and line; steps repeated by a resumed run keep the later attempt's value."""
    path = Path(path)
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise CurveError(f"{path}: cannot read ({exc})") from None
    with fh:
        reader = csv.DictReader(fh)
        names = reader.fieldnames or []
        for needed in ("step", metric):
            if needed not in names:
                raise CurveError(f"{path}: no column {needed!r} (columns: {', '.join(names) or 'none'}); is this a "
                                 f"lit-papers run's csv/metrics.csv of a module that logs {metric}?")
        kept: list[tuple[int, float]] = []
        for line, row in enumerate(reader, start=2):
            raw, raw_step = (row.get(metric) or "").strip(), (row.get("step") or "").strip()
            if not raw:
                continue
            try:
                value, step = float(raw), int(float(raw_step))
            except ValueError:
                raise CurveError(f"{path}:{line}: {metric}={raw!r} step={raw_step!r} is not a number") from None
            if not math.isfinite(value):
                raise CurveError(f"{path}:{line}: {metric} is {raw} (a diverged run; it has no curve to compare)")
            done = step + 1
            if kept and done <= kept[-1][0]:  # a resumed attempt replays from here: it supersedes the earlier rows
                kept = [(s, v) for s, v in kept if s < done]
            kept.append((done, value))
    return kept


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first step whose value is >= ``target``; None if none is."""
    return next((step for step, value in curve if value >= target), None)


@dataclass
class Run:
    arm: str
    seed: str
    folder: Path
    curve: list[tuple[int, float]]


@dataclass
class SeedResult:
    seed: str
    target: float  # the reference run's best val/acc for this seed
    steps: int | None  # None: never reached
    reference_steps: int

    @property
    def ratio(self) -> float | None:
        return None if self.steps is None else self.reference_steps / self.steps


@dataclass
class ArmResult:
    arm: str
    seeds: list[SeedResult] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)  # seeds of this arm without a reference run

    @staticmethod
    def _spread(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)

    @property
    def ratio(self) -> tuple[float | None, float | None]:
        """(mean, sample std) of the ratio over the seeds that reached the target; std None for fewer than 2."""
        return self._spread([s.ratio for s in self.seeds if s.ratio is not None])

    @property
    def steps(self) -> tuple[float | None, float | None]:
        return self._spread([float(s.steps) for s in self.seeds if s.steps is not None])

    @property
    def n(self) -> int:
        return sum(s.steps is not None for s in self.seeds)

    def as_dict(self) -> dict:
        (ratio, ratio_std), (steps, steps_std) = self.ratio, self.steps
        return {"arm": self.arm, "ratio_mean": ratio, "ratio_std": ratio_std, "steps_mean": steps,
                "steps_std": steps_std, "n": self.n, "seeds_paired": len(self.seeds), "unpaired_seeds": self.unpaired,
                "per_seed": [{"seed": s.seed, "target": s.target, "steps": s.steps, "reference_steps": s.reference_steps,
                              "ratio": s.ratio} for s in self.seeds]}


def compare(runs: list[Run], reference: str = REFERENCE) -> list[ArmResult]:
    """Per arm (reference first, then the order of ``runs``), per seed: steps to reach the reference run's best."""
    by_key: dict[tuple[str, str], Run] = {}
    for run in runs:
        other = by_key.setdefault((run.arm, run.seed), run)
        if other is not run:
            raise CurveError(f"two runs of arm {run.arm!r} with seed {run.seed}: {other.folder} and {run.folder}; "
                             f"move one away (each seed once per arm)")
    targets: dict[str, tuple[float, int]] = {}
    for (arm, seed), run in by_key.items():
        if arm == reference:
            if not run.curve:
                raise CurveError(f"{run.folder}: the reference run has no {METRIC} rows")
            best = max(value for _, value in run.curve)
            targets[seed] = (best, first_step_reaching(run.curve, best))
    if not targets:
        raise CurveError(f"no run of the reference arm {reference!r}: nothing to measure steps against")
    arms = [reference] + [a for a in dict.fromkeys(r.arm for r in runs) if a != reference]
    results = []
    for arm in arms:
        result = ArmResult(arm)
        for seed in sorted({s for a, s in by_key if a == arm}, key=_seed_order):
            if seed not in targets:
                result.unpaired.append(seed)
                continue
            target, reference_steps = targets[seed]
            result.seeds.append(SeedResult(seed, target, first_step_reaching(by_key[(arm, seed)].curve, target),
                                           reference_steps))
        results.append(result)
    return results


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _run_seed(folder: Path) -> str:
    config = folder / "config.yaml"
    if config.is_file():
        import yaml

        seed = (yaml.safe_load(config.read_text()) or {}).get("seed_everything")
        if seed is not None and seed is not True:
            return str(seed)
    return folder.name


def find_runs(root: str | Path, arms: tuple[str, ...] = ARMS, *, log=print, finished_only: bool = False) -> list[Run]:
    """Every ``<arm>/<version>/csv/metrics.csv`` under ``root/batch_norm`` (or ``root``); folders of an arm without
    that file (a run that has not validated yet, a checkpoint-only folder) are skipped and counted, and so are
    runs still going (no ``FINISHED`` marker) when ``finished_only``."""
    root = Path(root)
    base = root / "batch_norm" if (root / "batch_norm").is_dir() else root
    runs, skipped = [], []
    for arm in arms:
        arm_dir = base / arm
        if not arm_dir.is_dir():
            continue
        for folder in sorted(p for p in arm_dir.iterdir() if p.is_dir()):
            metrics = folder / "csv" / "metrics.csv"
            if not metrics.is_file() or finished_only and not (folder / "FINISHED").is_file():
                skipped.append(folder)
                continue
            runs.append(Run(arm, _run_seed(folder), folder, read_curve(metrics)))
    if skipped:
        what = "without csv/metrics.csv" + (" or not finished" if finished_only else "")
        log(f"skipped {len(skipped)} folder(s) {what}: {', '.join(map(str, skipped))}")
    if not runs:
        raise CurveError(f"{base}: no run folders <arm>/<version>/csv/metrics.csv for arms {', '.join(arms)} "
                         f"(run the configs/batch_norm arms first; README 'Running the experiment')")
    return runs


def _num(mean: float | None, std: float | None, fmt: str) -> str:
    if mean is None:
        return "never"
    return f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if std is not None else "")


def table(results: list[ArmResult]) -> str:
    """A Markdown table: one row per arm, then the per-seed steps."""
    lines = ["| arm | steps to the no-BN best (mean ± std) | ratio no-BN/arm (mean ± std) | n | per seed (steps) |",
             "|---|---|---|---|---|"]
    for r in results:
        per_seed = ", ".join(f"{s.seed}: {s.steps if s.steps is not None else 'never'}" for s in r.seeds)
        if r.unpaired:
            per_seed += f"; no reference run for seed(s) {', '.join(r.unpaired)}"
        lines.append(f"| {r.arm} | {_num(*r.steps, '.0f')} | {_num(*r.ratio, '.2f')} | {r.n} of {len(r.seeds)} | "
                     f"{per_seed} |")
    return "\n".join(lines)


SPEEDUP = "speedup_vs_no_bn"  # the card's metric: reference steps / arm steps (the paper's "14x fewer steps")


def _run_record(folder: Path, metric: str | None) -> dict:
    """The row of ``metric`` (None: the first row, for its evidence) in a finished run's ``card_result.json``
    (written after its test)."""
    path = folder / "card_result.json"
    if not path.is_file():
        raise CurveError(f"{folder}: no card_result.json, so the run has not finished its test; let it finish "
                         f"(rerun its command to resume) or move the folder away")
    for record in json.loads(path.read_text()):
        if metric is None or record.get("metric") == metric:
            return record
    raise CurveError(f"{path}: no {metric} row (is the arm on card.yaml with that metric?)")


def card_results(results: list[ArmResult], runs: list[Run], card: dict) -> dict[str, list[dict]]:
    """Per arm on the card: its result rows over seeds, in the report's result-file layout. ``speedup_vs_no_bn``:
    the mean ratio over the seeds that reached the target, t interval, n = those seeds. ``test/acc`` (and any other
    metric the card names for the arm and the runs logged): the mean of the seeds' values, t interval, n = seeds.
    Evidence: the seeds' own (config, commits, hardware, versions), wall times summed."""
    from lit_papers.callbacks.card import compare as card_compare

    folders = {(r.arm, r.seed): r.folder for r in runs}
    out: dict[str, list[dict]] = {}
    for result in results:
        rows = [row for row in card.get("results", []) if row["variant"] == result.arm]
        seeds = [s.seed for s in result.seeds]
        if not rows or not seeds:
            continue
        source_runs = [folders[(result.arm, s)] for s in seeds]
        records = []
        for row in rows:
            metric = row["metric"]
            if metric == SPEEDUP:
                values = [s.ratio for s in result.seeds if s.ratio is not None]
                if not values:
                    continue  # no seed reached the target: no number (the table says "never")
                per_seed = ", ".join(f"seed {s.seed}: {s.steps if s.steps is not None else 'never'} steps "
                                     f"(no-BN {s.reference_steps})" for s in result.seeds)
                note = f"{len(values)} of {len(seeds)} seeds reached the no-BN best val/acc; {per_seed}"
            else:
                scale = float(row.get("scale", 1.0))
                values = [_run_record(f, metric)["ours"] / scale for f in source_runs]
                note = "mean over seeds " + ", ".join(f"{s}: {v * scale:.2f}" for s, v in zip(seeds, values))
            evidences = [_run_record(f, None).get("evidence", {}) for f in source_runs]
            first = evidences[0]
            commits = sorted({e.get("git_commit") for e in evidences if e.get("git_commit")})
            evidence = {**first, "seed": [int(s) if s.lstrip("-").isdigit() else s for s in seeds],
                        "git_commit": commits[0] if len(commits) == 1 else ", ".join(commits),
                        "wall_time_s": round(sum(e.get("wall_time_s") or 0.0 for e in evidences), 1),
                        "fit_time_s": round(sum(e.get("fit_time_s") or 0.0 for e in evidences), 1),
                        "run_dir": str(Path(first.get("run_dir") or source_runs[0]).parent),
                        "runs": [str(f) for f in source_runs]}
            mean = statistics.fmean(values)
            half = t_half_width(values)
            record = {"paper": card.get("paper", "batch_norm"), "paper_key": "batch_norm", "variant": result.arm,
                      **card_compare(row, mean, ci95=half, n=len(values), n_unit="seeds"),
                      "evidence": evidence, "note": note}
            records.append(record)
        if records:
            out[result.arm] = records
    return out


def write_card_results(results: list[ArmResult], runs: list[Run], card_path: Path, out_dir: Path) -> list[Path]:
    """``out_dir/<arm>.json`` for every arm with card rows (atomic writes)."""
    import os

    from lit_papers.callbacks.card import load_card

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for arm, records in card_results(results, runs, load_card(card_path)).items():
        target = out_dir / f"{arm}.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, indent=2))
        os.replace(tmp, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_papers.papers.batch_norm.steps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_root")
    parser.add_argument("--plot", help="write the val/acc curves (mean over seeds per arm) to this PNG")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--reference", default=REFERENCE, help=f"the arm whose best val/acc is the target ({REFERENCE})")
    parser.add_argument("--suffix", default="", help="read the arms <arm><suffix> (e.g. _cpu: configs/batch_norm/"
                        "<arm>_cpu.yaml, the CPU budget), the reference included")
    parser.add_argument("--finished", action="store_true", help="use only finished runs (a FINISHED marker in the "
                        "folder); runs still going are skipped and listed")
    parser.add_argument("--results", type=Path, help="also write the card's result files (<arm>.json) into this "
                        "folder (lit_papers/papers/batch_norm/results); every run must have finished its test")
    args = parser.parse_args(argv)
    try:
        arms = tuple(arm + args.suffix for arm in ARMS)
        reference = args.reference + args.suffix
        runs = find_runs(args.run_root, arms, log=lambda m: print(m, file=sys.stderr), finished_only=args.finished)
        results = compare(runs, reference)
        if args.plot:
            from lit_papers.papers.batch_norm.curves import draw_curves, mean_curves

            means = mean_curves(runs)
            targets = [s.target for s in results[0].seeds]
            out = draw_curves(means, args.plot, hline=(statistics.fmean(targets), f"{reference} best (mean)")
                              if targets else None)
            print(f"wrote {out}", file=sys.stderr)
        if args.results:
            card = Path(__file__).with_name("card.yaml")
            for path in write_card_results(results, runs, card, args.results):
                print(f"wrote {path}", file=sys.stderr)
    except CurveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([r.as_dict() for r in results], indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
