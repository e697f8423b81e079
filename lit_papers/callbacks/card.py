"""Reproduction cards: after ``test``, compare what we measured with the paper's numbers.

Each paper folder has ``card.yaml``::

    paper: He et al. 2016, Deep Residual Learning for Image Recognition
    results:
      - variant: resnet20          # the config file's stem (configs/resnet_cifar/resnet20.yaml); "*" = any
        metric: test/error         # a key the LitModule logs
        scale: 100                 # ours * scale is compared with value (fractions -> percent)
        value: 8.75
        source: Table 6
        tolerance: 0.5             # |ours - paper| <= tolerance passes; so does beating the paper
        higher_is_better: false

The callback writes ``card_result.json`` (a list of rows with their evidence) into the run folder and puts the
same numbers into the W&B run summary under ``card/<metric>/...``.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from lit_papers.callbacks.evidence import git_commit, hardware, versions

RESULT_FILE = "card_result.json"


def card_path_for(module: L.LightningModule) -> Path | None:
    """``card.yaml`` beside the file that defines the LightningModule's class (a paper folder)."""
    try:
        path = Path(inspect.getfile(type(module))).parent / "card.yaml"
    except TypeError:
        return None
    return path if path.is_file() else None


def load_card(path: str | os.PathLike) -> dict:
    card = yaml.safe_load(Path(path).read_text()) or {}
    for i, row in enumerate(card.get("results", [])):
        missing = {"variant", "metric", "value", "source"} - set(row)
        if missing:
            raise ValueError(f"{path}: results[{i}] lacks {sorted(missing)}")
    return card


def compare(row: dict, ours: float) -> dict:
    """One card row + our raw metric value -> the comparison record."""
    ours_scaled = float(ours) * float(row.get("scale", 1.0))
    paper = float(row["value"])
    delta = ours_scaled - paper
    higher = bool(row.get("higher_is_better", True))
    better = delta >= 0 if higher else delta <= 0
    tolerance = float(row.get("tolerance", 0.0))
    return {
        "metric": row["metric"],
        "paper_value": paper,
        "ours": round(ours_scaled, 6),
        "delta": round(delta, 6),
        "tolerance": tolerance,
        "higher_is_better": higher,
        "pass": bool(better or abs(delta) <= tolerance),
        "source": row["source"],
    }


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

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.time()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._trained_steps = trainer.global_step

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._fit_start is not None:
            self.fit_seconds = self._fit_seconds_before + time.time() - self._fit_start
            self._trained_steps = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        fit = self.fit_seconds
        if fit is None and self._fit_start is not None:
            fit = self._fit_seconds_before + time.time() - self._fit_start
        return {"fit_time_s": fit, "global_step": self._trained_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_seconds_before = float(state_dict.get("fit_time_s") or 0.0)
        self._trained_steps = state_dict.get("global_step")
        if self._fit_start is None:  # test/validate from a checkpoint: report what trained these weights
            self.fit_seconds = state_dict.get("fit_time_s")

    def rows(self, trainer, pl_module) -> list[dict[str, Any]]:
        path = Path(self.card_path) if self.card_path else card_path_for(pl_module)
        if path is None:
            return []
        card = load_card(path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        evidence = {
            "config": [str(p) for p in self.config_paths],
            "seed": self.seed,
            "git_commit": self.git_commit,
            "hardware": hardware(),
            "devices": trainer.world_size,
            "precision": str(trainer.precision),
            "versions": versions(),
            "wall_time_s": round(time.time() - self.start_time, 1),
            "fit_time_s": None if self.fit_seconds is None else round(self.fit_seconds, 1),
            "global_step": trainer.global_step or self._trained_steps or 0,
            "run_dir": self.run_dir,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        out = []
        for row in card.get("results", []):
            if row["variant"] not in ("*", self.variant) or row["metric"] not in metrics:
                continue
            record = {"paper": card.get("paper", path.parent.name), "paper_key": path.parent.name,
                      "variant": self.variant, **compare(row, metrics[row["metric"]]), "evidence": evidence}
            if row.get("note"):
                record["note"] = row["note"]
            out.append(record)
        return out

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if (Path(self.run_dir or trainer.default_root_dir) / "nonfinite_batch.json").exists():
            return print("[card] no result: this run stopped on a non-finite loss (nonfinite_batch.json)")
        rows = self.rows(trainer, pl_module)
        if not rows:
            return
        run_dir = Path(self.run_dir or trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        target = run_dir / RESULT_FILE
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        os.replace(tmp, target)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            summary = getattr(experiment, "summary", None)
            if summary is None:
                continue
            for row in rows:
                for key in ("paper_value", "ours", "delta", "pass"):
                    summary[f"card/{row['metric']}/{key}"] = row[key]
        for row in rows:
            verdict = "PASS" if row["pass"] else "below paper"
            print(f"[card] {row['paper_key']}/{row['variant']} {row['metric']}: ours {row['ours']:.4g} vs paper "
                  f"{row['paper_value']:.4g} ({row['source']}), delta {row['delta']:+.4g} -> {verdict}; wrote {target}")
