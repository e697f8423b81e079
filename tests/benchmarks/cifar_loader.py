"""Is the CIFAR loader fast enough? Images/s of the training DataLoader (albumentations pad-crop-flip included,
the config's worker count) vs images/s of a ResNet-20 training step on this CPU. Target: loader >= 3x model.

    python tests/benchmarks/cifar_loader.py [--workers 2] [--batch-size 128] [--batches 40]

The model step runs in the main process while nothing else loads, and the loader is timed alone; with the
loader >= 3x the model, data loading in background workers cannot be the bottleneck of training.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from lit_papers.data.cifar import CIFARDataModule
from lit_papers.papers.resnet_cifar.model import ResNetCifar


def loader_rate(workers: int, batch_size: int, batches: int) -> float:
    dm = CIFARDataModule(val_size=0, batch_size=batch_size, num_workers=workers, download=False)
    dm.setup("fit")
    seen, epoch = 0, 0
    loader = dm.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        try:
            images, _ = next(iterator)
        except StopIteration:
            epoch += 1
            loader.sampler.set_epoch(epoch)
            iterator = iter(loader)
            images, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def model_rate(batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = ResNetCifar(depth=20)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--model-steps", type=int, default=8)
    args = parser.parse_args()
    model = model_rate(args.batch_size, args.model_steps)
    loader = loader_rate(args.workers, args.batch_size, args.batches)
    loader_single = loader_rate(0, args.batch_size, args.batches // 2)
    print(json.dumps({
        "benchmark": "cifar_loader",
        "loader_images_per_s": round(loader, 1), "workers": args.workers,
        "loader_images_per_s_main_process": round(loader_single, 1),
        "model_images_per_s": round(model, 1), "model": "ResNet-20 train step", "batch_size": args.batch_size,
        "ratio": round(loader / model, 2), "target_ratio_min": 3.0,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg_1min": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
