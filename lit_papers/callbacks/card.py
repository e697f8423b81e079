"""Reproduction cards: after ``test``, compare what we measured with the paper's numbers.

Each paper folder has ``card.yaml``::

    paper: He et al. 2016, Deep Residual Learning for Image Recognition
    results:
      - variant: resnet20          # the config file's stem (configs/resnet_cifar/resnet20.yaml); "*" = any
        metric: test/error         # a key the LitModule logs
        kind: paper                # paper | scaled | ablation | target | variant (KINDS below)
        scale: 100                 # ours * scale is compared with value (fractions -> percent)
        value: 8.75
        source: Table 6
        tolerance: 0.5             # how far from the paper's number still counts as reaching it
        higher_is_better: false
        headline: true             # optional, at most one row per card: the paper's main claim (top-level README)
        baseline: true             # optional: the paper's baseline; overshooting it is a discrepancy, not a success
        strict: true               # optional, target rows: the value is a bound to pass (> 0), not to reach (>= 0)
        group: depth               # ablation rows only: the arms of one comparison share a group

The verdict depends on the row's kind (:func:`verdict`) and uses the 95% interval of our number: the module logs
``M_ci95`` (half-width) and/or ``M_n`` (count) next to a metric ``M``; with only ``M_n`` a fraction in [0, 1] is
treated as a binomial accuracy (Wilson interval). A run whose data differ from its variant config's data section
(command-line overrides, another stacked config) is recorded as ``kind: variant`` with the overridden keys: its
card row describes another run.

The callback writes ``card_result.json`` (a list of rows with their evidence) into the run folder and puts the
same numbers into the W&B run summary under ``card/<metric>/...``; every tested run also gets ``evidence.json`` (the
evidence alone), so a run whose variant has no card row still records its config, seed, commit and hardware.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from lit_papers.callbacks.evidence import git_commit, hardware, versions

RESULT_FILE = "card_result.json"
EVIDENCE_FILE = "evidence.json"  # the evidence alone, written by every tested run (with or without card rows)


def _write_json_atomically(target: Path, value: Any) -> None:
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, target)


KINDS = {
    "paper": "the paper's method, data and protocol: passes when our 95% interval reaches the paper's number "
             "within its tolerance",
    "scaled": "the paper's method on less data or a shorter schedule: the paper's number is context, no verdict",
    "ablation": "one arm of a comparison (rows sharing `group`): passes when the paper's difference holds "
                "outside our intervals",
    "target": "a number of ours with no paper number: passes when our whole 95% interval is on the good side",
    "variant": "not the paper's method (or not its data): shown, not compared",
}
Z95 = 1.959963984540054


def card_path_for(module: L.LightningModule) -> Path | None:
    """``card.yaml`` beside the file that defines the LightningModule's class or, for a shared LightningModule
    (``detection.module.DetectionLitModule``), beside the injected network's class (a paper folder)."""
    for cls in (type(module), type(getattr(module, "model", None))):
        try:
            path = Path(inspect.getfile(cls)).parent / "card.yaml"
        except TypeError:
            continue
        if path.is_file():
            return path
    return None


def load_card(path: str | os.PathLike) -> dict:
    """Read and check a card: every row names variant, metric, value, source and a known ``kind``; ablation
    rows carry a ``group``; at most one row is the ``headline``."""
    card = yaml.safe_load(Path(path).read_text()) or {}
    headlines = []
    for i, row in enumerate(card.get("results", [])):
        where = f"{path}: results[{i}] ({row.get('variant')}, {row.get('metric')})"
        missing = {"variant", "metric", "value", "source"} - set(row)
        if missing:
            raise ValueError(f"{where} lacks {sorted(missing)}")
        if row.get("kind") not in KINDS:
            raise ValueError(f"{where}: kind is {row.get('kind')!r}; set `kind:` to one of {sorted(KINDS)} "
                             "(see lit_papers/callbacks/card.py)")
        if row["kind"] == "ablation" and not row.get("group"):
            raise ValueError(f"{where}: an ablation row needs `group:` naming the comparison it is an arm of")
        if row.get("headline"):
            headlines.append(i)
    if len(headlines) > 1:
        raise ValueError(f"{path}: rows {headlines} are all `headline: true`; mark one row (the paper's main claim)")
    return card


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``p`` observed over ``n`` trials."""
    if n <= 0:
        raise ValueError("a Wilson interval needs n >= 1")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


BINOMIAL_WORDS = ("acc", "error", "top1", "top5")


def is_binomial(row: dict) -> bool:
    """Whether a row's metric is a proportion of independent trials (a Wilson interval from n applies): the
    row's ``binomial:`` if stated, else an accuracy/error-like metric name (AP, MSE, ... are not)."""
    if "binomial" in row:
        return bool(row["binomial"])
    name = row["metric"].rsplit("/", 1)[-1]
    return any(word in name for word in BINOMIAL_WORDS)


