"""``lit-papers sweep sweeps/<paper>.yaml [--count N] [--dir D] [--seed S] [-- extra fit args]``: a W&B sweep
without a W&B server.

The sweep file is W&B's own format, unchanged (``wandb sweep`` + ``wandb agent`` run it on a server): ``method``
(grid, random, bayes), ``metric`` (a logged key such as ``val/acc``), ``parameters`` named by full LightningCLI
keys, optional ``early_terminate`` (hyperband), and ``command`` with ``${env}`` and ``${args}``, e.g.
``[${env}, lit-papers, fit, --config, configs/resnet_cifar/resnet20.yaml, ${args}]``. This runner

* validates the file with W&B's schema (``sweeps.SweepConfig``) and checks the command,
* proposes each trial with W&B's search (``sweeps.next_run``; seeded from ``--seed`` and the trial index),
  giving it the parameters and states of all earlier trials, as the server does,
* expands the command like ``wandb agent`` does (W&B's ``create_sweep_command_args``: ``--key=value``), with
  ``lit-papers`` run as ``<this python> -m lit_papers``, plus the extra args after ``--``,
* runs trials one after another, each in its own run folder ``<sweep>/trials/<n>/`` (the trial's ``fit`` reports
  metric history, hyperband decisions and its final state, see :mod:`lit_papers.launch.sweep_trial`),
* writes ``results.md``/``results.csv`` (parameters, metric, run folder, W&B run id) and ``best.yaml`` (the best
  trial's complete resolved config).

Inside a Slurm array task (``SLURM_ARRAY_TASK_ID`` set) it runs exactly one trial, number = task id, in the
sweep folder ``<runs>/sweeps/<name>/slurm-<array job id>`` shared by all tasks. Every DDP rank of the task gets
the same parameters (the first rank to take the lock proposes, the others read the record) and then ``exec``s
the trial's ``fit``, so srun's signals reach it. A requeued task finds its record and resumes its run folder.

Why the parameters reach every DDP rank: they are command-line arguments of ``fit``, never read from
``wandb.config`` (which exists on rank 0 only); Lightning's launcher re-runs the same command line for each
local rank, and srun-launched ranks each parse the same arguments.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from lit_papers.launch import run_dir as runs
from lit_papers.launch.sweep_trial import TERMINAL, TRIAL_ENV, SweepStore, best_trial, plain, write_results

ARGS_MACROS = ("${args}", "${args_no_boolean_flags}")
SUBCOMMANDS = ("fit",)


class SweepFileError(ValueError):
    """A sweep file that W&B's schema or this runner rejects; the message names the file and the fix."""


def import_sweeps():
    try:
        with warnings.catch_warnings():  # sweeps 0.3.0 uses pydantic-1 style config: deprecation noise only
            warnings.simplefilter("ignore")
            import sweeps
    except ImportError as err:  # see pyproject.toml: installed with --no-deps
        raise SystemExit("lit-papers sweep needs W&B's `sweeps` package: pip install -e '.[sweeps]' && "
                         "pip install --no-deps 'sweeps==0.3.0' (see pyproject.toml)") from err
    return sweeps


