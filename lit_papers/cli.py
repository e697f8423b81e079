"""The one command line: ``lit-papers {fit,validate,test,predict} --config configs/<paper>/<variant>.yaml``.

Every run gets: its own run folder (see :mod:`lit_papers.launch.run_dir`) with the resolved ``config.yaml``;
``ModelCheckpoint`` (``last.ckpt`` always, optionally every N steps) written atomically; a learning-rate
monitor; the progress bar; ``seed_everything``; a CSV log; a W&B run (project ``lit-papers``, offline when no
credentials are configured, off with ``--wandb false``) whose config is the full resolved CLI config; a
reproduction card after ``test``; a progress bar redrawn every 0.5 s. ``fit`` resumes automatically from the run
folder (the newest of its HPC, ``last`` and periodic checkpoints that loads; one that does not is moved aside as
``<name>.corrupt-<time>``) and stops at the first NaN/inf loss or gradient
(:mod:`lit_papers.callbacks.nonfinite`, exit status 1). One live process per run folder: a second run with the
same ``--run.version`` refuses to start (``run.lock``, see :mod:`lit_papers.launch.run_dir`); temporary files of
killed writes are removed at start. A ``--ckpt_path`` is checked first (``weights_only=True``: a file that would
run code when unpickled is refused; a truncated file is an error naming it).

Extra subcommands handled before LightningCLI (``lit-papers --help`` lists them all): ``check-data`` (decode
every image a config references, :mod:`lit_papers.data.check`), ``report`` (paper table from reproduction cards), ``sweep`` (local
W&B sweep runner, :mod:`lit_papers.launch.sweep`), ``slurm`` (sbatch rendering/submission,
:mod:`lit_papers.launch.slurm`), ``retarget`` (Aberman et al. 2019 motion retargeting with a trained run,
:mod:`lit_papers.papers.motion_retarget.retarget`). ``fit`` checkpoints and stops on SIGUSR1 (:mod:`lit_papers.launch.preemption`).
Nothing imports this module.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from lightning.fabric.utilities.rank_zero import _get_rank
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from lit_papers.callbacks.atomic_checkpoint import AtomicCheckpointIO, FinalLastCheckpoint
from lit_papers.callbacks.card import ReproductionCard
from lit_papers.callbacks.csv_resume import ResumableCSVLogger
from lit_papers.callbacks.nonfinite import NonFiniteError, NonFiniteGuard
from lit_papers.callbacks.progress import ThrottledProgressBar
from lit_papers.callbacks.wandb_setup import make_wandb_logger
from lit_papers.launch import run_dir as runs
from lit_papers.launch.preemption import PreemptionCheckpoint
from lit_papers.launch.sweep_trial import sweep_trial_callbacks
from lit_papers.ops.checkpoint import CheckpointError, read_checkpoint

START = time.time()

COMMANDS = {  # `lit-papers --help`: every subcommand, one line each
    "fit": "train a config (resumes its run folder after a crash or preemption; stops on a NaN/inf loss)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split and write the paper's reproduction card",
    "predict": "run a checkpoint on the predict split",
    "report": "paper table from the reproduction cards (lit_papers.launch.report)",
    "sweep": "run a W&B sweep file locally (lit_papers.launch.sweep)",
    "slurm": "render or submit an sbatch script for a config (lit_papers.launch.slurm)",
    "retarget": "retarget a 2D motion clip with a trained motion_retarget run",
    "check-data": "decode every image a config's splits reference and report the bad ones (lit_papers.data.check)",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_help(file=sys.stdout) -> None:
    width = max(map(len, COMMANDS))
    lines = ["usage: lit-papers <command> [options]      (lit-papers <command> --help: the command's options)",
             "", "commands:", *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()), "",
             "e.g. lit-papers fit --config configs/resnet_cifar/tiny.yaml"]
    print("\n".join(lines), file=file)


@dataclass
class RunOptions:
    """Run folder options. ``name``: experiment name (default: from the config path); ``version``: folder name
    (default: Slurm job id, else resume-or-next ``v<N>``); ``checkpoint_every_n_steps``: also save ``last.ckpt``
    every N optimizer steps (0 = at validation/epoch ends only); ``test_after_fit``: run ``test`` on the final
    weights right after ``fit``, in the same run folder (one command reproduces a table row and its card)."""

    name: str | None = None
    version: str | None = None
    checkpoint_every_n_steps: int = 0
    test_after_fit: bool = False


def default_precision(accelerator: str, *, cuda: bool | None = None, bf16: bool | None = None) -> str | None:
    """Precision when a config sets none: ``bf16-mixed`` on a GPU that supports it, else the Trainer's default."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda or accelerator not in ("auto", "gpu", "cuda"):
        return None
    bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
    return "bf16-mixed" if bf16 else "16-mixed"