def interval(ours: float, *, scale: float = 1.0, ci95: float | None = None, n: int | None = None,
             n_unit: str | None = None, binomial: bool = True) -> tuple[float, float, str] | None:
    """(low, high, method) of our number in the card's units (``ours``/``ci95`` already scaled), or None when
    nothing recorded allows one. ``ci95`` (a logged half-width) wins; else ``n`` of a binomial fraction gives a
    Wilson interval, unless the count is of episodes (an episode mean needs its logged half-width)."""
    if ci95 is not None:
        return ours - ci95, ours + ci95, "logged"
    if n and binomial and n_unit != "episodes":
        p = ours / scale
        if 0.0 <= p <= 1.0:
            low, high = wilson(p, int(n))
            return low * scale, high * scale, "wilson"
    return None


def _better(a: float, b: float, higher: bool) -> float:
    """How far ``a`` is past ``b`` in the good direction (negative: short of it)."""
    return a - b if higher else b - a


def verdict(row: dict, ours: float | None, low: float | None = None, high: float | None = None, *,
            kind: str | None = None) -> tuple[str, str]:
    """(status, text) of one row: status is pass | fail | open | discrepancy | context | none.

    ``ours``, ``low`` and ``high`` are in the card's units (scaled). ``kind`` overrides the row's kind (a run
    with overridden data is a variant whatever its card row says). Ablation rows need the other arms:
    :func:`ablation_verdict`.
    """
    kind = kind or row["kind"]
    if ours is None:
        return "none", "not run yet"
    if kind == "variant":
        return "none", "variant: not compared with the paper"
    if kind == "ablation":
        return "open", "ablation: needs the other arms of its group"
    paper, tol = float(row["value"]), float(row.get("tolerance", 0.0))
    higher = bool(row.get("higher_is_better", True))
    has_interval = low is not None and high is not None
    best, worst = (ours, ours) if not has_interval else ((high, low) if higher else (low, high))
    point = "" if has_interval else " (point value; no interval recorded)"
    if row.get("baseline") and _better(worst, paper, higher) > tol:
        return "discrepancy", (f"⚠️ discrepancy: our baseline is {abs(ours - paper):.2f} past the paper's "
                               f"baseline, beyond tolerance {tol:g}{point}")
    if kind == "scaled":
        return "context", f"scaled run: gap {ours - paper:+.2f} to the paper (context, not a target)"
    short = abs(_better(best, paper, higher))
    if kind == "paper":
        if _better(best, paper, higher) >= -tol:
            return "pass", f"✅ reproduced (within {tol:g}){point}"
        if has_interval:
            return "fail", f"❌ not reached: the interval's best end is {short:.3g} short (tolerance {tol:g})"
        return "fail", f"❌ short by {short:.3g} (tolerance {tol:g}){point}"
    if kind == "target":
        # strict: the target is a bound to pass, not to reach ("more than 0": a whole interval at 0 is not a pass)
        def beyond(x: float) -> bool:
            return _better(x, paper, higher) >= -tol if not row.get("strict") else _better(x, paper, higher) > 0
        if beyond(worst):
            return "pass", "✅ target met" + (" by the whole interval" if has_interval else point)
        if beyond(best):
            return "open", "❔ target inside the 95% interval: not shown"
        if row.get("strict") and _better(best, paper, higher) == 0:
            return "fail", f"❌ target not passed: the interval's best end is at the bound ({paper:g}), not past it"
        if has_interval:
            return "fail", f"❌ target not reached: the interval's best end is {short:.3g} short"
        return "fail", f"❌ short of the target by {short:.3g}{point}"
    raise ValueError(f"unknown kind {kind!r}")