def load_sweep(path: str | os.PathLike) -> dict:
    """Read and validate a sweep file; returns the dict (as written, not filled with defaults)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SweepFileError(f"{path}: cannot read the sweep file ({err})") from err
    if not isinstance(config, dict):
        raise SweepFileError(f"{path}: a sweep file is a YAML mapping with method, metric, parameters, command")
    sweeps = import_sweeps()
    try:
        sweeps.SweepConfig(config)
    except Exception as err:  # jsonschema.ValidationError and ValueError from W&B's checks
        raise SweepFileError(f"{path}: not a valid W&B sweep: {getattr(err, 'message', err)}") from err
    command = config.get("command")
    if not command or not any(m in command for m in ARGS_MACROS):
        raise SweepFileError(f"{path}: `command` must be a list that passes the parameters with ${{args}}, e.g. "
                             "[${env}, lit-papers, fit, --config, configs/<paper>/<variant>.yaml, ${args}]")
    if not any(str(c) in SUBCOMMANDS for c in command):
        raise SweepFileError(f"{path}: `command` must run `lit-papers fit`")
    if config["method"] in ("bayes",) or config.get("early_terminate"):
        if not (config.get("metric") or {}).get("name"):
            raise SweepFileError(f"{path}: method {config['method']} / early_terminate needs metric.name")
    return config


def config_paths(config: dict) -> list[str]:
    """The ``--config`` files named in the sweep command (in order)."""
    command = [str(c) for c in config["command"]]
    found = []
    for i, token in enumerate(command):
        if token == "--config" and i + 1 < len(command):
            found.append(command[i + 1])
        elif token.startswith("--config="):
            found.append(token.split("=", 1)[1])
    return found


def trial_command(config: dict, params: dict, extra: list[str] | None = None) -> list[str]:
    """The trial's argv, expanded as ``wandb agent`` does; ``lit-papers`` becomes ``python -m lit_papers``."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    variables = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    variables.update(env=[], interpreter=[sys.executable], program=[str(config.get("program", ""))])
    argv: list[str] = []
    for chunk in create_sweep_command([str(c) for c in config["command"]]):
        if chunk.startswith("${") and chunk.endswith("}"):
            name = chunk[2:-1]
            if name not in variables:
                raise SweepFileError(f"sweep command macro {chunk} is not supported by the local runner")
            argv += [str(v) for v in variables[name]]
            if chunk in ARGS_MACROS:
                argv += list(extra or [])
        elif chunk == "lit-papers" and not argv:
            argv += [sys.executable, "-m", "lit_papers"]
        else:
            argv.append(chunk)
    return argv


def sweep_runs(state: dict, metric: str | None, *, running: str | None = None):
    """The trials as W&B ``SweepRun`` records (what a server hands the search and hyperband)."""
    sweeps = import_sweeps()

    mapping = {"finished": "finished", "stopped": "finished", "failed": "failed", "crashed": "crashed"}
    out = []
    for key in sorted(state["trials"], key=int):
        t = state["trials"][key]
        run_state = "running" if key == running else mapping.get(t.get("state"), "running")
        history = [{metric: v} for v in t.get("history", [])] if metric else []
        summary = {metric: t["summary"]} if metric and t.get("summary") is not None else {}
        out.append(sweeps.SweepRun(name=key, state=run_state, config={k: {"value": v} for k, v in t["params"].items()},
                                   history=history, summary_metrics=summary))
    return out


def propose(store: SweepStore, index: int | None, seed: int) -> tuple[int, dict | None]:
    """(index, parameters) of trial ``index`` (None: the next free number): its record if it has one, else
    W&B's next proposal, recorded; parameters None when a grid is exhausted. Call with no lock held."""
    sweeps = import_sweeps()
    config = store.config
    with store.locked() as state:
        if index is None:
            index = max((int(k) + 1 for k in state["trials"]), default=0)
        key = str(index)
        if key in state["trials"]:
            return index, state["trials"][key]["params"]
        if key in state["trials"]:
            return state["trials"][key]["params"]
        metric = (config.get("metric") or {}).get("name")
        random.seed(seed * 1_000_003 + index)  # W&B's search draws from both generators
        np.random.seed((seed * 1_000_003 + index) % 2**32)
        run = sweeps.next_run(config, sweep_runs(state, metric))
        if run is None:
            return index, None
        params = plain({k: v["value"] for k, v in run.config.items()})
        state["trials"][key] = {"params": params, "state": "pending", "history": [], "summary": None,
                                "run_dir": str(store.trial_dir(index)), "created": time.time()}
        return index, params


def new_sweep_dir(name: str) -> Path:
    base = runs.runs_root() / "sweeps" / name
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return base / f"slurm-{array_job}"
    n = 0
    while (base / f"v{n}").exists():
        n += 1
    return base / f"v{n}"


