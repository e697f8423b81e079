"""Lightning's per-step overhead: the same ResNet-20, optimizer and batches trained by the Trainer and by a plain
PyTorch loop on CPU. Prints JSON with per-step medians and ``ratio`` = Lightning / plain (target <= 1.03).

    python tests/benchmarks/lightning_overhead.py [--steps 30] [--rounds 2] [--batch-size 128]

A step is measured from one batch start to the next, so everything the Trainer does between steps (hooks,
logging, progress bar) counts. Rounds alternate plain/Lightning so that background load affects both alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lit_papers.data.cifar import CIFARDataModule
from lit_papers.papers.resnet_cifar.model import ResNetCifar
from lit_papers.papers.resnet_cifar.module import ResNetCifarLitModule


def make_batches(n: int, batch_size: int) -> list:
    dm = CIFARDataModule(val_size=0, batch_size=batch_size, num_workers=0, download=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    if not batches:
        raise SystemExit("no CIFAR training batch under LIT_PAPERS_DATA")
    return [batches[i % len(batches)] for i in range(n)]  # a small sample is cycled


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def plain(model, batches) -> list[float]:
    opt = sgd(model.parameters())
    model.train()
    times, last = [], None
    for images, labels in batches:
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    times.append(time.perf_counter() - last)
    return times


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times, self.last = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now

    def on_train_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self.last)


def lightning(model, batches) -> list[float]:
    module = ResNetCifarLitModule(model=model, optimizer=sgd, num_classes=10)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, DataLoader(batches, batch_size=None, shuffle=False))
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = make_batches(args.steps, args.batch_size)
    template = ResNetCifar(depth=20)
    plain(copy.deepcopy(template), batches[:3])  # warm-up (allocator, kernels)
    results = {"plain": [], "lightning": []}
    for _ in range(args.rounds):
        results["plain"] += plain(copy.deepcopy(template), batches)[2:]
        results["lightning"] += lightning(copy.deepcopy(template), batches)[2:]
    med = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({
        "benchmark": "lightning_overhead",
        "model": "ResNet-20", "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "plain_step_median_s": round(med["plain"], 5),
        "lightning_step_median_s": round(med["lightning"], 5),
        "ratio": round(med["lightning"] / med["plain"], 4),
        "target_ratio_max": 1.03,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor(),
        "loadavg_1min": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