def ablation_verdict(arm: dict, others: list[dict]) -> tuple[str, str]:
    """Verdict of one ablation arm against the other arms of its group (same metric).

    Each arm is ``{"row": card row, "ours", "low", "high"}`` (scaled; low/high may be None). The paper's
    difference between two arms is the difference of their card values. The arm passes when, for every other
    arm, our difference has the paper's sign and holds outside both intervals (our low end above the other's
    high end); if the row states ``difference_tolerance``, our difference must also be within it of the paper's.
    """
    if arm["ours"] is None:
        return "none", "not run yet"
    waiting = [o["row"]["variant"] for o in others if o["ours"] is None]
    if not others:
        return "open", "ablation: no other arm of this group on the card"
    if waiting:
        return "open", f"ablation: waiting for {', '.join(waiting)}"
    size_tol = arm["row"].get("difference_tolerance")
    problems = []
    for other in others:
        paper_diff = float(arm["row"]["value"]) - float(other["row"]["value"])
        ours_diff = arm["ours"] - other["ours"]
        name = other["row"]["variant"]
        lo_a, hi_a = (arm["low"], arm["high"]) if arm["low"] is not None else (arm["ours"], arm["ours"])
        lo_b, hi_b = (other["low"], other["high"]) if other["low"] is not None else (other["ours"], other["ours"])
        if paper_diff > 0 and not lo_a > hi_b or paper_diff < 0 and not hi_a < lo_b:
            problems.append(f"vs {name}: ours {ours_diff:+.2f}, paper {paper_diff:+.2f} (not outside the intervals)")
        elif paper_diff == 0 and (lo_a > hi_b or hi_a < lo_b):
            problems.append(f"vs {name}: ours {ours_diff:+.2f}, paper no difference")
        elif size_tol is not None and abs(ours_diff - paper_diff) > float(size_tol):
            problems.append(f"vs {name}: size {ours_diff:+.2f}, paper {paper_diff:+.2f} (beyond {size_tol:g})")
    points = any(a["low"] is None for a in (arm, *others))
    note = " (point values: an arm has no interval recorded)" if points else ""
    if problems:
        return "fail", "❌ " + "; ".join(problems) + note
    return "pass", "✅ the paper's difference holds outside the intervals" + note


def compare(row: dict, ours: float, *, ci95: float | None = None, n: int | None = None,
            n_unit: str | None = None, kind: str | None = None) -> dict:
    """One card row + our raw metric value (and its logged half-width / count) -> the comparison record."""
    scale = float(row.get("scale", 1.0))
    ours_scaled = float(ours) * scale
    ci_scaled = None if ci95 is None else float(ci95) * scale
    paper = float(row["value"])
    delta = ours_scaled - paper
    found = interval(ours_scaled, scale=scale, ci95=ci_scaled, n=n, n_unit=n_unit, binomial=is_binomial(row))
    low, high, method = found if found else (None, None, None)
    status, text = verdict(row, ours_scaled, low, high, kind=kind)
    return {
        "metric": row["metric"],
        "kind": kind or row.get("kind"),
        "paper_value": paper,
        "ours": round(ours_scaled, 6),
        "ci95": None if ci_scaled is None else round(ci_scaled, 6),
        "n": None if n is None else int(n),
        "n_unit": n_unit,
        "low": None if low is None else round(low, 6),
        "high": None if high is None else round(high, 6),
        "interval": method,
        "delta": round(delta, 6),
        "tolerance": float(row.get("tolerance", 0.0)),
        "higher_is_better": bool(row.get("higher_is_better", True)),
        "pass": {"pass": True, "fail": False, "discrepancy": False}.get(status),
        "status": status,
        "verdict": text,
        "source": row["source"],
    }


def _plain(value: Any) -> Any:
    """Config values as plain YAML data (tuples -> lists, paths -> str) so that two spellings compare equal."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def data_section(config: dict | None) -> dict | None:
    """``{"class_path", "init_args"}`` of a config's ``data`` entry (None when it has none)."""
    data = (config or {}).get("data")
    if not isinstance(data, dict):
        return None
    return {"class_path": data.get("class_path"), "init_args": _plain(data.get("init_args") or {})}


