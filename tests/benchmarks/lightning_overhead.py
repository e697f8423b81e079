"""Our framework's per-step overhead: ResNet-20 trained on CPU by our full ``lit-papers fit`` (the CLI's Trainer with
every default callback and logger: checkpointing, CSV + W&B offline, learning-rate monitor, progress bar,
preemption, non-finite guard, card) and by a plain PyTorch loop, on the same pre-collated batches, optimizer and
schedule. Prints JSON with per-step medians, ``ratio`` = ours / plain (target <= 1.03) and the spread.

    python tests/benchmarks/lightning_overhead.py [--steps 30] [--rounds 3] [--batch-size 128] [--profile] [--tiny]

A step is measured from one batch start to the next, so everything done between steps (hooks, logging, progress
bar) counts; the first two steps (warm-up) and the last one (epoch-end checkpoint) are left out. Rounds alternate
plain/ours in one process so that background load affects both alike; ``ratio_per_round`` shows the spread.
``--profile`` adds variants of ours with one part switched off (interleaved in the same rounds), so the cost of
each part is ``ours - variant``. ``--tiny`` trains a model whose step costs microseconds (TinyNet), so that
``ours - plain`` is the framework's own cost per step in milliseconds, measurable on a busy machine where the
ResNet-20 ratio drowns in noise (divide it by ResNet-20's plain step time for the ratio it implies). Besides wall time, the CPU time of the process per step is reported
(``ratio_cpu``; the loops are single-threaded with ``OMP_NUM_THREADS=1``): on a machine shared with other jobs it
is the steadier of the two.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_papers.data.cifar import CIFARDataModule  # noqa: E402
from lit_papers.papers.resnet_cifar.model import ResNetCifar  # noqa: E402
from lit_papers.schedules import WarmupMultiStepLR  # noqa: E402

RECIPE = REPO / "configs" / "resnet_cifar" / "resnet20.yaml"
BATCHES: list = []  # the pre-collated batches both loops train on (set by main)
TIMES: list[tuple[float, float]] = []  # (wall, CPU) seconds per step, filled by StepTimer


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class TinyNet(torch.nn.Module):
    """Global average pool + linear: a model whose step costs microseconds, so that a step's time is the
    framework's own per-step cost (``--tiny``)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.mean(dim=(2, 3)))  # (B, 3) -> (B, K)


def make_batches(n: int, batch_size: int) -> list:
    dm = CIFARDataModule(val_size=0, batch_size=batch_size, num_workers=0, download=False)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    if not batches:
        raise SystemExit("no CIFAR training batch under LIT_PAPERS_DATA")
    return [batches[i % len(batches)] for i in range(n)]  # a small sample is cycled


class FixedBatches(L.LightningDataModule):
    """The benchmark's batches as a DataModule (no validation split), so that our fit reads what the plain loop
    reads."""

    def train_dataloader(self):
        return DataLoader(BATCHES, batch_size=None, shuffle=False)


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = _clocks()
        if self.last is not None:
            TIMES.append((now[0] - self.last[0], now[1] - self.last[1]))
        self.last = now


