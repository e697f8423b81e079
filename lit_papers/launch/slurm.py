"""``lit-papers slurm [sbatch options] -- <lit-papers subcommand and args>``: render an sbatch script, submit it.

One task per device (``--ntasks-per-node`` = devices per node = ``--gpus-per-node``, or ``--ntasks-per-node`` on
CPU), launched by ``srun`` so Lightning's SLURM environment sets ranks and the rendezvous from Slurm's variables;
``--trainer.num_nodes``/``--trainer.devices`` are appended to match (an explicit, different value is an error).
The script asks for ``SIGUSR1`` 90 s before the time limit (``--signal=SIGUSR1@90``, sent to the srun tasks,
handled by :mod:`lit_papers.launch.preemption`: checkpoint at a safe point + ``scontrol requeue``), allows
requeueing (``--requeue``), appends to the same log after a requeue, and exits with srun's exit code.

Sweeps on Slurm: ``--array 0-15%4 -- sweep sweeps/x.yaml`` runs one trial of the local runner per array task
(:mod:`lit_papers.launch.sweep`); with a W&B server, ``--array 0-15%4 -- wandb agent --count 1 <sweep id>``.

``--dry-run`` prints the script instead of submitting it. The script is also saved under
``<runs>/slurm/`` and the job logs go to ``<runs>/slurm/logs/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lit_papers.launch import run_dir as runs

TRAINING = ("fit", "validate", "test", "predict")


def _option_value(args: list[str], key: str) -> str | None:
    """The last value given for ``--key v`` / ``--key=v`` in ``args``, else None."""
    value = None
    for i, token in enumerate(args):
        if token == key and i + 1 < len(args):
            value = args[i + 1]
        elif token.startswith(key + "="):
            value = token.split("=", 1)[1]
    return value


def command_for(args: list[str], *, nodes: int, devices: int, python: str) -> list[str]:
    """The command srun runs in each task (trainer layout appended for lit-papers training and sweeps)."""
    if not args:
        raise SystemExit("error: give the command after `--`, e.g. -- fit --config configs/<paper>/<variant>.yaml")
    if args[0] == "wandb":
        return list(args)
    if args[0] not in (*TRAINING, "sweep"):
        raise SystemExit(f"error: unsupported command {args[0]!r}: use fit/validate/test/predict, sweep, or wandb agent")
    layout = {"--trainer.num_nodes": str(nodes), "--trainer.devices": str(devices)}
    trainer_args = args[args.index("--") + 1 :] if args[0] == "sweep" and "--" in args else args
    appended = []
    for key, value in layout.items():
        given = _option_value(trainer_args, key)
        if given is None:
            appended.append(f"{key}={value}")
        elif given != value:
            raise SystemExit(f"error: {key}={given} disagrees with the allocation ({value}); drop it or change "
                             "--nodes/--gpus-per-node/--ntasks-per-node")
    full = list(args)
    if args[0] == "sweep" and "--" not in full and appended:
        full.append("--")
    return [python, "-m", "lit_papers", *full, *appended]


def render(opts: argparse.Namespace, command: list[str], *, log_dir: Path, workdir: Path) -> str:
    """The sbatch script text."""
    devices = opts.gpus_per_node or opts.ntasks_per_node
    name = opts.job_name or _job_name(command)
    array = bool(opts.array)
    lines = ["#!/bin/bash", f"# Rendered by `lit-papers slurm` on {time.strftime('%Y-%m-%d %H:%M:%S')}.",
             f"#SBATCH --job-name={name}", f"#SBATCH --nodes={opts.nodes}", f"#SBATCH --ntasks-per-node={devices}"]
    if opts.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={opts.gpus_per_node}")
    for flag in ("cpus_per_task", "mem", "time", "partition", "account", "qos", "array"):
        value = getattr(opts, flag)
        if value not in (None, ""):
            lines.append(f"#SBATCH --{flag.replace('_', '-')}={value}")
    lines += [f"#SBATCH --signal=SIGUSR1@{opts.signal_seconds}",
              "#SBATCH --requeue",
              "#SBATCH --open-mode=append",
              f"#SBATCH --output={log_dir}/%x-{'%A_%a' if array else '%j'}.out",
              f"#SBATCH --chdir={workdir}"]
    lines += [f"#SBATCH {extra}" for extra in opts.sbatch_option]
    lines += ["", f"export LIT_PAPERS_RUNS={shlex.quote(str(runs.runs_root().resolve()))}"]
    lines += list(opts.setup)
    lines += [
        'echo "[lit-papers slurm] job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}" >&2',
        "srun --kill-on-bad-exit=1 " + shlex.join(command),
        "rc=$?",
        'echo "[lit-papers slurm] srun exited with ${rc}" >&2',
        "exit ${rc}",
        "",
    ]
    return "\n".join(lines)


def _job_name(command: list[str]) -> str:
    config = _option_value(command, "--config")
    if config:
        return "lp-" + runs.experiment_name([config], None).replace("/", "-")
    for token in command:
        if token.endswith(".yaml"):
            return "lp-sweep-" + Path(token).stem
    return "lit-papers"


def main(argv: list[str]) -> int:
    if "--" not in argv and not {"-h", "--help"} & set(argv):
        print("usage: lit-papers slurm [options] -- fit --config configs/<paper>/<variant>.yaml [...]", file=sys.stderr)
        return 2
    cut = argv.index("--") if "--" in argv else len(argv)
    argv, inner = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="lit-papers slurm", description=__doc__.split("\n\n")[0],
                                     usage="lit-papers slurm [options] -- <fit|validate|test|predict|sweep|wandb> ...")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs (= tasks = devices) per node")
    parser.add_argument("--ntasks-per-node", type=int, default=1, help="tasks (= devices) per node without GPUs")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--mem", default=None, help="e.g. 64G (per node)")
    parser.add_argument("--time", default=None, help="e.g. 24:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--qos", default=None)
    parser.add_argument("--array", default=None, help="array spec, e.g. 0-15%%4 (one sweep trial per task)")
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--signal-seconds", type=int, default=90, help="SIGUSR1 this many seconds before the limit")
    parser.add_argument("--setup", action="append", default=[], help="shell line run before srun (repeatable)")
    parser.add_argument("--sbatch-option", action="append", default=[], help="extra #SBATCH line, e.g. --exclusive")
    parser.add_argument("--python", default=sys.executable, help="interpreter the tasks run (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the script, do not submit")
    opts = parser.parse_args(argv)
    if opts.gpus_per_node and opts.ntasks_per_node not in (1, opts.gpus_per_node):
        parser.error("--ntasks-per-node must equal --gpus-per-node (one task per GPU)")
    devices = opts.gpus_per_node or opts.ntasks_per_node
    command = command_for(inner, nodes=opts.nodes, devices=devices, python=opts.python)
    out_dir = runs.runs_root().resolve() / "slurm"
    script = render(opts, command, log_dir=out_dir / "logs", workdir=Path.cwd())
    if opts.dry_run:
        print(script.rstrip("\n"))
        return 0
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{opts.job_name or _job_name(command)}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sbatch"
    path.write_text(script)
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        print(f"error: `sbatch` is not on PATH (not a Slurm login node?). The script is saved at {path}; "
              "submit it with `sbatch` where Slurm is installed, or use --dry-run to print it.", file=sys.stderr)
        return 127
    if proc.returncode != 0:
        print(f"error: sbatch {path} failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        return proc.returncode
    job = proc.stdout.strip().split(";")[0]
    print(job)
    print(f"[lit-papers slurm] submitted job {job}: {path}; log {out_dir / 'logs'}", file=sys.stderr)
    return 0