def data_overrides(resolved: dict, variant: dict | None, datamodule_class: type | None) -> list[str]:
    """Keys of the run's resolved data section that differ from what the variant config alone gives: the
    config file's value, else the DataModule's constructor default. ``["data.class_path"]`` when the class
    differs; every key when the variant config has no data section."""
    if variant is None:
        return ["data"]
    if resolved.get("class_path") != variant.get("class_path"):
        return ["data.class_path"]
    defaults = {}
    for cls in getattr(datamodule_class, "__mro__", ()):  # a subclass passing **kwargs on: the parents' defaults
        if "__init__" not in vars(cls):
            continue
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults.setdefault(name, _plain(param.default))
    missing = object()
    keys = []
    for key, value in sorted(resolved["init_args"].items()):
        expected = variant["init_args"].get(key, defaults.get(key, missing))
        if expected is missing and datamodule_class is None:
            continue  # no class to read defaults from: only keys the variant file states can be checked
        if expected is missing or _plain(value) != expected:
            keys.append(f"data.init_args.{key}")
    keys += [f"data.init_args.{k}" for k in sorted(set(variant["init_args"]) - set(resolved["init_args"]))]
    return keys


def _train_items(datamodule: Any) -> tuple[int, str] | None:
    """(count, what) of the training data if the DataModule already built it (never builds it): images, clips
    or pairs of a training set, or the (character, rotation) classes of an episodic one."""
    candidates = [("items", getattr(datamodule, name, None)) for name in ("train_set", "train_dataset", "train")]
    candidates.append(("items", (getattr(datamodule, "datasets", None) or {}).get("train")
                       if isinstance(getattr(datamodule, "datasets", None), dict) else None))
    tables = getattr(datamodule, "tables", None)
    candidates.append(("classes", tables.get("train") if isinstance(tables, dict) else None))
    for what, dataset in candidates:
        if dataset is not None and hasattr(dataset, "__len__") and not isinstance(dataset, str | bytes):
            try:
                return int(len(dataset)), what
            except TypeError:
                continue
    return None