def init_sweep_dir(sweep_dir: Path, config: dict, source: Path, seed: int) -> SweepStore:
    store = SweepStore(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    target = sweep_dir / "sweep.yaml"
    if not target.exists():
        text = f"# from {source} (seed {seed})\n" + yaml.safe_dump(config, sort_keys=False)
        tmp = target.with_name(f".sweep.yaml.{os.getpid()}")
        tmp.write_text(text)
        try:
            os.link(tmp, target)  # first writer wins (array tasks start together)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return store


def trial_env(store: SweepStore, index: int) -> dict:
    env = dict(os.environ)
    env[runs.RUN_DIR_ENV] = str(store.trial_dir(index))
    env[TRIAL_ENV] = f"{store.dir}::{index}"
    env.setdefault("WANDB_RUN_GROUP", f"sweep-{store.dir.parent.name}-{store.dir.name}")
    return env


def run_local(store: SweepStore, config: dict, count: int, seed: int, extra: list[str]) -> int:
    """Run ``count`` new trials one after another; returns the number of failed trials."""
    failures = 0
    for _ in range(count):
        index, params = propose(store, None, seed)
        if params is None:
            print(f"[lit-papers sweep] grid exhausted after {index} trials", file=sys.stderr)
            break
        argv = trial_command(config, params, extra)
        print(f"[lit-papers sweep] trial {index}: {' '.join(argv)}", file=sys.stderr, flush=True)
        proc = subprocess.run(argv, env=trial_env(store, index))
        with store.locked() as state:
            trial = state["trials"][str(index)]
            if proc.returncode != 0 and trial.get("state") not in ("failed", "preempted"):
                trial["state"] = "crashed"
            if proc.returncode != 0:
                failures += 1
                trial["exit_code"] = proc.returncode
            write_results(store, state)
    return failures


def run_array_task(store: SweepStore, config: dict, index: int, seed: int, extra: list[str]) -> int:
    index, params = propose(store, index, seed)
    if params is None:
        print(f"[lit-papers sweep] task {index}: nothing left to try (grid exhausted)", file=sys.stderr)
        return 0
    trial = store.read()["trials"][str(index)]
    if trial.get("state") in TERMINAL:
        print(f"[lit-papers sweep] trial {index} already {trial['state']}", file=sys.stderr)
        return 0
    argv = trial_command(config, params, extra)
    print(f"[lit-papers sweep] trial {index}: {' '.join(argv)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, trial_env(store, index))  # this process becomes the trial (srun signals reach it)
    return 0  # not reached


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="lit-papers sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file", help="W&B sweep file, e.g. sweeps/resnet_cifar.yaml")
    parser.add_argument("--count", type=int, default=None,
                        help="trials to run now (default: the whole grid; required for random/bayes)")
    parser.add_argument("--dir", type=Path, default=None, help="sweep folder (default: new <runs>/sweeps/<name>/v<N>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search (trial n uses seed and n)")
    parser.add_argument("--trial", type=int, default=None,
                        help="run only trial number N (default inside a Slurm array: the task id)")
    parser.add_argument("--dry-run", action="store_true", help="print the first trial's command and stop")
    args = parser.parse_args(argv)
    try:
        config = load_sweep(args.sweep_file)
    except SweepFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = config.get("name") or Path(args.sweep_file).stem
    task = args.trial if args.trial is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    sweep_dir = args.dir or new_sweep_dir(name)
    if args.dry_run:
        sweeps = import_sweeps()
        random.seed(args.seed * 1_000_003)
        np.random.seed(args.seed * 1_000_003 % 2**32)
        run = sweeps.next_run(config, [])
        print(" ".join(trial_command(config, plain({k: v["value"] for k, v in run.config.items()}), extra)))
        return 0
    store = init_sweep_dir(sweep_dir, config, Path(args.sweep_file), args.seed)
    print(f"[lit-papers sweep] sweep folder {sweep_dir}", file=sys.stderr)
    if task is not None:
        return run_array_task(store, config, int(task), args.seed, extra)
    count = args.count
    if count is None:
        if config["method"] != "grid":
            print("error: --count N is required for random and bayes sweeps", file=sys.stderr)
            return 2
        count = 10**9
    failures = run_local(store, config, count, args.seed, extra)
    state = store.read()
    best = best_trial(state, config)
    print(f"[lit-papers sweep] results: {sweep_dir / 'results.md'}", file=sys.stderr)
    if best is not None:
        print(f"[lit-papers sweep] best: trial {best[0]} {best[1]['params']} -> {sweep_dir / 'best.yaml'}",
              file=sys.stderr)
    return 1 if failures else 0
