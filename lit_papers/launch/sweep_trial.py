"""The shared state of a local sweep and the callback that reports a trial into it.

A sweep folder (``<runs>/sweeps/<name>/<id>/``) holds ``sweep.yaml`` (the validated W&B sweep file),
``state.json`` (one record per trial: parameters, state, metric history and summary, run folder, W&B id), the
trials' run folders ``trials/<n>/``, and the outputs ``results.md``, ``results.csv`` and ``best.yaml``. Every
read-modify-write of ``state.json`` holds an exclusive ``flock`` on ``state.lock``, so Slurm array tasks (and
the DDP ranks of one task) can share a sweep on a shared filesystem.

:class:`SweepTrialCallback` runs inside the trial's ``fit`` (added by the CLI when ``LIT_PAPERS_SWEEP_TRIAL``
is set): at each validation end rank 0 appends ``metric.name`` to the trial's history and asks W&B's hyperband
(``sweeps.stop_runs``, when the sweep has ``early_terminate``) whether to stop; the decision is broadcast so all
ranks stop together. At the end of ``fit`` it records the final state and rewrites the results table.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

TRIAL_ENV = "LIT_PAPERS_SWEEP_TRIAL"  # "<sweep folder>::<trial index>"
TERMINAL = ("finished", "stopped", "failed", "crashed")


def plain(value: Any) -> Any:
    """numpy scalars/arrays (what W&B's search returns) -> Python values, recursively."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class SweepStore:
    """``state.json`` of one sweep folder, guarded by a file lock."""

    def __init__(self, sweep_dir: str | os.PathLike) -> None:
        self.dir = Path(sweep_dir)
        self.state_path = self.dir / "state.json"

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.dir / "sweep.yaml").read_text())

    @contextlib.contextmanager
    def locked(self):
        """Exclusive access; yields the state dict and writes it back (atomically) on exit."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "state.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                tmp = self.state_path.with_name(f".state.json.{os.getpid()}")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                os.replace(tmp, self.state_path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict:
        if not self.state_path.is_file():
            return {"trials": {}}
        return json.loads(self.state_path.read_text())

    def trial_dir(self, index: int) -> Path:
        return self.dir / "trials" / str(index)


# -- results ------------------------------------------------------------------------------------------------
def summary_of(trial: dict) -> float | None:
    value = trial.get("summary")
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_trial(state: dict, config: dict) -> tuple[int, dict] | None:
    """The trial with the best summary metric (W&B's rule: the last logged value) among those with one."""
    goal = (config.get("metric") or {}).get("goal", "minimize")
    scored = [(int(k), t) for k, t in state["trials"].items() if summary_of(t) is not None]
    if not scored:
        return None
    sign = -1.0 if goal == "maximize" else 1.0
    return min(scored, key=lambda kv: (sign * summary_of(kv[1]), kv[0]))


def write_results(store: SweepStore, state: dict) -> None:
    """``results.csv``/``results.md`` (one row per trial) and ``best.yaml``; called with the lock held."""
    config = store.config
    metric = (config.get("metric") or {}).get("name", "metric")
    names = list(config.get("parameters", {}))
    header = ["trial", "state", *names, metric, f"{metric} (best seen)", "steps", "wall_s", "run_dir", "wandb_id"]
    goal_max = (config.get("metric") or {}).get("goal") == "maximize"
    rows = []
    for key in sorted(state["trials"], key=int):
        t = state["trials"][key]
        history = [v for v in t.get("history", []) if isinstance(v, (int, float))]
        seen = (max(history) if goal_max else min(history)) if history else None
        rows.append([int(key), t.get("state"), *[t["params"].get(n) for n in names], summary_of(t), seen,
                     t.get("steps"), t.get("wall_s"), t.get("run_dir"), t.get("wandb_id")])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    _atomic_write(store.dir / "results.csv", buf.getvalue())

    def cell(v):
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))

    best = best_trial(state, config)
    lines = [f"# Sweep {config.get('name', store.dir.parent.name)} ({store.dir})", "",
             f"method `{config['method']}`, metric `{metric}` ({(config.get('metric') or {}).get('goal', 'minimize')})"
             + (f", best: trial {best[0]}" if best else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    _atomic_write(store.dir / "results.md", "\n".join(lines) + "\n")
    if best is not None:
        write_best_config(store, best[0], best[1], metric)


_RUN_ONLY_KEYS = ("ckpt_path",)


def write_best_config(store: SweepStore, index: int, trial: dict, metric: str) -> Path | None:
    """The best trial's resolved config (complete: every CLI key) minus run-only keys, as ``best.yaml``."""
    resolved = Path(trial.get("run_dir") or "") / "config.yaml"
    if not resolved.is_file():
        return None
    config = yaml.safe_load(resolved.read_text())
    for key in _RUN_ONLY_KEYS:
        config.pop(key, None)
    config.get("trainer", {}).pop("default_root_dir", None)
    if isinstance(config.get("run"), dict):
        config["run"]["version"] = None
    header = (f"# Best trial {index} of sweep {store.dir} ({metric} = {summary_of(trial)}).\n"
              f"# Parameters: {json.dumps(trial['params'])}\n"
              f"# Complete config: lit-papers fit --config <this file>\n")
    target = store.dir / "best.yaml"
    _atomic_write(target, header + yaml.safe_dump(config, sort_keys=False))
    return target


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def command_line_params(argv: list[str], names: list[str]) -> dict[str, str]:
    """``{name: value}`` for each ``--name=value`` / ``--name value`` in ``argv`` (the last one wins)."""
    found: dict[str, str] = {}
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        key, eq, value = token[2:].partition("=")
        if key in names:
            if eq:
                found[key] = value
            elif i + 1 < len(argv):
                found[key] = argv[i + 1]
    return found


# -- inside a trial -----------------------------------------------------------------------------------------
def sweep_trial_callbacks() -> list[Callback]:
    """[SweepTrialCallback] when this ``fit`` is a local-sweep trial, else []."""
    spec = os.environ.get(TRIAL_ENV)
    if not spec:
        return []
    sweep_dir, index = spec.rsplit("::", 1)
    return [SweepTrialCallback(sweep_dir, int(index))]


class SweepTrialCallback(Callback):
    def __init__(self, sweep_dir: str | os.PathLike, index: int) -> None:
        self.store = SweepStore(sweep_dir)
        self.index = index
        self.key = str(index)
        config = self.store.config
        self.metric = (config.get("metric") or {}).get("name")
        self.early_terminate = config.get("early_terminate")
        self.config = config
        self.start = time.time()
        self.stopped_early = False

    def _update(self, trainer: Trainer, **fields) -> None:
        if not trainer.is_global_zero:
            return
        with self.store.locked() as state:
            trial = state["trials"].setdefault(self.key, {"params": {}})
            trial.update(fields)
            trial["steps"] = trainer.global_step
            trial["wall_s"] = round(trial.get("wall_s_before", 0.0) + time.time() - self.start, 1)
            run_dir = Path(trainer.default_root_dir)
            wandb_id = run_dir / "wandb_id.txt"
            trial["run_dir"] = str(run_dir)
            trial["wandb_id"] = wandb_id.read_text().strip() if wandb_id.is_file() else None
            if fields.get("state") in TERMINAL or fields.get("state") == "preempted":
                trial["wall_s_before"] = trial["wall_s"]
                write_results(self.store, state)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Every rank parses the sweep parameters from its own command line; rank 0's are broadcast and compared,
        so a rank that got other values (the W&B + DDP failure mode) stops the trial instead of training silently
        with mixed hyperparameters."""
        mine = command_line_params(sys.argv, list(self.config.get("parameters", {})))
        reference = trainer.strategy.broadcast(mine, src=0)
        agree = trainer.strategy.reduce_boolean_decision(mine == reference, all=True)
        if not agree:
            raise RuntimeError(f"sweep trial {self.index}: DDP ranks got different parameters "
                               f"(rank {trainer.global_rank}: {mine}, rank 0: {reference})")
        if trainer.is_global_zero:
            with self.store.locked() as state:
                trial = state["trials"].setdefault(self.key, {"params": {}})
                trial["ranks_checked"] = trainer.world_size
                trial["rank_params"] = mine

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer, state="running")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.metric:
            return
        stop = False
        if trainer.is_global_zero and self.metric in trainer.callback_metrics:
            value = float(trainer.callback_metrics[self.metric])
            with self.store.locked() as state:
                trial = state["trials"].setdefault(self.key, {"params": {}})
                trial.setdefault("history", []).append(value)
                trial["summary"] = value
                if self.early_terminate:
                    stop = self._hyperband_says_stop(state)
        stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            self.stopped_early = True
            trainer.should_stop = True

    def _hyperband_says_stop(self, state: dict) -> bool:
        from lit_papers.launch.sweep import import_sweeps, sweep_runs

        sweeps = import_sweeps()

        runs = sweep_runs(state, self.metric, running=self.key)
        to_stop = sweeps.stop_runs(self.config, runs)
        return any(r.name == self.key for r in to_stop)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer, state="stopped" if self.stopped_early else "finished")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        from lit_papers.launch.preemption import Preempted

        self._update(trainer, state="preempted" if isinstance(exception, Preempted) else "failed",
                     error=f"{type(exception).__name__}: {exception}"[:500])