def _plain(value):
    """Config/hparam value as plain JSON-like data (tuples -> lists, namespaces -> dicts) for comparison."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def hparam_differences(saved: dict, model) -> list[str]:
    """Lines naming each model argument whose value in the config differs from the checkpoint's ``saved``
    hyperparameters (the module's ``save_hyperparameters``; keys starting with ``_`` are Lightning's)."""
    config = _plain(model)
    init_args = (config.get("init_args") or {}) if isinstance(config, dict) else {}
    lines = []
    saved_class = saved.get("_class_path")
    if saved_class and isinstance(config, dict) and config.get("class_path") not in (None, saved_class):
        lines.append(f"model class: config {config.get('class_path')}, checkpoint {saved_class}")
    for key, value in saved.items():
        if key.startswith("_") or key not in init_args:
            continue
        ours, theirs = init_args[key], _plain(value)
        if ours != theirs:  # 10 == 10.0, [16, 10] == (16, 10.0) after _plain
            lines.append(f"model.init_args.{key}: using the config's {ours!r}; the checkpoint was trained with "
                         f"{theirs!r}")
    return lines


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config into the run folder (atomically, overwriting) and as the W&B run config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        target = Path(trainer.default_root_dir) / self.config_filename
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        resolved = yaml.safe_load(text)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "config") and hasattr(experiment.config, "update"):
                experiment.config.update(resolved, allow_val_change=True)


class LitPapersCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True, "save_to_log_dir": False})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        # Our datamodules shard themselves (exact DDP evaluation, resumable sampling).
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False})
        self.run_dir: Path | None = None
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run", type=RunOptions, default=RunOptions(), help="run folder options")
        parser.add_argument("--wandb", type=bool, default=True, help="log to W&B (offline without credentials)")

    # -- checkpoint hyperparameters vs the config ---------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Keep the config's model arguments when ``--ckpt_path`` is given, and say where the checkpoint differs.

        Lightning's own version overwrites the config's model arguments with the hyperparameters saved in the
        checkpoint, so ``test --config <variant>.yaml --ckpt_path <other run>`` would silently evaluate with the
        training run's settings (e.g. drop a test-time option the variant adds). Here the config and command line
        win; an architecture that does not match the weights still fails loudly when the state dict is loaded.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        model = self.config[subcommand].get("model")
        if not ckpt_path or not Path(ckpt_path).is_file() or model is None:
            return
        try:
            saved = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters") or {}
        except Exception:  # an unreadable checkpoint is reported by the Trainer when it loads it
            return
        for line in hparam_differences(saved, model):
            print(f"[lit-papers] {line}", file=sys.stderr)

    # -- run folder, resume, precision -------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        config_paths = [str(p) for p in (cfg.get("config") or [])]
        model_class = cfg.model.class_path if cfg.get("model") else None
        run = cfg.run
        self.experiment = run.name or runs.experiment_name(config_paths, model_class)
        derived = runs.experiment_name(config_paths, model_class)
        self.variant = derived.rsplit("/", 1)[-1] if config_paths else None  # the recipe's stem, e.g. resnet20
        self.config_paths = config_paths
        if cfg.get("data") is not None and (_get_rank() or 0) == 0:
            from lit_papers.data.check import switched_class_note

            note = switched_class_note(config_paths, _plain(cfg.data))
            if note:  # issue 17 case 13: a class switched on the command line silently kept the config's paths
                _say(f"[lit-papers] {note}")
        self.run_dir = runs.choose_run_dir(self.experiment, subcommand=self.subcommand or "none", version=run.version)
        os.environ[runs.RUN_DIR_ENV] = str(self.run_dir)  # processes launched by DDP land in the same folder
        cfg.trainer.default_root_dir = str(self.run_dir)
        first_rank = (_get_rank() or 0) == 0  # DDP ranks launched later by this process, or by srun, are not
        if first_rank:
            try:  # one process per run folder: a second run with the same --run.version must not clobber it
                runs.take_lock(self.run_dir, log=_say)
            except runs.RunLocked as exc:
                raise SystemExit(f"[lit-papers] {exc}") from None
            runs.remove_stale_temps(self.run_dir, log=_say)
        self.resume_step: int | None = None
        ckpt_path = cfg.get("ckpt_path")
        if self.subcommand == "fit" and ckpt_path is None and not (self.run_dir / runs.FINISHED).exists():
            # newest loadable of the HPC (preemption), last and periodic checkpoints; broken ones moved aside
            found = runs.loadable_resume_checkpoint(self.run_dir, log=_say, move_aside=first_rank)
            if found is not None:
                cfg.ckpt_path = str(found[0])
                self.resume_step = found[1].get("global_step")
                _say(f"[lit-papers] resuming from {cfg.ckpt_path}")
        elif ckpt_path and str(ckpt_path) not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt_path):
            try:  # a clear error naming the file instead of Lightning's raw reader error (or KeyError: 101)
                self.resume_step = read_checkpoint(ckpt_path).get("global_step")
            except CheckpointError as exc:
                raise SystemExit(f"[lit-papers] --ckpt_path {exc}") from None
        if cfg.trainer.get("precision") is None:
            cfg.trainer.precision = default_precision(str(cfg.trainer.get("accelerator") or "auto"))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = {**(cfg.get("trainer") or {}), **kwargs}  # what the user configured (instantiated)
        run_dir = self.run_dir
        # callbacks listed under `trainer.callbacks` in a config plus any passed by the caller
        callbacks = []
        for source in ((cfg.get("trainer") or {}).get("callbacks"), kwargs.get("callbacks")):
            if source:
                callbacks += list(source) if isinstance(source, list | tuple) else [source]
        every = cfg.run.checkpoint_every_n_steps
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True,
                                             every_n_train_steps=every or None, save_top_k=0 if every else 1))
        logger_cfg = trainer_cfg.get("logger")
        if logger_cfg is None or logger_cfg is True:
            resuming = self.subcommand == "fit" and cfg.get("ckpt_path") is not None
            # test/validate/predict into an existing run folder (--run.version) add their rows to its metrics.csv;
            # Lightning's CSVLogger would delete the training history first
            keep = resuming or self.subcommand != "fit"
            loggers: list[Logger] = [ResumableCSVLogger(save_dir=str(run_dir), name="", version="csv", append=keep,
                                                        resume_step=self.resume_step if resuming else None)]
            if cfg.wandb:
                loggers.append(make_wandb_logger(run_dir, name=f"{self.experiment}/{run_dir.name}"))
            kwargs["logger"] = loggers
        else:
            kwargs["logger"] = logger_cfg
        if trainer_cfg.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(ThrottledProgressBar())  # redrawn every 0.5 s, not every step (callbacks/progress.py)
        if kwargs["logger"] and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if self.subcommand == "fit":
            if not any(isinstance(c, NonFiniteGuard) for c in callbacks):
                callbacks.append(NonFiniteGuard())
            callbacks.append(FinalLastCheckpoint())
            callbacks.append(PreemptionCheckpoint(run_dir))
            callbacks.extend(sweep_trial_callbacks())
        callbacks.append(ReproductionCard(run_dir=str(run_dir), variant=self.variant, config_paths=self.config_paths,
                                          seed=cfg.get("seed_everything"), start_time=START))
        kwargs["callbacks"] = callbacks
        plugins = trainer_cfg.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(hasattr(p, "save_checkpoint") for p in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        run_dir = self.run_dir
        finished = False
        try:
            super()._run_subcommand(subcommand)
            trained = subcommand == "fit" and not self.trainer.interrupted
            if trained and self.config_init[subcommand].run.test_after_fit:
                # FINISHED only once the test has run too: a test that crashes leaves the run resumable, and the
                # same command again restores last.ckpt (already at max_steps, so no step is repeated) and tests
                self.trainer.test(self.model, datamodule=self.datamodule)
            finished = trained and not self.trainer.interrupted
        finally:
            if self.trainer.is_global_zero:
                runs.release_lock(run_dir, finished=finished)


def other_checkout(cwd: str | os.PathLike | None = None) -> Path | None:
    """The lit_papers checkout that contains ``cwd`` when it is not the one this process imported, else None.

    ``lit-papers`` (the console script) imports the installed package, an editable install points at one
    checkout; run from a second checkout (a git worktree, a copy), it silently runs the first one's code and the
    evidence then names that checkout's commit. ``python -m lit_papers`` from inside a checkout imports that one.
    """
    here = Path(__file__).resolve().parent.parent
    start = Path(cwd or os.getcwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lit_papers" / "__init__.py").is_file():
            return None if folder == here else folder
    return None


def _check_data(argv: list[str]) -> int:
    try:  # lazily: the data checker is optional for every other command
        from lit_papers.data.check import main as check_main
    except ImportError as exc:
        _say(f"[lit-papers] check-data is not available in this installation ({exc})")
        return 2
    return check_main(argv)


def main(argv: list[str] | None = None) -> None:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    elsewhere = other_checkout()
    if elsewhere is not None:
        _say(f"[lit-papers] warning: the current folder is inside the checkout {elsewhere}, but this process runs "
             f"the code of {Path(__file__).resolve().parent.parent} (the installed one); to run {elsewhere}'s code, "
             f"use `python -m lit_papers ...` from there or `pip install -e {elsewhere}`")
    if argv[0] == "check-data":
        raise SystemExit(_check_data(argv[1:]))
    if argv and argv[0] == "report":
        from lit_papers.launch.report import main as report_main

        raise SystemExit(report_main(argv[1:]))
    if argv and argv[0] in ("sweep", "slurm"):
        from lit_papers.launch import slurm, sweep

        raise SystemExit({"sweep": sweep.main, "slurm": slurm.main}[argv[0]](argv[1:]))
    if argv and argv[0] == "retarget":  # Aberman et al. 2019: retarget a 2D clip with a trained checkpoint
        from lit_papers.papers.motion_retarget.retarget import main as retarget_main

        raise SystemExit(retarget_main(argv[1:]))
    previous = os.environ.get(runs.RUN_DIR_ENV)
    try:
        LitPapersCLI(args=argv if explicit else None)
    except NonFiniteError as exc:  # the record is in the run folder; a traceback would add nothing
        _say(f"[lit-papers] {exc}")
        raise SystemExit(1) from None
    finally:  # in-process callers (tests, notebooks) must not inherit this run's folder
        runs.release_held_locks()
        if previous is None:
            os.environ.pop(runs.RUN_DIR_ENV, None)
        else:
            os.environ[runs.RUN_DIR_ENV] = previous