class Without(L.Callback):
    """Removes the callbacks whose class name is in ``names`` when fit starts (a profiling probe)."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def setup(self, trainer, pl_module, stage) -> None:
        trainer.callbacks = [c for c in trainer.callbacks if type(c).__name__ not in self.names]


def plain(template: torch.nn.Module, batches) -> list[tuple[float, float]]:
    model = copy.deepcopy(template)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = WarmupMultiStepLR(opt, milestones=[32000, 48000], gamma=0.1)
    model.train()
    times, last = [], None
    for images, labels in batches:
        now = _clocks()
        if last is not None:
            times.append((now[0] - last[0], now[1] - last[1]))
        last = now
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return times  # intervals between batch starts: the last batch's own time is not in (as for ours)


def ours(config: Path, steps: int, extra: list[str]) -> list[tuple[float, float]]:
    from lit_papers.cli import main as cli_main

    TIMES.clear()
    args = ["fit", "--config", str(config), "--trainer.max_steps", str(steps),
            "--trainer.callbacks+=__main__.StepTimer", *extra]
    cli_main(args)
    import wandb

    if wandb.run is not None:  # one process runs many fits
        wandb.finish()
    return list(TIMES)


VARIANTS = {  # --profile: ours with one part switched off
    "no_progress_bar": ["--trainer.enable_progress_bar", "false"],
    # Lightning's own bar, redrawn after every batch (the CLI's default before ThrottledProgressBar): a negative
    # cost is what the throttled bar saves
    "every_step_progress_bar": ["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"],
    "no_wandb": ["--wandb", "false"],
    "no_loggers": ["--trainer.logger", "false"],  # CSV, W&B and the learning-rate monitor
    "no_nonfinite_guard": ["--trainer.callbacks+=__main__.Without", "--trainer.callbacks.names=[NonFiniteGuard]"],
    "no_preemption": ["--trainer.callbacks+=__main__.Without", "--trainer.callbacks.names=[PreemptionCheckpoint]"],
    "no_card": ["--trainer.callbacks+=__main__.Without", "--trainer.callbacks.names=[ReproductionCard]"],
    "no_checkpointing": ["--trainer.callbacks+=__main__.Without",
                         "--trainer.callbacks.names=[ModelCheckpoint,FinalLastCheckpoint]"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="also time variants with one part switched off")
    parser.add_argument("--only", nargs="*", default=None, help="profile only these variants")
    parser.add_argument("--tiny", action="store_true",
                        help="train TinyNet instead of ResNet-20: the step time is then the per-step overhead itself")
    args = parser.parse_args()
    torch.manual_seed(0)
    BATCHES[:] = make_batches(args.steps, args.batch_size)
    template = TinyNet() if args.tiny else ResNetCifar(depth=20)
    tmp = Path(tempfile.mkdtemp(prefix="lightning_overhead_"))
    os.environ["LIT_PAPERS_RUNS"] = str(tmp / "runs")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["data"] = {"class_path": "__main__.FixedBatches"}
    recipe.setdefault("run", {})["test_after_fit"] = False
    recipe["trainer"].update({"accelerator": "cpu", "devices": 1, "enable_model_summary": False})
    if args.tiny:
        recipe["model"]["init_args"]["model"] = {"class_path": "__main__.TinyNet", "init_args": {"num_classes": 10}}
    config = tmp / "resnet20_overhead.yaml"
    config.write_text(yaml.safe_dump(recipe))

    variants = {"ours": []}
    if args.profile:
        variants.update({k: v for k, v in VARIANTS.items() if args.only is None or k in args.only})
    plain(template, BATCHES[:3])  # warm-up (allocator, kernels)
    per_round: dict[str, list[float]] = {"plain": [], **{k: [] for k in variants}}
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in per_round}
    for _ in range(args.rounds):
        t = plain(template, BATCHES)[2:]
        samples["plain"] += t
        per_round["plain"].append(statistics.median(w for w, _ in t))
        for name, extra in variants.items():
            torch.manual_seed(0)
            t = ours(config, args.steps, extra)[2:]
            samples[name] += t
            per_round[name].append(statistics.median(w for w, _ in t))
    med = {k: statistics.median(w for w, _ in v) for k, v in samples.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items()}
    result = {
        "benchmark": "lightning_overhead",
        "model": "TinyNet" if args.tiny else "ResNet-20", "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "plain_step_median_s": round(med["plain"], 5),
        "ours_step_median_s": round(med["ours"], 5),
        "ratio": round(med["ours"] / med["plain"], 4),
        "ratio_per_round": [round(o / p, 4) for o, p in zip(per_round["ours"], per_round["plain"])],
        "plain_step_iqr_s": [round(q, 5) for q in statistics.quantiles([w for w, _ in samples["plain"]], n=4)[::2]],
        "ours_step_iqr_s": [round(q, 5) for q in statistics.quantiles([w for w, _ in samples["ours"]], n=4)[::2]],
        # CPU time of this (single-threaded) process per step: what the step costs, without the time other
        # processes on a busy machine take from it
        "plain_step_cpu_median_s": round(cpu["plain"], 5),
        "ours_step_cpu_median_s": round(cpu["ours"], 5),
        "ratio_cpu": round(cpu["ours"] / cpu["plain"], 4),
        "target_ratio_max": 1.03,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor(),
        "loadavg_1min": os.getloadavg()[0],
    }
    if args.tiny:
        result["overhead_ms_per_step"] = round(1000 * (med["ours"] - med["plain"]), 3)
        result["overhead_cpu_ms_per_step"] = round(1000 * (cpu["ours"] - cpu["plain"]), 3)
    if args.profile:
        result["variants_step_median_s"] = {k: round(med[k], 5) for k in variants if k != "ours"}
        result["variants_ratio"] = {k: round(med[k] / med["plain"], 4) for k in variants if k != "ours"}
        result["variants_ratio_cpu"] = {k: round(cpu[k] / cpu["plain"], 4) for k in variants if k != "ours"}
        result["cost_ms_per_step"] = {k: round(1000 * (med["ours"] - med[k]), 2) for k in variants if k != "ours"}
        result["cost_cpu_ms_per_step"] = {k: round(1000 * (cpu["ours"] - cpu[k]), 2) for k in variants if k != "ours"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