class ReproductionCard(L.Callback):
    """Writes the card comparison after testing. Constructed by the CLI with the run's evidence."""

    def __init__(
        self,
        *,
        run_dir: str | None = None,
        variant: str | None = None,
        config_paths: list[str] | None = None,
        seed: int | None = None,
        start_time: float | None = None,
        card_path: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.variant = variant
        self.config_paths = config_paths or []
        self.seed = seed
        self.start_time = start_time or time.time()
        self.card_path = card_path
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None
        self.git_commit = git_commit()  # the code that starts the run, not whatever HEAD is when it ends

        # training evidence carried in checkpoints, so that a later `test --ckpt_path ...` (or a resumed run)
        # reports the steps and fit time that produced the weights, not zeros
        self._fit_seconds_before = 0.0
        self._trained_steps: int | None = None
        # one record per fit attempt of a resumed run (commit, steps, fit seconds): the evidence says which code
        # trained which steps. None: a checkpoint written before attempts were recorded (earlier ones unknown).
        self._attempts_before: list[dict[str, Any]] | None = []
        self._attempt: dict[str, Any] | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.time()

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if self._attempt is None and self._fit_start is not None:  # the step this attempt resumed from
            self._attempt = {"commit": self.git_commit, "from_step": int(trainer.global_step),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self._fit_start))}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._trained_steps = trainer.global_step

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._fit_start is not None:
            self.fit_seconds = self._fit_seconds_before + time.time() - self._fit_start
            self._trained_steps = trainer.global_step

    def attempts(self) -> list[dict[str, Any]] | None:
        """Every fit attempt that trained these weights, this one last (``to_step``, ``fit_s`` so far)."""
        if self._attempts_before is None:
            return None
        current = []
        if self._attempt is not None:
            current = [{**self._attempt, "to_step": self._trained_steps,
                        "fit_s": round(time.time() - self._fit_start if self.fit_seconds is None
                                       else self.fit_seconds - self._fit_seconds_before, 1)}]
        return self._attempts_before + current

    def state_dict(self) -> dict[str, Any]:
        fit = self.fit_seconds
        if fit is None and self._fit_start is not None:
            fit = self._fit_seconds_before + time.time() - self._fit_start
        return {"fit_time_s": fit, "global_step": self._trained_steps, "attempts": self.attempts()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_seconds_before = float(state_dict.get("fit_time_s") or 0.0)
        self._trained_steps = state_dict.get("global_step")
        before = state_dict.get("attempts", None if state_dict.get("fit_time_s") else [])
        self._attempts_before = None if before is None else [dict(a) for a in before]
        if self._fit_start is None:  # test/validate from a checkpoint: report what trained these weights
            self.fit_seconds = state_dict.get("fit_time_s")

    def _data_evidence(self, trainer) -> dict[str, Any]:
        """The data this run used (the resolved config the CLI saved in the run folder), its training-set size
        when already built, and the keys where it differs from the variant config's own data section."""
        run_dir = Path(self.run_dir or trainer.default_root_dir)
        resolved_path = run_dir / "config.yaml"
        if not resolved_path.is_file():
            return {}
        resolved = data_section(yaml.safe_load(resolved_path.read_text()))
        if resolved is None:
            return {}
        variant_files = [p for p in self.config_paths if Path(p).stem == self.variant] or self.config_paths[:1]
        datamodule = getattr(trainer, "datamodule", None)
        found = _train_items(datamodule)
        out = {"data": resolved, "train_items": found and found[0], "train_items_unit": found and found[1]}
        if not variant_files or not Path(variant_files[0]).is_file():  # nothing to compare with: say so
            out["data_check"] = f"variant config {variant_files[0] if variant_files else None!r} not readable"
            return out
        variant = data_section(yaml.safe_load(Path(variant_files[0]).read_text()))
        out["data_overrides"] = data_overrides(resolved, variant, type(datamodule) if datamodule is not None else None)
        return out

    def evidence(self, trainer) -> dict[str, Any]:
        """What made this run's numbers: config, seed, commit, hardware, versions, times, steps, data."""
        return {
            "config": [str(p) for p in self.config_paths],
            "seed": self.seed,
            "git_commit": self.git_commit,
            "hardware": hardware(),
            "devices": trainer.world_size,
            "precision": str(trainer.precision),
            "versions": versions(),
            "wall_time_s": round(time.time() - self.start_time, 1),
            "fit_time_s": None if self.fit_seconds is None else round(self.fit_seconds, 1),
            "attempts": self.attempts(),  # None: trained (partly) before attempts were recorded
            "global_step": trainer.global_step or self._trained_steps or 0,
            "run_dir": self.run_dir,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            **self._data_evidence(trainer),
        }

    def rows(self, trainer, pl_module, evidence: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        path = Path(self.card_path) if self.card_path else card_path_for(pl_module)
        if path is None:
            return []
        card = load_card(path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        evidence = self.evidence(trainer) if evidence is None else evidence
        overridden = evidence.get("data_overrides") or []
        out = []
        for row in card.get("results", []):
            metric = row["metric"]
            if row["variant"] not in ("*", self.variant) or metric not in metrics:
                continue
            n = metrics.get(f"{metric}_n")
            record = {"paper": card.get("paper", path.parent.name), "paper_key": path.parent.name,
                      "variant": self.variant,
                      **compare(row, metrics[metric], ci95=metrics.get(f"{metric}_ci95"),
                                n=None if n is None else int(round(n)), kind="variant" if overridden else None),
                      "evidence": evidence}
            if overridden:  # the card row describes the variant's own data, not this run's
                record["card_kind"] = row["kind"]
                record["overridden"] = overridden
                record["note"] = ("run with data different from the variant config (" + ", ".join(overridden)
                                  + "): not the card's run, not compared with the paper")
            elif row.get("note"):
                record["note"] = row["note"]
            out.append(record)
        return out

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if (Path(self.run_dir or trainer.default_root_dir) / "nonfinite_batch.json").exists():
            return print("[card] no result: this run stopped on a non-finite loss (nonfinite_batch.json)")
        evidence = self.evidence(trainer)
        rows = self.rows(trainer, pl_module, evidence)
        run_dir = Path(self.run_dir or trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # every tested run keeps its evidence, also one whose variant has no card row (e.g. a point of a series
        # that only an aggregate row uses, such as random_labels' p = 0.2 .. 0.8): evidence.json
        _write_json_atomically(run_dir / EVIDENCE_FILE, evidence)
        if not rows:
            return
        target = run_dir / RESULT_FILE
        _write_json_atomically(target, rows)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            summary = getattr(experiment, "summary", None)
            if summary is None:
                continue
            for row in rows:
                for key in ("paper_value", "ours", "low", "high", "delta", "pass", "kind", "status"):
                    summary[f"card/{row['metric']}/{key}"] = row[key]
        for row in rows:
            spread = "" if row["low"] is None else f" [{row['low']:.4g}, {row['high']:.4g}]"
            print(f"[card] {row['paper_key']}/{row['variant']} {row['metric']} ({row['kind']}): ours "
                  f"{row['ours']:.4g}{spread} vs {row['paper_value']:.4g} ({row['source']}) -> {row['verdict']}; "
                  f"wrote {target}")
