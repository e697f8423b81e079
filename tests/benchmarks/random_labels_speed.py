"""Training images/s of the random-labels experiment (Zhang et al. 2017): our RandomLabelsLitModule under a Lightning
Trainer vs a plain PyTorch loop of the same model, optimizer and DataLoader (the CIFARDataModule's, random labels,
2,000 exact training records). Prints JSON: per model, images/s of both, ``ratio`` = ours / plain (1.0 = no
overhead) per round and its median.

    OMP_NUM_THREADS=1 python tests/benchmarks/random_labels_speed.py [--mlp-steps 60] [--inception-steps 6] [--rounds 3]

A step is timed from one batch start to the next (hooks and logging between steps count); the first two steps are
warm-up and left out; the median step time gives images/s = batch size / median. Rounds alternate plain and ours in
one process so that background load affects both alike. Validation is off in both (the fit check is a separate
evaluation pass whose cost is the same forward pass in either loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_papers.data.cifar import CIFARDataModule  # noqa: E402
from lit_papers.papers.random_labels.model import MLP, SmallInception  # noqa: E402
from lit_papers.papers.random_labels.module import RandomLabelsLitModule  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def median_step(starts: list[float]) -> float:
    gaps = [b - a for a, b in zip(starts, starts[1:])][2:]  # first two steps: warm-up
    return statistics.median(gaps)


def plain(make_model, lr: float, loader, steps: int) -> float:
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    starts = []
    it = iter(loader)
    for _ in range(steps + 1):
        starts.append(time.perf_counter())
        try:
            images, labels = next(it)
        except StopIteration:
            it = iter(loader)
            images, labels = next(it)
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return median_step(starts)


def ours(make_model, lr: float, dm, steps: int, root: str) -> float:
    torch.manual_seed(0)
    module = RandomLabelsLitModule(model=make_model(),
                                   optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9))
    timer = StepTimer()
    trainer = L.Trainer(max_steps=steps + 1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer], default_root_dir=root)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return median_step(timer.starts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mlp-steps", type=int, default=60)
    parser.add_argument("--inception-steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    dm = CIFARDataModule(val_size=500, num_workers=0, download=False, augment=False, normalization="none",
                         label_noise=1.0, batch_size=128, seed=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    models = {"mlp_1x512": (lambda: MLP(hidden=[512]), 0.01, args.mlp_steps),
              "small_inception": (lambda: SmallInception(), 0.1, args.inception_steps)}
    out: dict = {"batch_size": 128, "train_images": len(dm.train_set), "torch_threads": torch.get_num_threads(),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "models": {}}
    with tempfile.TemporaryDirectory() as root:
        for name, (make, lr, steps) in models.items():
            rounds = []
            for _ in range(args.rounds):
                p = plain(make, lr, loader, steps)
                o = ours(make, lr, dm, steps, root)
                rounds.append({"plain_images_per_s": round(128 / p, 1), "ours_images_per_s": round(128 / o, 1),
                               "ratio": round(p / o, 4)})
            out["models"][name] = {"steps_timed": steps - 2, "rounds": rounds,
                                   "ratio_median": statistics.median(r["ratio"] for r in rounds),
                                   "plain_images_per_s_median": statistics.median(r["plain_images_per_s"] for r in rounds),
                                   "ours_images_per_s_median": statistics.median(r["ours_images_per_s"] for r in rounds)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
